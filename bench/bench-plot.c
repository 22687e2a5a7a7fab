/* SPDX-License-Identifier: MIT */
/*
 * --plot FILE.png: GB/s against object size, put (producer side) and get
 * (consumer side) in two panels, sealstore beside the baselines of the same
 * run. A data file and a gnuplot script go to a temp dir, gnuplot draws,
 * the dir is removed (kept, and named, if gnuplot fails). No gnuplot: say
 * so and carry on; the tables and JSON are the result, the plot a view.
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static bool in_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[4096];

    if (!path)
        path = "/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");

        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
        if (n && access(buf, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

static void cpu_model(char *out, size_t len)
{
    char line[256];
    FILE *f = fopen("/proc/cpuinfo", "re");

    snprintf(out, len, "unknown CPU");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');

            if (p) {
                snprintf(out, len, "%s", p + 2);
                out[strcspn(out, "\n")] = '\0';
            }
            break;
        }
    fclose(f);
}

/* gnuplot text: no quotes or backslashes from /proc in our strings */
static void sanitize(char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || *s == '@' || *s == '&' || *s == '_' || *s == '^' ||
            *s == '{' || *s == '}')
            *s = ' ';
}

static void put_val(FILE *f, double v)
{
    if (isfinite(v) && v > 0)
        fprintf(f, " %.6g", v);
    else
        fputs(" ?", f);
}

static const char *human(uint64_t v, char *buf, size_t len)
{
    if (v >= SS_GiB && v % SS_GiB == 0)
        snprintf(buf, len, "%" PRIu64 " GiB", (uint64_t)(v / SS_GiB));
    else if (v >= SS_MiB && v % SS_MiB == 0)
        snprintf(buf, len, "%" PRIu64 " MiB", (uint64_t)(v / SS_MiB));
    else if (v >= SS_KiB && v % SS_KiB == 0)
        snprintf(buf, len, "%" PRIu64 " KiB", (uint64_t)(v / SS_KiB));
    else
        snprintf(buf, len, "%" PRIu64 " B", v);
    return buf;
}

