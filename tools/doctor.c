/* SPDX-License-Identifier: MIT */
/*
 * sealstore doctor: what this machine gives the store, and how to get more.
 *
 * Two steps. look() gathers every fact into struct facts (files under /sys
 * and /proc, real probes: the library's own where it has them, so the
 * doctor sees what the store would see); judge() turns the facts into
 * findings, each with the exact fix and, where this project measured it,
 * the gain. Then one printer writes the facts and findings as text or as
 * one JSON document (keys in man/sealstore.1). Nothing is changed on the
 * machine: the O_DIRECT probe writes and removes one 4 KiB file.
 *
 * Whose limits. Memory limits, open-file limits and the spill directory
 * matter for the store, not for this command; when a store answers on the
 * socket the doctor asks the kernel for its pid (SO_PEERCRED) and reads
 * them from /proc/PID (as root or as the store's user); otherwise it
 * reports its own, which are what a store started from this shell gets.
 *
 * The library is linked in statically (libsealstore-core) for its probes:
 * ss__spill_dio_probe (spill_file.c), ss__numa_* (numa.c),
 * ss__default_socket_path (store.c). ss_get_support() (error.c) probes the
 * kernel features.
 */
#include "config.h"

#include "doctor.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <liburing.h>

#include "sealstore.h"
#include "numa.h"
#include "spill_int.h"
#include "store.h"
#include "sys.h"

#define DOC_MiB (1024ull * 1024)
#define DOC_GiB (1024ull * DOC_MiB)
#define DOC_UNLIMITED UINT64_MAX
#define DOC_MAX_FINDINGS 24
#define DOC_MAX_NODES 64

/*
 * Gains, measured by this project with sealstore-bench on its development
 * machine (a 2-vCPU VM, Linux 6.18, 24 GiB, one NUMA node), median of 7:
 *   sealstore-bench -s put -z 16M,64M --hugepages 0      (4 KiB pages)
 *   sealstore-bench -s put -z 16M,64M --hugepages 1600   (2 MiB pool)
 *   the first again after `echo advise > .../shmem_enabled` (THP)
 * put [warm] GB/s, 4K / THP / 2M: 16 MiB 2.14 / 3.88 / 5.27,
 * 64 MiB 1.63 / 2.56 / 5.98. get does not depend on the page size (it maps,
 * it does not copy). Figures of that machine, not of this one: the
 * messages say so and give the command that measures this one.
 */
#define GAIN_2M                                                                             \
    "put of 64 MiB objects 3.7x faster (1.63 -> 5.98 GB/s), of 16 MiB 2.5x (2.14 -> 5.27 " \
    "GB/s) than on 4 KiB pages, as measured on the project's 2-vCPU test machine; measure "  \
    "this one: `sealstore-bench -s put -z 16M,64M --hugepages 0`, then with `--hugepages 1600` (root)"
#define GAIN_THP                                                                            \
    "put of 16 MiB objects 1.8x faster (2.14 -> 3.88 GB/s), of 64 MiB 1.6x (1.63 -> 2.56 "  \
    "GB/s) than on 4 KiB pages, as measured on the project's 2-vCPU test machine; measure "  \
    "this one: `sealstore-bench -s put -z 16M,64M --hugepages 0` before and after the change"
#define GAIN_SPILL                                                                          \
    "not measured by the project (its machines have it); `sealstore-bench -s spill` shows "   \
    "the spill and restore rate beside the disk's own O_DIRECT rate"

/* ----------------------------------------------------------------- facts */

struct hp_pool {
    bool present; /* the kernel has this page size */
    uint64_t page, nr, free, resv, surplus, overcommit;
    uint64_t avail; /* free - resv + overcommit headroom: what a store can take */
};

struct limit {
    bool known;
    uint64_t soft, hard; /* DOC_UNLIMITED: unlimited */
};

struct facts {
    struct utsname uts;
    uint64_t mem_total, mem_avail;
    unsigned support; /* ss_get_support() */
    struct hp_pool hp[2]; /* 2 MiB, 1 GiB */
    char thp_mode[32];    /* the selected shmem_enabled mode, "" if no THP */
    char thp_2m_mode[32]; /* hugepages-2048kB/shmem_enabled, "" if absent */
    int uring_err;        /* io_uring_queue_init: 0 or -errno */
    int uring_disabled;   /* kernel.io_uring_disabled, -1 if absent */
    int pidfd_err;        /* pidfd_open(getpid()): 0 or -errno */
    int numa_err;
    int nnodes, node_ids[DOC_MAX_NODES];
    bool numa_bind;
    bool shm_ok;
    uint64_t shm_size, shm_free;
    long store_pid; /* the listener's pid (SO_PEERCRED), 0 if unknown */
    /* whose limits, cgroup and spill directory: store_pid when /proc/PID
     * is readable, else 0 for this process */
    long of_pid;
    struct limit memlock, nofile;
    /* cgroup */
    int cg_version; /* 2, 1, or 0 when not found */
    char cg_path[PATH_MAX];
    uint64_t cg_max, cg_high, cg_current; /* DOC_UNLIMITED: none */
    /* spill */
    char spill_dir[PATH_MAX];
    const char *spill_source;
    bool spill_off;
    char spill_probed[PATH_MAX]; /* the directory probed (dir or its nearest parent) */
    int spill_err;               /* probing failed: -errno */
    uint32_t spill_align;        /* 0: buffered only */
    bool spill_tmpfs;
    const char *spill_fs;
    uint64_t spill_free;
    /* the running store */
    char socket[PATH_MAX];
    int store_err; /* 0: running and answered */
    ss_stats st;
};

static int read_text(const char *path, char *buf, size_t len)
{
    return ss__sys_read_file(path, buf, len);
}

static void look_meminfo(struct facts *f)
{
    char buf[4096];
    const char *p;

    if (read_text("/proc/meminfo", buf, sizeof(buf)) <= 0)
        return;
    if ((p = strstr(buf, "MemTotal:")))
        f->mem_total = strtoull(p + 9, NULL, 10) * 1024;
    if ((p = strstr(buf, "MemAvailable:")))
        f->mem_avail = strtoull(p + 13, NULL, 10) * 1024;
}

static void look_pool(struct hp_pool *h, uint64_t page)
{
    static const char *const files[] = { "nr_hugepages", "free_hugepages", "resv_hugepages",
                                         "surplus_hugepages", "nr_overcommit_hugepages" };
    uint64_t *out[] = { &h->nr, &h->free, &h->resv, &h->surplus, &h->overcommit };
    char path[128];

    memset(h, 0, sizeof(*h));
    h->page = page;
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%llukB/%s",
                 (unsigned long long)(page / 1024), files[i]);
        if (ss__sys_read_u64(path, out[i]) < 0)
            return;
    }
    h->present = true;
    /* the same arithmetic as ss__backing_available() */
    h->avail = h->free > h->resv ? h->free - h->resv : 0;
    if (h->overcommit > h->surplus)
        h->avail += h->overcommit - h->surplus;
}

/* The bracketed word of a sysfs mode file ("always [advise] never"). */
static void selected_mode(const char *path, char *out, size_t len)
{
    char buf[256];
    const char *a, *b;

    out[0] = '\0';
    if (read_text(path, buf, sizeof(buf)) <= 0 || !(a = strchr(buf, '[')) ||
        !(b = strchr(a, ']')))
        return;
    snprintf(out, len, "%.*s", (int)(b - a - 1), a + 1);
}

static void look_kernel(struct facts *f)
{
    struct io_uring ring;
    uint64_t v;
    int rc;

    f->support = ss_get_support();
    /* The spill engine's own setup call, for its error (ss_get_support
     * says only yes or no). */
    rc = io_uring_queue_init(2, &ring, 0);
    f->uring_err = rc < 0 ? rc : 0;
    if (rc == 0)
        io_uring_queue_exit(&ring);
    f->uring_disabled = ss__sys_read_u64("/proc/sys/kernel/io_uring_disabled", &v) == 0 ? (int)v : -1;
#ifdef SYS_pidfd_open
    rc = (int)syscall(SYS_pidfd_open, getpid(), 0);
#else
    rc = -1;
    errno = ENOSYS;
#endif
    if (rc >= 0) {
        close(rc);
        f->pidfd_err = 0;
    } else {
        f->pidfd_err = -errno;
    }
}

static void look_numa(struct facts *f)
{
    ss__numa *n = NULL;

    f->numa_err = ss__numa_open(&n);
    if (f->numa_err < 0)
        return;
    f->nnodes = ss__numa_nodes(n);
    for (int i = 0; i < f->nnodes && i < DOC_MAX_NODES; i++)
        f->node_ids[i] = ss__numa_node_id(n, i);
    f->numa_bind = ss__numa_can_bind(n);
    ss__numa_close(n);
}

static void look_shm(struct facts *f)
{
    struct statvfs sv;

    if (statvfs("/dev/shm", &sv) < 0)
        return;
    f->shm_ok = true;
    f->shm_size = (uint64_t)sv.f_blocks * sv.f_frsize;
    f->shm_free = (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* "unlimited" or a number, from /proc/PID/limits or getrlimit. */
static uint64_t limit_value(const char *s)
{
    return strncmp(s, "unlimited", 9) == 0 ? DOC_UNLIMITED : strtoull(s, NULL, 10);
}

static void look_limit(long pid, int res, const char *label, struct limit *l)
{
    char path[64], buf[4096], *p;
    struct rlimit rl;

    memset(l, 0, sizeof(*l));
    if (pid) {
        snprintf(path, sizeof(path), "/proc/%ld/limits", pid);
        if (read_text(path, buf, sizeof(buf)) > 0 && (p = strstr(buf, label))) {
            p += strlen(label);
            while (*p == ' ')
                p++;
            l->soft = limit_value(p);
            while (*p && *p != ' ')
                p++;
            while (*p == ' ')
                p++;
            l->hard = limit_value(p);
            l->known = true;
        }
        return;
    }
    if (getrlimit(res, &rl) == 0) {
        l->soft = rl.rlim_cur == RLIM_INFINITY ? DOC_UNLIMITED : (uint64_t)rl.rlim_cur;
        l->hard = rl.rlim_max == RLIM_INFINITY ? DOC_UNLIMITED : (uint64_t)rl.rlim_max;
        l->known = true;
    }
}

/* Mount point of the cgroup hierarchy (v2, or the v1 one with the memory
 * controller) and its root, from /proc/self/mountinfo. */
static bool cgroup_mount(bool v2, char *mnt, size_t mlen, char *root, size_t rlen)
{
    FILE *fp = fopen("/proc/self/mountinfo", "re");
    char line[4096];
    bool found = false;

    if (!fp)
        return false;
    while (!found && fgets(line, sizeof(line), fp)) {
        char r[PATH_MAX], m[PATH_MAX], fstype[64], opts[1024];
        const char *dash = strstr(line, " - ");

        if (!dash || sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) != 2 ||
            sscanf(dash + 3, "%63s %*s %1023s", fstype, opts) != 2)
            continue;
        if (v2 ? strcmp(fstype, "cgroup2") != 0
               : (strcmp(fstype, "cgroup") != 0 || !strstr(opts, "memory")))
            continue;
        snprintf(mnt, mlen, "%s", m);
        snprintf(root, rlen, "%s", r);
        found = true;
    }
    fclose(fp);
    return found;
}

static uint64_t cg_read(const char *dir, const char *file)
{
    char path[PATH_MAX + 64], buf[64];

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (read_text(path, buf, sizeof(buf)) <= 0 || strncmp(buf, "max", 3) == 0)
        return DOC_UNLIMITED;
    return strtoull(buf, NULL, 10);
}

/*
 * The memory limits that bind the process: the smallest memory.max and
 * memory.high of its cgroup and every ancestor up to the mount (v2), or
 * memory.limit_in_bytes (v1; "no limit" is a huge number there).
 */
static void look_cgroup(struct facts *f)
{
    char path[64], buf[8192], mnt[PATH_MAX], root[PATH_MAX], dir[2 * PATH_MAX];
    const char *rel = NULL;
    bool v2 = false;

    f->cg_max = f->cg_high = f->cg_current = DOC_UNLIMITED;
    snprintf(path, sizeof(path), "/proc/%ld/cgroup", f->of_pid ? f->of_pid : (long)getpid());
    if (read_text(path, buf, sizeof(buf)) <= 0)
        return;
    /* prefer the v1 memory controller when it is mounted (hybrid: the
     * limits are set there), else the unified hierarchy */
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        if (strcmp(c1 + 1, "memory") == 0 || strstr(c1 + 1, ",memory") ||
            strstr(c1 + 1, "memory,")) {
            rel = c2 + 1;
            v2 = false;
            break;
        }
        if (strcmp(line, "0") == 0 && c1[1] == '\0') {
            rel = c2 + 1;
            v2 = true;
        }
    }
    if (!rel || !cgroup_mount(v2, mnt, sizeof(mnt), root, sizeof(root)))
        return;
    /* a path under the mount's root (containers mount a subtree) */
    if (strcmp(root, "/") != 0 && strncmp(rel, root, strlen(root)) == 0)
        rel += strlen(root);
    snprintf(f->cg_path, sizeof(f->cg_path), "%s", *rel ? rel : "/");
    f->cg_version = v2 ? 2 : 1;
    snprintf(dir, sizeof(dir), "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel);
    if (!v2) {
        uint64_t v = cg_read(dir, "memory.limit_in_bytes");
        f->cg_max = v >= (1ull << 62) ? DOC_UNLIMITED : v;
        f->cg_current = cg_read(dir, "memory.usage_in_bytes");
        return;
    }
    f->cg_current = cg_read(dir, "memory.current");
    for (;;) {
        uint64_t mx = cg_read(dir, "memory.max"), hi = cg_read(dir, "memory.high");
        char *slash;

        if (mx < f->cg_max)
            f->cg_max = mx;
        if (hi < f->cg_high)
            f->cg_high = hi;
        if (strlen(dir) <= strlen(mnt) || !(slash = strrchr(dir, '/')))
            break;
        *slash = '\0';
    }
}

/* The pid of whatever listens on the socket (SO_PEERCRED of a fresh
 * connection, closed at once: the store drops it like any client that
 * never says hello). 0 if unknown. */
static long peer_pid(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct ucred cr;
    socklen_t l = sizeof(cr);
    long pid = 0;
    int fd;

    if (strlen(path) >= sizeof(a.sun_path))
        return 0;
    memcpy(a.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == 0 && cr.pid > 0 &&
        cr.pid != getpid())
        pid = cr.pid;
    close(fd);
    return pid;
}

/* A NUL-separated /proc file (cmdline, environ) into buf; length or 0. */
static size_t read_nul_file(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return 0;
    n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return (size_t)n;
}

/* VAR=value from a NUL-separated environment block, or NULL. */
static const char *env_in(const char *env, size_t n, const char *var)
{
    size_t vl = strlen(var);

    for (size_t i = 0; i < n; i += strlen(env + i) + 1)
        if (strncmp(env + i, var, vl) == 0 && env[i + vl] == '=')
            return env + i + vl + 1;
    return NULL;
}

/*
 * The spill directory a store picks (store_spill.c): SEALSTORE_SPILL_DIR
 * (sealstored --spill-dir sets it too), else $TMPDIR/sealstore-UID-spill
 * with an absolute TMPDIR, else /var/tmp/sealstore-UID. For a running
 * store, read from its command line and environment when /proc lets us.
 */
static void spill_dir_of(struct facts *f, const char *given)
{
    static char env[65536], cmd[16384];
    size_t en = 0, cn = 0;
    const char *dir = NULL, *tmp;
    char path[64], status[4096], *p;
    unsigned uid = (unsigned)geteuid();

    if (given) {
        snprintf(f->spill_dir, sizeof(f->spill_dir), "%s", given);
        f->spill_source = "--spill-dir";
        goto out;
    }
    if (f->of_pid) {
        snprintf(path, sizeof(path), "/proc/%ld/environ", f->of_pid);
        en = read_nul_file(path, env, sizeof(env));
        snprintf(path, sizeof(path), "/proc/%ld/cmdline", f->of_pid);
        cn = read_nul_file(path, cmd, sizeof(cmd));
        snprintf(path, sizeof(path), "/proc/%ld/status", f->of_pid);
        if (read_text(path, status, sizeof(status)) > 0 && (p = strstr(status, "\nUid:")))
            uid = (unsigned)strtoul(p + 5, NULL, 10); /* real uid; the store's euid is the same */
    }
    if (en || cn) {
        for (size_t i = 0; i < cn; i += strlen(cmd + i) + 1) {
            if (strcmp(cmd + i, "--spill-dir") == 0 && i + strlen(cmd + i) + 1 < cn)
                dir = cmd + i + strlen(cmd + i) + 1;
            else if (strncmp(cmd + i, "--spill-dir=", 12) == 0)
                dir = cmd + i + 12;
        }
        if (!dir)
            dir = env_in(env, en, "SEALSTORE_SPILL_DIR");
        tmp = env_in(env, en, "TMPDIR");
        f->spill_source = "the running store's";
    } else {
        dir = getenv("SEALSTORE_SPILL_DIR");
        tmp = getenv("TMPDIR");
        f->spill_source = f->of_pid ? "this process's environment: the store's is not readable"
                          : dir && *dir ? "SEALSTORE_SPILL_DIR" : NULL;
    }
    if (dir && *dir) {
        snprintf(f->spill_dir, sizeof(f->spill_dir), "%s", dir);
        if (!f->spill_source)
            f->spill_source = "SEALSTORE_SPILL_DIR";
    } else {
        if (tmp && tmp[0] == '/')
            snprintf(f->spill_dir, sizeof(f->spill_dir), "%s/sealstore-%u-spill", tmp, uid);
        else
            snprintf(f->spill_dir, sizeof(f->spill_dir), "/var/tmp/sealstore-%u", uid);
        if (!f->spill_source)
            f->spill_source = "default";
    }
out:
    f->spill_off = strcasecmp(f->spill_dir, "off") == 0;
}

static const char *fs_name(unsigned long type)
{
    switch (type) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x858458f6: return "ramfs";
    case 0x794c7630: return "overlayfs";
    case 0x2fc12fc1: return "zfs";
    case 0xF2F52010: return "f2fs";
    case 0x6969: return "nfs";
    default: return "other";
    }
}