void plot_write(struct bench *b)
{
    char dir[] = "/tmp/sealstore-bench-plot.XXXXXX", dat[64], gp[64], model[160], sz[32],
         backing[96], when[64];
    double memcpy_gbps = fig_ok(&b->bl_memcpy) ? b->bl_memcpy.med : NAN;
    unsigned sup = ss_get_support();
    struct utsname u;
    time_t now = time(NULL);
    bool any = false;
    FILE *f;
    pid_t pid;
    int st;

    for (int i = 0; i < b->nsizes; i++)
        any |= isfinite(b->plot[i].put_warm) || isfinite(b->plot[i].get) ||
               isfinite(b->plot[i].shm_w) || isfinite(b->plot[i].sock);
    if (!any) {
        printf("\nplot      skipped: no put, get or ipc figure was measured in this run\n");
        return;
    }
    if (!in_path("gnuplot")) {
        printf("\nplot      skipped: gnuplot not found (Debian: apt-get install gnuplot-nox)\n");
        return;
    }
    if (!mkdtemp(dir))
        die_rc(-errno, "mkdtemp(%s)", dir);
    snprintf(dat, sizeof(dat), "%s/data", dir);
    snprintf(gp, sizeof(gp), "%s/plot.gp", dir);

    f = fopen(dat, "we");
    if (!f)
        die_rc(-errno, "creating %s", dat);
    fprintf(f, "# size put_warm put_exhausted get shm_write shm_open_map socket_copy memcpy "
               "ss_put ss_putv create_memset_seal (GB/s)\n");
    for (int i = 0; i < b->nsizes; i++) {
        fprintf(f, "%" PRIu64, b->sizes[i]);
        put_val(f, b->plot[i].put_warm);
        put_val(f, b->plot[i].put_cold);
        put_val(f, b->plot[i].get);
        put_val(f, b->plot[i].shm_w);
        put_val(f, b->plot[i].shm_r);
        put_val(f, b->plot[i].sock);
        put_val(f, memcpy_gbps);
        for (size_t j = 0; j < SS_ARRAY_SIZE(b->plot[i].shape); j++)
            put_val(f, b->plot[i].shape[j]);
        fputc('\n', f);
    }
    if (fclose(f) != 0)
        die_rc(-errno, "writing %s", dat);

    cpu_model(model, sizeof(model));
    sanitize(model);
    if (uname(&u) != 0)
        snprintf(u.release, sizeof(u.release), "?");
    sanitize(u.release);
    snprintf(backing, sizeof(backing), "%s%s%s",
             sup & SS_SUPPORT_HUGETLB_1G  ? "1G hugepages available"
             : sup & SS_SUPPORT_HUGETLB_2M ? "2M hugepages available"
                                           : "no hugetlb pages",
             sup & SS_SUPPORT_THP_SHMEM ? ", shmem THP on" : ", shmem THP off",
             (sup & (SS_SUPPORT_HUGETLB_1G | SS_SUPPORT_HUGETLB_2M | SS_SUPPORT_THP_SHMEM))
                 ? ""
                 : " (4K pages)");
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M", localtime(&now));

    f = fopen(gp, "we");
    if (!f)
        die_rc(-errno, "creating %s", gp);
    fprintf(f, "set terminal pngcairo size 1600,720 font 'DejaVu Sans,11' noenhanced\n");
    fprintf(f, "set output '%s'\n", b->plot_path);
    fprintf(f, "set datafile missing '?'\n");
    fprintf(f, "set logscale xy\nset grid xtics ytics mytics lc rgb '#dddddd'\n");
    fprintf(f, "set xlabel 'object size'\nset ylabel 'GB/s (1e9 bytes/s), log scale'\n");
    /* bottom right: every curve rises with size, that corner stays empty */
    fprintf(f, "set key bottom right box opaque\n");
    fprintf(f, "set format y '%%g'\n");
    fprintf(f, "set xtics (");
    for (int i = 0; i < b->nsizes; i++)
        fprintf(f, "%s'%s' %" PRIu64, i ? ", " : "", human(b->sizes[i], sz, sizeof(sz)),
                b->sizes[i]);
    fprintf(f, ")\n");
    fprintf(f, "set xrange [%g:%g]\n", (double)b->sizes[0] / 1.6,
            (double)b->sizes[b->nsizes - 1] * 1.6);
    fprintf(f, "set multiplot layout 1,2 title \"sealstore-bench %s: GB/s against object "
               "size (median of %d; higher is better)\\n%s, %ld vCPUs, Linux %s, %s, %s\" "
               "font ',13'\n",
            ss_version(), b->reps, model, sysconf(_SC_NPROCESSORS_ONLN), u.release, backing,
            when);
    fprintf(f, "set title 'put: producer side (create + fill + seal + release; ss_put; ss_putv)'\n");
    fprintf(f, "plot '%s' using 1:2 with linespoints lw 3 pt 7 ps 1.3 lc rgb '#1f77b4' "
               "title 'sealstore put, pool warm', \\\n"
               "     '' using 1:3 with linespoints lw 3 pt 5 ps 1.2 lc rgb '#6baed6' "
               "title 'sealstore put, pool exhausted', \\\n"
               "     '' using 1:9 with linespoints lw 2 pt 11 ps 1.2 lc rgb '#9467bd' "
               "title 'ss_put (one call), pool warm', \\\n"
               "     '' using 1:10 with linespoints lw 2 pt 12 ps 1.2 lc rgb '#c5b0d5' "
               "title 'ss_putv (4 pieces), pool warm', \\\n"
               "     '' using 1:11 with linespoints lw 2 pt 4 ps 1.2 lc rgb '#17becf' "
               "title 'create + memset + seal, pool warm', \\\n"
               "     '' using 1:5 with linespoints lw 2 pt 9 ps 1.2 lc rgb '#d62728' "
               "title '/dev/shm file per object (open, truncate, map, copy)', \\\n"
               "     '' using 1:7 with linespoints lw 2 pt 13 ps 1.2 lc rgb '#ff7f0e' "
               "title 'copy through a Unix socket', \\\n"
               "     '' using 1:8 with lines lw 2 dt 2 lc rgb '#555555' "
               "title 'memcpy into faulted memory'\n",
            dat);
    fprintf(f, "set title 'get: consumer side (get + release; bytes not read)'\n");
    fprintf(f, "plot '%s' using 1:4 with linespoints lw 3 pt 7 ps 1.3 lc rgb '#2ca02c' "
               "title 'sealstore get + release', \\\n"
               "     '' using 1:6 with linespoints lw 2 pt 9 ps 1.2 lc rgb '#d62728' "
               "title '/dev/shm file per object (open, map)', \\\n"
               "     '' using 1:7 with linespoints lw 2 pt 13 ps 1.2 lc rgb '#ff7f0e' "
               "title 'copy through a Unix socket', \\\n"
               "     '' using 1:8 with lines lw 2 dt 2 lc rgb '#555555' "
               "title 'memcpy into faulted memory'\n",
            dat);
    fprintf(f, "unset multiplot\n");
    if (fclose(f) != 0)
        die_rc(-errno, "writing %s", gp);

    fflush(stdout);
    pid = fork();
    if (pid < 0)
        die_rc(-errno, "fork");
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", gp, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die_rc(-errno, "waitpid(gnuplot)");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("\nplot      gnuplot failed (its message is above); data and script kept in "
               "%s\n",
               dir);
        return;
    }
    unlink(dat);
    unlink(gp);
    rmdir(dir);
    printf("\nplot      %s\n", b->plot_path);
}