/* O_DIRECT and free space where the store would spill: the directory, or
 * its nearest existing parent (the store creates it there). */
static void look_spill(struct facts *f)
{
    struct statfs fs;
    struct statvfs sv;
    int dfd;

    if (f->spill_off)
        return;
    snprintf(f->spill_probed, sizeof(f->spill_probed), "%s", f->spill_dir);
    while ((dfd = open(f->spill_probed, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 &&
           errno == ENOENT) {
        char *slash = strrchr(f->spill_probed, '/');
        if (!slash)
            break;
        if (slash == f->spill_probed)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
    if (dfd < 0) {
        f->spill_err = -errno;
        return;
    }
    if (fstatfs(dfd, &fs) == 0) {
        f->spill_fs = fs_name((unsigned long)fs.f_type);
        f->spill_tmpfs = fs.f_type == 0x01021994 || fs.f_type == 0x858458f6;
    }
    if (fstatvfs(dfd, &sv) == 0)
        f->spill_free = (uint64_t)sv.f_bavail * sv.f_frsize;
    f->spill_err = ss__spill_dio_probe(dfd, &f->spill_align);
    close(dfd);
}

static void look_store(struct facts *f, const char *given)
{
    const char *env = getenv("SEALSTORE_SOCKET");
    ss_client *c = NULL;

    if (given)
        snprintf(f->socket, sizeof(f->socket), "%s", given);
    else if (env && *env)
        snprintf(f->socket, sizeof(f->socket), "%s", env);
    else if (ss__default_socket_path(f->socket, sizeof(f->socket)) < 0)
        f->socket[0] = '\0';
    f->store_err = ss_connect(f->socket[0] ? f->socket : NULL, 0, &c);
    if (f->store_err < 0)
        return;
    memset(&f->st, 0, sizeof(f->st));
    f->st.size = sizeof(f->st);
    f->st.version = SS_STATS_VERSION;
    f->store_err = ss_stats_get(c, &f->st);
    ss_disconnect(c);
    if (f->store_err == 0 && f->socket[0])
        f->of_pid = f->store_pid = peer_pid(f->socket);
}

static void look(struct facts *f, const struct doctor_args *a)
{
    memset(f, 0, sizeof(*f));
    uname(&f->uts);
    look_meminfo(f);
    look_pool(&f->hp[0], 2 * DOC_MiB);
    look_pool(&f->hp[1], DOC_GiB);
    selected_mode("/sys/kernel/mm/transparent_hugepage/shmem_enabled", f->thp_mode,
                  sizeof(f->thp_mode));
    selected_mode("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled",
                  f->thp_2m_mode, sizeof(f->thp_2m_mode));
    look_kernel(f);
    look_numa(f);
    look_shm(f);
    look_store(f, a->socket);
    look_limit(f->of_pid, RLIMIT_MEMLOCK, "Max locked memory", &f->memlock);
    look_limit(f->of_pid, RLIMIT_NOFILE, "Max open files", &f->nofile);
    if (f->of_pid && !f->nofile.known)
        f->of_pid = 0; /* /proc/PID not ours to read: report this process */
    if (!f->of_pid) {
        look_limit(0, RLIMIT_MEMLOCK, NULL, &f->memlock);
        look_limit(0, RLIMIT_NOFILE, NULL, &f->nofile);
    }
    look_cgroup(f);
    spill_dir_of(f, a->spill_dir);
    look_spill(f);
}

/* -------------------------------------------------------------- findings */

enum sev { SEV_NOTE, SEV_PERF, SEV_MISSING };
static const char *const sev_names[] = { "note", "performance", "missing" };

struct finding {
    const char *key;
    enum sev sev;
    char what[PATH_MAX + 512]; /* may name a path */
    char fix[640];
    const char *gain; /* NULL: none to state */
};

struct verdict {
    struct finding fd[DOC_MAX_FINDINGS];
    int n;
    enum sev worst;
};

static struct finding *add(struct verdict *v, const char *key, enum sev sev, const char *gain)
{
    struct finding *x;

    if (v->n >= DOC_MAX_FINDINGS)
        return &v->fd[DOC_MAX_FINDINGS - 1]; /* cannot happen: fewer checks than slots */
    x = &v->fd[v->n++];
    memset(x, 0, sizeof(*x));
    x->key = key;
    x->sev = sev;
    x->gain = gain;
    if (sev > v->worst)
        v->worst = sev;
    return x;
}

static bool thp_allows(const char *mode)
{
    return !strcmp(mode, "always") || !strcmp(mode, "within_size") || !strcmp(mode, "advise") ||
           !strcmp(mode, "force");
}

/* The shmem THP mode that decides for 2 MiB folios. */
static const char *thp_effective(const struct facts *f)
{
    if (f->thp_2m_mode[0] && strcmp(f->thp_2m_mode, "inherit") != 0)
        return f->thp_2m_mode;
    return f->thp_mode;
}

static bool store_up(const struct facts *f)
{
    return f->store_err == 0;
}

static void judge(const struct facts *f, struct verdict *v)
{
    char a[16], b[16];
    struct finding *x;
    /* memory a store would use: its capacity, or the default (half of RAM) */
    uint64_t want = store_up(f) && f->st.capacity ? f->st.capacity : f->mem_total / 2;
    uint64_t pages2m = want / (2 * DOC_MiB);
    /* vm.nr_hugepages is the pool's total: what it holds plus what is missing */
    uint64_t total2m = f->hp[0].nr + (pages2m > f->hp[0].avail ? pages2m - f->hp[0].avail : 0);

    memset(v, 0, sizeof(*v));
    /* What the store cannot run without. */
    if (!(f->support & SS_SUPPORT_MEMFD_SEAL)) {
        x = add(v, "memfd_seal", SEV_MISSING, NULL);
        snprintf(x->what, sizeof(x->what),
                 "memfd_create with sealing is missing: every object is a sealed memfd");
        snprintf(x->fix, sizeof(x->fix), "run a Linux kernel >= 5.1 built with CONFIG_MEMFD_CREATE "
                                         "(a container's seccomp profile must allow memfd_create)");
    }
    if ((f->support & SS_SUPPORT_MEMFD_SEAL) && !(f->support & SS_SUPPORT_FUTURE_WRITE)) {
        x = add(v, "future_write", SEV_MISSING, NULL);
        snprintf(x->what, sizeof(x->what),
                 "F_SEAL_FUTURE_WRITE is missing: small objects live in segments sealed with it");
        snprintf(x->fix, sizeof(x->fix), "run a Linux kernel >= 5.1");
    }

    /* Pages. */
    if (!f->hp[0].present) {
        x = add(v, "hugepages_2M", SEV_PERF, GAIN_2M);
        snprintf(x->what, sizeof(x->what),
                 "this kernel has no 2 MiB hugetlb pages: objects of 2 MiB and more sit on 4 KiB "
                 "pages");
        snprintf(x->fix, sizeof(x->fix), "run a kernel built with CONFIG_HUGETLBFS");
    } else if (f->hp[0].avail == 0) {
        x = add(v, "hugepages_2M", SEV_PERF, GAIN_2M);
        snprintf(x->what, sizeof(x->what),
                 "no 2 MiB hugepages are free (pool %" PRIu64 ", free %" PRIu64 ", reserved %" PRIu64
                 "): objects of 2 MiB and more sit on %s pages",
                 f->hp[0].nr, f->hp[0].free, f->hp[0].resv,
                 thp_allows(thp_effective(f)) ? "transparent huge (THP) or 4 KiB" : "4 KiB");
        snprintf(x->fix, sizeof(x->fix),
                 "`sysctl -w vm.nr_hugepages=%" PRIu64 "` (%s, the store's %s; the pages are taken "
                 "from RAM for good); at boot: `echo 'vm.nr_hugepages = %" PRIu64
                 "' > /etc/sysctl.d/60-sealstore.conf`; or only while the daemon runs: "
                 "`sealstored --reserve-hugepages %" PRIu64 "M`",
                 total2m, cli_fmt_size(pages2m * 2 * DOC_MiB, a, sizeof(a)),
                 store_up(f) && f->st.capacity ? "capacity" : "default capacity, half of RAM",
                 total2m, pages2m * 2);
    } else if (f->hp[0].avail < pages2m) {
        x = add(v, "hugepages_2M", SEV_NOTE, NULL);
        snprintf(x->what, sizeof(x->what),
                 "%" PRIu64 " free 2 MiB hugepages (%s), less than the store's %s: once they "
                 "are used, objects of 2 MiB and more get smaller pages",
                 f->hp[0].avail, cli_fmt_size(f->hp[0].avail * 2 * DOC_MiB, a, sizeof(a)),
                 cli_fmt_size(want, b, sizeof(b)));
        snprintf(x->fix, sizeof(x->fix),
                 "if the store should hold that much on hugepages: "
                 "`sysctl -w vm.nr_hugepages=%" PRIu64 "`",
                 total2m);
    }
    if (f->hp[1].present && f->hp[1].avail == 0) {
        x = add(v, "hugepages_1G", SEV_NOTE, NULL);
        snprintf(x->what, sizeof(x->what),
                 "no 1 GiB hugepages are free: used only for objects of 896 MiB and more "
                 "(less rounding waste than 1/8); nothing to do unless you store such objects");
        snprintf(x->fix, sizeof(x->fix),
                 "`echo N > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`, or reliably "
                 "at boot: `hugepagesz=1G hugepages=N` on the kernel command line");
    }
    if (!thp_allows(thp_effective(f))) {
        bool matters = !f->hp[0].present || f->hp[0].avail == 0;
        x = add(v, "thp_shmem", matters ? SEV_PERF : SEV_NOTE, matters ? GAIN_THP : NULL);
        snprintf(x->what, sizeof(x->what),
                 "shmem transparent hugepages are %s%s", f->thp_mode[0] ? thp_effective(f) : "absent",
                 matters ? ": without 2 MiB hugepages, objects of 2 MiB and more get 4 KiB pages"
                         : " (the store uses them only when the 2 MiB pool runs out)");
        snprintf(x->fix, sizeof(x->fix),
                 "`echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled` (only memory "
                 "that asks, like the store's, gets them); at boot: the tmpfiles.d line "
                 "`w /sys/kernel/mm/transparent_hugepage/shmem_enabled - - - - advise`");
    }
    if (!(f->support & SS_SUPPORT_POPULATE_WRITE)) {
        x = add(v, "populate_write", SEV_PERF, NULL);
        snprintf(x->what, sizeof(x->what),
                 "MADV_POPULATE_WRITE is missing (Linux < 5.14): segments are pre-faulted by "
                 "touching each page, slower, and a hugetlb shortfall cannot be told apart");
        snprintf(x->fix, sizeof(x->fix), "run a Linux kernel >= 5.14");
    }
    if (!(f->support & SS_SUPPORT_NOEXEC_SEAL)) {
        x = add(v, "noexec_seal", SEV_NOTE, NULL);
        snprintf(x->what, sizeof(x->what),
                 "MFD_NOEXEC_SEAL is missing (Linux < 6.3): segments are created without it "
                 "(0400 mode and the seals still keep them read-only); no cost");
        snprintf(x->fix, sizeof(x->fix), "none needed; a kernel >= 6.3 adds it");
    }

    /* io_uring, NUMA. */
    if (f->uring_err < 0) {
        x = add(v, "io_uring", SEV_PERF, GAIN_SPILL);
        snprintf(x->what, sizeof(x->what),
                 "io_uring cannot be set up (%s): spilling and restoring run on worker threads",
                 ss_strerror(f->uring_err));
        if (f->uring_disabled == 2)
            snprintf(x->fix, sizeof(x->fix), "`sysctl -w kernel.io_uring_disabled=0`");
        else if (f->uring_disabled == 1)
            snprintf(x->fix, sizeof(x->fix),
                     "add the store's user to the group in /proc/sys/kernel/io_uring_group, or "
                     "`sysctl -w kernel.io_uring_disabled=0`");
        else if (f->uring_err == -EPERM || f->uring_err == -ENOSYS)
            snprintf(x->fix, sizeof(x->fix),
                     "allow io_uring_setup, io_uring_enter and io_uring_register in the "
                     "container's seccomp profile (or run a kernel with CONFIG_IO_URING)");
        else if (f->uring_err == -ENOMEM)
            snprintf(x->fix, sizeof(x->fix), "raise the memlock limit (ulimit -l, LimitMEMLOCK=)");
        else
            snprintf(x->fix, sizeof(x->fix), "run a Linux kernel >= 5.10 with io_uring enabled");
    }
    if (f->numa_err == 0 && f->nnodes > 1 && !f->numa_bind) {
        x = add(v, "numa", SEV_PERF, NULL);
        snprintf(x->what, sizeof(x->what),
                 "%d NUMA nodes but memory cannot be bound to one: objects land wherever the "
                 "kernel puts them, often on a remote node",
                 f->nnodes);
        snprintf(x->fix, sizeof(x->fix),
                 "run a kernel with CONFIG_NUMA and allow mbind/set_mempolicy in the seccomp "
                 "profile");
    }

    /* Limits of the store (or of this process). */
    if (f->nofile.known && f->nofile.hard != DOC_UNLIMITED && f->nofile.hard < 65536) {
        x = add(v, "nofile", SEV_PERF, NULL);
        snprintf(x->what, sizeof(x->what),
                 "the open-file limit is %" PRIu64 " (hard): each large object and each client "
                 "holds a descriptor in the store, and replies carrying descriptors share this "
                 "budget, so gets wait for it under load",
                 f->nofile.hard);
        snprintf(x->fix, sizeof(x->fix),
                 "`LimitNOFILE=1048576` in the unit (`systemctl edit sealstored`), or raise the hard "
                 "limit in /etc/security/limits.d for a store started by hand");
    }
    if (f->cg_max != DOC_UNLIMITED || f->cg_high != DOC_UNLIMITED) {
        uint64_t lim = f->cg_high < f->cg_max ? f->cg_high : f->cg_max;
        bool tight = want > lim - lim / 8;
        x = add(v, "cgroup_memory", tight ? SEV_PERF : SEV_NOTE, NULL);
        snprintf(x->what, sizeof(x->what),
                 "the cgroup %s allows %s of memory (%s); the store %s %s of objects%s",
                 f->cg_path, cli_fmt_size(lim, a, sizeof(a)),
                 f->cg_high < f->cg_max ? "memory.high" : f->cg_version == 1 ? "memory.limit_in_bytes" : "memory.max",
                 store_up(f) && f->st.capacity ? "is set to hold" : "by default holds",
                 cli_fmt_size(want, b, sizeof(b)),
                 tight ? ": the kernel will reclaim or kill before the store spills" : "");
        snprintf(x->fix, sizeof(x->fix),
                 "set SEALSTORE_CAPACITY below the limit with room for the rest of the "
                 "process (e.g. 7/8 of it), or raise MemoryMax=/MemoryHigh= of the unit; "
                 "hugetlb pages are not charged to it");
    }

    /* Spilling. */
    if (f->spill_off) {
        x = add(v, "spill", SEV_NOTE, NULL);
        snprintf(x->what, sizeof(x->what),
                 "spilling is off: creates that do not fit wait, then fail with ENOSPC");
        snprintf(x->fix, sizeof(x->fix), "set SEALSTORE_SPILL_DIR to a directory on a disk");
    } else if (f->spill_err < 0) {
        x = add(v, "spill", f->spill_err == -EACCES || f->spill_err == -EPERM ? SEV_NOTE : SEV_PERF,
                NULL);
        snprintf(x->what, sizeof(x->what), "cannot probe the spill directory %s: %s",
                 f->spill_probed, ss_strerror(f->spill_err));
        snprintf(x->fix, sizeof(x->fix),
                 f->spill_err == -EACCES || f->spill_err == -EPERM
                     ? "run the doctor as the store's user (or root) to probe it"
                     : "make the directory (or its parent) writable by the store's user, or set "
                       "SEALSTORE_SPILL_DIR");
    } else if (f->spill_tmpfs) {
        x = add(v, "spill", SEV_PERF, NULL);
        snprintf(x->what, sizeof(x->what),
                 "the spill directory %s is on %s: spilled objects stay in RAM (or swap), so "
                 "spilling frees no memory",
                 f->spill_dir, f->spill_fs);
        snprintf(x->fix, sizeof(x->fix),
                 "`SEALSTORE_SPILL_DIR=/var/lib/sealstore` (or any directory on a disk)");
    } else if (!f->spill_align) {
        x = add(v, "spill", SEV_PERF, GAIN_SPILL);
        snprintf(x->what, sizeof(x->what),
                 "the spill directory %s (%s) refuses O_DIRECT: spills go through the page "
                 "cache, which costs a copy and memory while memory is what is short",
                 f->spill_dir, f->spill_fs ? f->spill_fs : "?");
        snprintf(x->fix, sizeof(x->fix),
                 "SEALSTORE_SPILL_DIR on ext4, xfs or btrfs (e.g. /var/lib/sealstore)");
    }
    if (!f->spill_off && f->spill_err == 0 && !f->spill_tmpfs && f->spill_free < want) {
        x = add(v, "spill_space", SEV_NOTE, NULL);
        snprintf(x->what, sizeof(x->what),
                 "the spill directory's file system has %s free, less than the store's %s: "
                 "spilling stops when it is full",
                 cli_fmt_size(f->spill_free, a, sizeof(a)), cli_fmt_size(want, b, sizeof(b)));
        snprintf(x->fix, sizeof(x->fix), "free space there, or set SEALSTORE_SPILL_DIR elsewhere");
    }

    /* The running store. */
    if (store_up(f)) {
        if (f->st.backing_fallbacks) {
            x = add(v, "store_fallbacks", SEV_PERF, GAIN_2M);
            snprintf(x->what, sizeof(x->what),
                     "the running store gave %" PRIu64 " segments a smaller page size than it "
                     "wanted (its hugepage pool ran out)",
                     f->st.backing_fallbacks);
            snprintf(x->fix, sizeof(x->fix),
                     "reserve more 2 MiB hugepages (`sysctl -w vm.nr_hugepages=N`)");
        }
        if (f->st.spill_errors || f->st.restore_errors || f->st.spill_lost) {
            x = add(v, "store_spill_errors", SEV_PERF, NULL);
            snprintf(x->what, sizeof(x->what),
                     "the running store saw %" PRIu64 " spill errors, %" PRIu64
                     " restore errors, %" PRIu64 " lost spill records",
                     f->st.spill_errors, f->st.restore_errors, f->st.spill_lost);
            snprintf(x->fix, sizeof(x->fix),
                     "look at its log (`journalctl -u sealstored`) and at the spill directory's "
                     "disk");
        }
        if (f->st.capacity && f->st.resident_bytes > f->st.capacity / 10 * 9) {
            x = add(v, "store_pressure", SEV_NOTE, NULL);
            snprintf(x->what, sizeof(x->what),
                     "the running store is at %s of its %s capacity%s",
                     cli_fmt_size(f->st.resident_bytes, a, sizeof(a)),
                     cli_fmt_size(f->st.capacity, b, sizeof(b)),
                     f->st.spilled_objects ? " and has spilled objects" : "");
            snprintf(x->fix, sizeof(x->fix), "raise SEALSTORE_CAPACITY if the machine has the RAM");
        }
    }
}

/* ---------------------------------------------------------------- output */

static const char *yes(bool b)
{
    return b ? "yes" : "no";
}

static const char *jb(bool b)
{
    return b ? "true" : "false";
}

/* A size or "unlimited" (JSON: a number or null). */
static void plain_lim(uint64_t v, char *buf, size_t len)
{
    if (v == DOC_UNLIMITED)
        snprintf(buf, len, "unlimited");
    else
        cli_fmt_size(v, buf, len);
}

static void json_u64(FILE *o, const char *key, uint64_t v, bool comma)
{
    if (v == DOC_UNLIMITED)
        fprintf(o, "\"%s\": null%s", key, comma ? ", " : "");
    else
        fprintf(o, "\"%s\": %" PRIu64 "%s", key, v, comma ? ", " : "");
}

static void json_kstr(FILE *o, const char *key, const char *s, bool comma)
{
    fprintf(o, "\"%s\": ", key);
    if (s)
        cli_json_cstr(o, s);
    else
        fputs("null", o);
    if (comma)
        fputs(", ", o);
}

static void json_err(FILE *o, const char *key, int err, bool comma)
{
    json_kstr(o, key, err < 0 ? ss_strerror(err) : NULL, comma);
}

static void print_json(FILE *o, const struct facts *f, const struct verdict *v)
{
    static const char *const hpk[2] = { "2M", "1G" };
    const char *whose = f->of_pid ? "store" : "doctor";

    fprintf(o, "{\"version\": ");
    cli_json_cstr(o, ss_version());
    fprintf(o, ", \"kernel\": ");
    cli_json_cstr(o, f->uts.release);
    fprintf(o, ", \"status\": \"%s\", \"exit\": %d,\n", v->worst == SEV_NOTE ? "ok" : sev_names[v->worst],
            (int)v->worst);
    fprintf(o, " \"memory\": {\"total\": %" PRIu64 ", \"available\": %" PRIu64 "},\n",
            f->mem_total, f->mem_avail);
    fprintf(o, " \"hugepages\": {");
    for (int i = 0; i < 2; i++) {
        const struct hp_pool *h = &f->hp[i];
        fprintf(o, "%s\"%s\": ", i ? ", " : "", hpk[i]);
        if (!h->present) {
            fputs("null", o);
            continue;
        }
        fprintf(o, "{\"page_size\": %" PRIu64 ", \"total\": %" PRIu64 ", \"free\": %" PRIu64
                   ", \"reserved\": %" PRIu64 ", \"surplus\": %" PRIu64 ", \"overcommit\": %" PRIu64
                   ", \"available\": %" PRIu64 "}",
                h->page, h->nr, h->free, h->resv, h->surplus, h->overcommit, h->avail);
    }
    fprintf(o, "},\n \"thp\": {");
    json_kstr(o, "shmem_enabled", f->thp_mode[0] ? f->thp_mode : NULL, true);
    json_kstr(o, "shmem_enabled_2M", f->thp_2m_mode[0] ? f->thp_2m_mode : NULL, true);
    fprintf(o, "\"usable\": %s},\n", jb(f->support & SS_SUPPORT_THP_SHMEM));
    fprintf(o, " \"io_uring\": {\"usable\": %s, ", jb(f->uring_err == 0));
    json_err(o, "error", f->uring_err, true);
    if (f->uring_disabled < 0)
        fprintf(o, "\"io_uring_disabled\": null},\n");
    else
        fprintf(o, "\"io_uring_disabled\": %d},\n", f->uring_disabled);
    fprintf(o, " \"numa\": {");
    json_err(o, "error", f->numa_err, true);
    fprintf(o, "\"nodes\": %d, \"node_ids\": [", f->nnodes);
    for (int i = 0; i < f->nnodes && i < DOC_MAX_NODES; i++)
        fprintf(o, "%s%d", i ? ", " : "", f->node_ids[i]);
    fprintf(o, "], \"can_bind\": %s},\n", jb(f->numa_bind));
    fprintf(o, " \"dev_shm\": ");
    if (f->shm_ok)
        fprintf(o, "{\"size\": %" PRIu64 ", \"free\": %" PRIu64 "},\n", f->shm_size, f->shm_free);
    else
        fprintf(o, "null,\n");
    fprintf(o, " \"limits\": {\"of\": \"%s\", \"pid\": %ld, \"memlock\": {", whose,
            f->of_pid ? f->of_pid : (long)getpid());
    json_u64(o, "soft", f->memlock.known ? f->memlock.soft : DOC_UNLIMITED, true);
    json_u64(o, "hard", f->memlock.known ? f->memlock.hard : DOC_UNLIMITED, false);
    fprintf(o, "}, \"nofile\": {");
    json_u64(o, "soft", f->nofile.known ? f->nofile.soft : DOC_UNLIMITED, true);
    json_u64(o, "hard", f->nofile.known ? f->nofile.hard : DOC_UNLIMITED, false);
    fprintf(o, "}},\n \"cgroup\": {\"of\": \"%s\", \"version\": %d, ", whose, f->cg_version);
    json_kstr(o, "path", f->cg_version ? f->cg_path : NULL, true);
    json_u64(o, "memory_max", f->cg_max, true);
    json_u64(o, "memory_high", f->cg_high, true);
    json_u64(o, "memory_current", f->cg_current, false);
    fprintf(o, "},\n \"spill\": {");
    json_kstr(o, "dir", f->spill_off ? NULL : f->spill_dir, true);
    json_kstr(o, "source", f->spill_source, true);
    fprintf(o, "\"off\": %s, ", jb(f->spill_off));
    json_kstr(o, "probed", f->spill_off ? NULL : f->spill_probed, true);
    json_err(o, "error", f->spill_err, true);
    json_kstr(o, "fs", f->spill_fs, true);
    fprintf(o, "\"o_direct\": %s, \"dio_align\": %u, \"free\": %" PRIu64 "},\n",
            jb(f->spill_align != 0), f->spill_align, f->spill_free);
    fprintf(o, " \"kernel_features\": {\"memfd_seal\": %s, \"noexec_seal\": %s, "
               "\"future_write\": %s, \"populate_write\": %s, \"pidfd_open\": %s},\n",
            jb(f->support & SS_SUPPORT_MEMFD_SEAL), jb(f->support & SS_SUPPORT_NOEXEC_SEAL),
            jb(f->support & SS_SUPPORT_FUTURE_WRITE), jb(f->support & SS_SUPPORT_POPULATE_WRITE),
            jb(f->pidfd_err == 0));
    fprintf(o, " \"store\": {");
    json_kstr(o, "socket", f->socket[0] ? f->socket : NULL, true);
    fprintf(o, "\"running\": %s, ", jb(store_up(f)));
    json_err(o, "error", f->store_err, !store_up(f) ? false : true);
    if (store_up(f)) {
        const ss_stats *s = &f->st;
        fprintf(o, "\"pid\": %ld, ", f->store_pid);
        json_u64(o, "capacity", s->capacity, true);
        fprintf(o, "\"resident_bytes\": %" PRIu64 ", \"objects\": %" PRIu64
                   ", \"object_bytes\": %" PRIu64 ", \"bytes_by_backing\": {\"4K\": %" PRIu64
                   ", \"THP\": %" PRIu64 ", \"2M\": %" PRIu64 ", \"1G\": %" PRIu64
                   "}, \"backing_fallbacks\": %" PRIu64 ", \"pool_ready_bytes\": %" PRIu64
                   ", \"spill\": {\"on\": %s, \"io_uring\": %s, \"o_direct\": %s, "
                   "\"spilled_objects\": %" PRIu64 ", \"spilled_bytes\": %" PRIu64
                   ", \"spill_errors\": %" PRIu64 ", \"restore_errors\": %" PRIu64 "}",
                s->resident_bytes, s->objects, s->object_bytes, s->bytes_by_backing[0],
                s->bytes_by_backing[1], s->bytes_by_backing[2], s->bytes_by_backing[3],
                s->backing_fallbacks, s->pool_ready_bytes,
                jb(s->spill_mode & SS_SPILL_MODE_ON), jb(s->spill_mode & SS_SPILL_MODE_URING),
                jb(s->spill_mode & SS_SPILL_MODE_DIRECT), s->spilled_objects, s->spilled_bytes,
                s->spill_errors, s->restore_errors);
    }
    fprintf(o, "},\n \"findings\": [");
    for (int i = 0; i < v->n; i++) {
        const struct finding *x = &v->fd[i];
        fprintf(o, "%s\n  {\"key\": \"%s\", \"severity\": \"%s\", ", i ? "," : "", x->key,
                sev_names[x->sev]);
        json_kstr(o, "what", x->what, true);
        json_kstr(o, "fix", x->fix, true);
        json_kstr(o, "gain", x->gain, false);
        fputc('}', o);
    }
    fprintf(o, "%s]}\n", v->n ? "\n " : "");
}

/* prefix, then text wrapped at 78 columns, continued 7 columns in. */
static void wrap(FILE *o, const char *prefix, const char *text)
{
    const int indent = 7, width = 78;
    int col = fprintf(o, "%s", prefix), start = col;

    while (*text) {
        const char *sp = text;
        int n;

        /* a `command` is one word: never broken across lines */
        for (bool quoted = false; *sp && (quoted || *sp != ' '); sp++)
            if (*sp == '`')
                quoted = !quoted;
        /* nor is a size from its unit ("11.8 GiB") */
        if (*sp == ' ' && (strchr("KMGTPE", sp[1]) && sp[1] && !strncmp(sp + 2, "iB", 2)))
            for (sp += 4; *sp && *sp != ' '; sp++)
                ;
        n = (int)(sp - text);
        if (col > start && col + 1 + n > width) {
            fprintf(o, "\n%*s", indent, "");
            col = start = indent;
        } else if (col > start) {
            fputc(' ', o);
            col++;
        }
        fwrite(text, 1, (size_t)n, o);
        col += n;
        text = *sp ? sp + 1 : sp;
    }
    fputc('\n', o);
}

static void print_plain(FILE *o, const struct facts *f, const struct verdict *v)
{
    static const char *const hpk[2] = { "2 MiB", "1 GiB" };
    char a[24], b[24], c[24];
    const char *whose = f->of_pid ? "the store's" : "this process's";

    fprintf(o, "sealstore doctor %s on Linux %s %s\n\n", ss_version(), f->uts.release,
            f->uts.machine);
    fprintf(o, "%-14s%s total, %s available\n", "memory", cli_fmt_size(f->mem_total, a, sizeof(a)),
            cli_fmt_size(f->mem_avail, b, sizeof(b)));
    for (int i = 0; i < 2; i++) {
        const struct hp_pool *h = &f->hp[i];
        char label[32];
        snprintf(label, sizeof(label), "hugepages %s", i ? "1G" : "2M");
        if (!h->present) {
            fprintf(o, "%-14snot offered by this kernel\n", label);
            continue;
        }
        fprintf(o, "%-14s%" PRIu64 " pages of %s: %" PRIu64 " free, %" PRIu64 " reserved, %" PRIu64
                   " surplus, overcommit %" PRIu64 "; %" PRIu64 " available to a store\n",
                label, h->nr, hpk[i], h->free, h->resv, h->surplus, h->overcommit, h->avail);
    }
    fprintf(o, "%-14s%s%s%s%s\n", "shmem THP", f->thp_mode[0] ? f->thp_mode : "not in this kernel",
            f->thp_2m_mode[0] ? " (2 MiB size: " : "", f->thp_2m_mode, f->thp_2m_mode[0] ? ")" : "");
    if (f->uring_err == 0)
        fprintf(o, "%-14susable", "io_uring");
    else
        fprintf(o, "%-14sunusable (%s)", "io_uring", ss_strerror(f->uring_err));
    if (f->uring_disabled >= 0)
        fprintf(o, ", kernel.io_uring_disabled = %d", f->uring_disabled);
    fputc('\n', o);
    if (f->numa_err < 0)
        fprintf(o, "%-14sunknown (%s)\n", "numa", ss_strerror(f->numa_err));
    else {
        fprintf(o, "%-14s%d node%s (", "numa", f->nnodes, f->nnodes == 1 ? "" : "s");
        for (int i = 0; i < f->nnodes && i < DOC_MAX_NODES; i++)
            fprintf(o, "%s%d", i ? ", " : "", f->node_ids[i]);
        fprintf(o, "), memory binding %s\n", f->numa_bind ? "works" : "unavailable");
    }
    if (f->shm_ok)
        fprintf(o, "%-14s%s, %s free (not used by the store: its memfds are not limited by "
                   "/dev/shm)\n",
                "/dev/shm", cli_fmt_size(f->shm_size, a, sizeof(a)),
                cli_fmt_size(f->shm_free, b, sizeof(b)));
    else
        fprintf(o, "%-14snot mounted (not used by the store)\n", "/dev/shm");
    plain_lim(f->memlock.soft, a, sizeof(a));
    plain_lim(f->memlock.hard, b, sizeof(b));
    fprintf(o, "%-14s%s (hard %s), %s\n", "memlock", a, b, whose);
    if (f->nofile.soft == DOC_UNLIMITED)
        snprintf(a, sizeof(a), "unlimited");
    else
        snprintf(a, sizeof(a), "%" PRIu64, f->nofile.soft);
    if (f->nofile.hard == DOC_UNLIMITED)
        snprintf(b, sizeof(b), "unlimited");
    else
        snprintf(b, sizeof(b), "%" PRIu64, f->nofile.hard);
    fprintf(o, "%-14s%s (hard %s; the store raises its own to the hard limit), %s\n", "open files",
            a, b, whose);
    if (f->cg_version) {
        plain_lim(f->cg_max, a, sizeof(a));
        plain_lim(f->cg_high, b, sizeof(b));
        plain_lim(f->cg_current, c, sizeof(c));
        if (f->cg_version == 2)
            fprintf(o, "%-14s%s (v2): memory.max %s, memory.high %s, in use %s, %s\n", "cgroup",
                    f->cg_path, a, b, c, whose);
        else
            fprintf(o, "%-14s%s (v1 memory): limit %s, in use %s, %s\n", "cgroup", f->cg_path, a,
                    c, whose);
    } else {
        fprintf(o, "%-14snone found\n", "cgroup");
    }
    if (f->spill_off)
        fprintf(o, "%-14soff (%s)\n", "spill dir", f->spill_source);
    else {
        fprintf(o, "%-14s%s (%s)", "spill dir", f->spill_dir, f->spill_source);
        if (strcmp(f->spill_probed, f->spill_dir) != 0)
            fprintf(o, ", not created yet: probed %s", f->spill_probed);
        if (f->spill_err < 0)
            fprintf(o, ": %s\n", ss_strerror(f->spill_err));
        else if (f->spill_align)
            fprintf(o, ": %s, O_DIRECT (alignment %u), %s free\n", f->spill_fs, f->spill_align,
                    cli_fmt_size(f->spill_free, a, sizeof(a)));
        else
            fprintf(o, ": %s, buffered I/O only, %s free\n", f->spill_fs ? f->spill_fs : "?",
                    cli_fmt_size(f->spill_free, a, sizeof(a)));
    }
    fprintf(o, "%-14smemfd seals %s, MFD_NOEXEC_SEAL %s, F_SEAL_FUTURE_WRITE %s,\n"
               "%-14sMADV_POPULATE_WRITE %s, pidfd_open %s\n",
            "kernel", yes(f->support & SS_SUPPORT_MEMFD_SEAL),
            yes(f->support & SS_SUPPORT_NOEXEC_SEAL), yes(f->support & SS_SUPPORT_FUTURE_WRITE),
            "", yes(f->support & SS_SUPPORT_POPULATE_WRITE), yes(f->pidfd_err == 0));
    if (!store_up(f)) {
        fprintf(o, "%-14snone at %s (%s)\n", "store", f->socket[0] ? f->socket : "the default socket",
                ss_strerror(f->store_err));
    } else {
        const ss_stats *s = &f->st;
        fprintf(o, "%-14srunning at %s", "store", f->socket);
        if (f->store_pid)
            fprintf(o, ", pid %ld", f->store_pid);
        fprintf(o, "\n%-14scapacity %s, resident %s, %" PRIu64 " objects (%s)\n", "",
                s->capacity ? cli_fmt_size(s->capacity, a, sizeof(a)) : "unlimited",
                cli_fmt_size(s->resident_bytes, b, sizeof(b)), s->objects,
                cli_fmt_size(s->object_bytes, c, sizeof(c)));
        fprintf(o, "%-14sbacking in use: 4K %s, ", "", cli_fmt_size(s->bytes_by_backing[0], a, sizeof(a)));
        fprintf(o, "THP %s, ", cli_fmt_size(s->bytes_by_backing[1], a, sizeof(a)));
        fprintf(o, "2M %s, ", cli_fmt_size(s->bytes_by_backing[2], a, sizeof(a)));
        fprintf(o, "1G %s; %" PRIu64 " fallbacks\n", cli_fmt_size(s->bytes_by_backing[3], a, sizeof(a)),
                s->backing_fallbacks);
        if (s->spill_mode & SS_SPILL_MODE_ON)
            fprintf(o, "%-14sspilling with %s, %s; %" PRIu64 " objects (%s) on disk only\n", "",
                    (s->spill_mode & SS_SPILL_MODE_URING) ? "io_uring" : "worker threads",
                    (s->spill_mode & SS_SPILL_MODE_DIRECT) ? "O_DIRECT" : "buffered I/O",
                    s->spilled_objects, cli_fmt_size(s->spilled_bytes, a, sizeof(a)));
        else
            fprintf(o, "%-14sspilling off\n", "");
    }

    fputc('\n', o);
    if (v->n == 0)
        fprintf(o, "No findings: this machine gives the store everything it can use.\n");
    for (int i = 0; i < v->n; i++) {
        const struct finding *x = &v->fd[i];
        char head[32];

        snprintf(head, sizeof(head), "%2d. [%s] ", i + 1, sev_names[x->sev]);
        wrap(o, head, x->what);
        wrap(o, "    fix: ", x->fix);
        if (x->gain)
            wrap(o, "   gain: ", x->gain);
    }
    if (v->worst == SEV_MISSING)
        fprintf(o, "\nResult: a feature the store needs is missing (exit 2).\n");
    else if (v->worst == SEV_PERF)
        fprintf(o, "\nResult: the store runs, slower or smaller than it could (exit 1).\n");
    else
        fprintf(o, "\nResult: all good (exit 0).\n");
}

int sealstore_doctor(const struct doctor_args *a)
{
    static struct facts f; /* large: off the stack */
    static struct verdict v;

    look(&f, a);
    judge(&f, &v);
    if (a->json)
        print_json(stdout, &f, &v);
    else
        print_plain(stdout, &f, &v);
    return (int)v.worst;
}
