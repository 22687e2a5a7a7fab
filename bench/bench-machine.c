/* SPDX-License-Identifier: MIT */
/*
 * What the machine gives without sealstore: facts for the header, a memfd of
 * each backing made by hand, and the baselines every scenario compares
 * against (memoized in struct bench, measured on first use).
 */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "options.h"
#include "sys.h"

/* --------------------------------------------------------- machine facts */

int read_text(const char *path, char *buf, size_t len)
{
    int n = ss__sys_read_file(path, buf, len);

    if (n < 0) {
        buf[0] = '\0';
        return n;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return n;
}

/* The bracketed word of a sysfs mode file ("always [advise] never"). */
const char *sysfs_mode(const char *path, char *buf, size_t len)
{
    char raw[256], *l, *r;

    if (read_text(path, raw, sizeof(raw)) < 0)
        return "unknown";
    l = strchr(raw, '[');
    r = l ? strchr(l, ']') : NULL;
    if (!l || !r)
        snprintf(buf, len, "%s", raw);
    else
        snprintf(buf, len, "%.*s", (int)(r - l - 1), l + 1);
    return buf;
}

const char *thp_shmem_mode(char *buf, size_t len)
{
    return sysfs_mode("/sys/kernel/mm/transparent_hugepage/shmem_enabled", buf, len);
}

long meminfo_kb(const char *file, const char *field)
{
    char line[256];
    size_t fl = strlen(field);
    long v = -1;
    FILE *f = fopen(file, "re");

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        char *p = strstr(line, field);

        /* node meminfo lines read "Node 0 MemTotal:  123 kB" */
        if (p && p[fl] == ':') {
            v = strtol(p + fl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* --------------------------------------------- --hugepages reservation */

/* What --hugepages added to the 2 MiB pool (hugepages.c keeps the count
 * and gives exactly that back), at exit (normal exit, a fatal error,
 * SIGINT/SIGTERM/SIGHUP) by the process that added it, never by a forked
 * child. */
static ss__hp_reservation g_hp = {.record_fd = -1};

static void hp_on_signal(int sig)
{
    ss__hp_give_back(&g_hp);
    signal(sig, SIG_DFL);
    raise(sig);
}

int hugepages_reserve(uint64_t want, char *msg, size_t msglen)
{
    int rc = ss__hp_reserve(&g_hp, 2 * SS_MiB, want, msg, msglen);

    if (g_hp.added) {
        atexit(hugepages_give_back);
        signal(SIGINT, hp_on_signal);
        signal(SIGTERM, hp_on_signal);
        signal(SIGHUP, hp_on_signal);
    }
    return rc;
}

void hugepages_give_back(void)
{
    ss__hp_give_back(&g_hp);
}

/* Kilobytes of `field` (e.g. "ShmemPmdMapped") for the mapping holding addr,
 * from /proc/self/smaps; -errno if not found. */
long smaps_kb(const void *addr, const char *field)
{
    char line[512];
    uintptr_t a = (uintptr_t)addr;
    bool in = false;
    size_t fl = strlen(field);
    long v = -ENOENT;
    FILE *f = fopen("/proc/self/smaps", "re");

    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;

        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            if (in)
                break;
            in = a >= lo && a < hi;
            continue;
        }
        if (in && strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* ------------------------------------------------------------- backings */

const struct backing_desc backings[SS_BACKING__COUNT] = {
    [SS_BACKING_4K] = {"4K", 4096, 0, false, SS_HP_OFF},
    [SS_BACKING_THP] = {"THP", 2 * SS_MiB, 0, true, SS_HP_THP},
    [SS_BACKING_2M] = {"2M", 2 * SS_MiB, MFD_HUGETLB | MFD_HUGE_2MB, false, SS_HP_2M},
    [SS_BACKING_1G] = {"1G", SS_GiB, MFD_HUGETLB | MFD_HUGE_1GB, false, SS_HP_1G},
};

/*
 * Could backing bk hold `bytes` right now? If not, why says so, with what to
 * change. A hint only: another process may take pool pages before we fault
 * them, which the fill itself then reports as a skip.
 */
bool backing_usable(int bk, uint64_t bytes, char *why)
{
    const struct backing_desc *d = &backings[bk];
    char mode[32];

    if (bk == SS_BACKING_THP) {
        thp_shmem_mode(mode, sizeof(mode));
        if (strcmp(mode, "advise") && strcmp(mode, "within_size") && strcmp(mode, "always") &&
            strcmp(mode, "force")) {
            snprintf(why, WHY_LEN,
                     "THP: shmem_enabled=%s (write advise to "
                     "/sys/kernel/mm/transparent_hugepage/shmem_enabled)",
                     mode);
            return false;
        }
    } else if (is_hugetlb(bk)) {
        ss__hpool h = ss__hpool_read(d->page);
        uint64_t need = (bytes + d->page - 1) / d->page;
        uint64_t avail = ss__hpool_avail(&h);
        const char *how = bk == SS_BACKING_2M
                              ? "raise vm.nr_hugepages"
                              : "raise /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages";

        if (!h.present) {
            snprintf(why, WHY_LEN, "%s: this kernel has no %s hugetlb pool", d->name, d->name);
            return false;
        }
        if (avail == 0) {
            snprintf(why, WHY_LEN, "%s: no free hugepages (%s)", d->name, how);
            return false;
        }
        if (avail < need) {
            snprintf(why, WHY_LEN, "%s: %" PRIu64 " free hugepages, %" PRIu64 " needed (%s)",
                     d->name, avail, need, how);
            return false;
        }
    }
    return true;
}

/* Bytes a baseline fill uses on backing bk. */
uint64_t region_for(const struct bench *b, int bk)
{
    return SS_ALIGN_UP(b->region, backings[bk].page);
}

/* A fresh memfd of backing bk, sized and mapped read-write shared (THP:
 * advised). 0, or SKIP when the hugetlb pool cannot back it. */
int fresh_map(int bk, uint64_t len, struct fresh *m, char *why)
{
    const struct backing_desc *d = &backings[bk];
    int fd, rc;
    void *p;

    fd = ss__sys_memfd_create("sealstore-bench", MFD_CLOEXEC | d->mfd_flags);
    if (fd < 0) {
        if (is_hugetlb(bk) && (fd == -EINVAL || fd == -ENOENT)) {
            snprintf(why, WHY_LEN, "%s: memfd_create(MFD_HUGETLB): %s", d->name, ss_strerror(fd));
            return SKIP;
        }
        die_rc(fd, "memfd_create(%s)", d->name);
    }
    CK(ss__sys_ftruncate(fd, len));
    p = ss__sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ss__is_err(p)) {
        rc = (int)ss__ptr_err(p);
        close(fd);
        if (is_hugetlb(bk) && rc == -ENOMEM) {
            snprintf(why, WHY_LEN, "%s: mmap: %s (hugetlb pool taken meanwhile?)", d->name,
                     ss_strerror(rc));
            return SKIP;
        }
        die_rc(rc, "mmap %s memfd of %" PRIu64 " bytes", d->name, len);
    }
    if (d->madv_huge)
        CK(ss__sys_madvise(p, len, MADV_HUGEPAGE));
    m->fd = fd;
    m->p = p;
    m->len = len;
    return 0;
}

void fresh_unmap(struct fresh *m)
{
    CK(ss__sys_munmap(m->p, m->len));
    CK(ss__sys_close(m->fd));
    m->fd = -1;
    m->p = NULL;
}

/* THP can silently fall back to 4K folios: say how much really was huge. */
void thp_note(int bk, const struct fresh *m, struct fig *f)
{
    long kb;

    if (bk != SS_BACKING_THP)
        return;
    kb = smaps_kb(m->p, "ShmemPmdMapped");
    if (kb < 0)
        snprintf(f->note, sizeof(f->note), "THP: smaps unreadable (%s)", ss_strerror((int)kb));
    else
        snprintf(f->note, sizeof(f->note), "THP: %.0f%% of the region PMD-mapped",
                 100.0 * (double)kb * 1024.0 / (double)m->len);
}

/* Anonymous memory, faulted in: the "already-faulted" side of baselines. */
static void *faulted_alloc(uint64_t len)
{
    void *p = ss__sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (ss__is_err(p))
        die_rc((int)ss__ptr_err(p), "mmap anonymous %" PRIu64 " bytes", len);
    memset(p, 0x5a, len);
    return p;
}

/* ------------------------------------------------------------- baselines */

struct bl_arg {
    int bk;
    uint64_t len;
    uint64_t call; /* memcpy: bytes per call (0: len) */
    void *src, *dst;
    struct samples s;
    struct fig *f;
};

static int rep_memset(struct bench *b, void *arg, int rep, char *why)
{
    struct bl_arg *a = arg;
    uint64_t t0 = now_ns();

    /* zero stores run ~2x faster than other values on this CPU (AMD):
     * keep the two apart, data is rarely all zeros */
    memset(a->dst, a->bk ? 0 : 1 + (rep & 0x7f), a->len);
    clobber(a->dst);
    if (rep >= 0)
        samples_add(&a->s, gbps(a->len, now_ns() - t0));
    return 0;
}

static int rep_memcpy(struct bench *b, void *arg, int rep, char *why)
{
    struct bl_arg *a = arg;
    uint64_t call = a->call ? a->call : a->len;
    uint64_t t0 = now_ns();

    for (uint64_t off = 0; off + call <= a->len; off += call)
        memcpy((char *)a->dst + off, (const char *)a->src + off, call);
    clobber(a->dst);
    if (rep >= 0)
        samples_add(&a->s, gbps(a->len, now_ns() - t0));
    return 0;
}

/* memfd_create + ftruncate + mmap + memset, timed together: what a
 * producer pays to fill fresh memory of this backing by itself. */
static int rep_touch(struct bench *b, void *arg, int rep, char *why)
{
    struct bl_arg *a = arg;
    struct fresh m;
    uint64_t t0 = now_ns(), t1;

    if (fresh_map(a->bk, a->len, &m, why) == SKIP)
        return SKIP;
    memset(m.p, 1, a->len);
    clobber(m.p);
    t1 = now_ns();
    if (rep >= 0)
        samples_add(&a->s, gbps(a->len, t1 - t0));
    if (rep == b->reps - 1)
        thp_note(a->bk, &m, a->f);
    fresh_unmap(&m);
    return 0;
}

/* MADV_POPULATE_WRITE alone on a fresh mapping: the kernel allocating and
 * zeroing pages with no user-space work, i.e. the floor of any create. */
static int rep_zero(struct bench *b, void *arg, int rep, char *why)
{
    struct bl_arg *a = arg;
    struct fresh m;
    uint64_t t0, t1;
    int rc;

    if (fresh_map(a->bk, a->len, &m, why) == SKIP)
        return SKIP;
    t0 = now_ns();
    rc = ss__sys_madvise(m.p, a->len, MADV_POPULATE_WRITE);
    t1 = now_ns();
    if (rc < 0) {
        fresh_unmap(&m);
        if (rc == -EINVAL) {
            snprintf(why, WHY_LEN, "MADV_POPULATE_WRITE unsupported (Linux < 5.14)");
            return SKIP;
        }
        if (is_hugetlb(a->bk) && (rc == -ENOMEM || rc == -EFAULT)) {
            snprintf(why, WHY_LEN, "%s: MADV_POPULATE_WRITE: %s (hugetlb pool taken meanwhile?)",
                     backings[a->bk].name, ss_strerror(rc));
            return SKIP;
        }
        die_rc(rc, "madvise(MADV_POPULATE_WRITE) on %s", backings[a->bk].name);
    }
    if (rep >= 0)
        samples_add(&a->s, gbps(a->len, t1 - t0));
    if (rep == b->reps - 1)
        thp_note(a->bk, &m, a->f);
    fresh_unmap(&m);
    return 0;
}

static void bl_finish(struct bench *b, struct bl_arg *a, int rc, char *why)
{
    if (rc == SKIP)
        fig_skip(a->f, why);
    else
        fig_set(a->f, &a->s);
    samples_free(&a->s);
}

/* zeros: memset of zeros instead of a non-zero byte (bl_arg.bk is reused
 * as the flag) */
static const struct fig *bl_memset_(struct bench *b, bool zeros)
{
    struct fig *f = zeros ? &b->bl_memset0 : &b->bl_memset;
    struct bl_arg a = {.bk = zeros, .len = b->bw_region, .f = f};
    char why[WHY_LEN];

    if (f->done)
        return f;
    a.dst = faulted_alloc(a.len);
    bl_finish(b, &a,
              run_reps(b, zeros ? "memset zeros" : "memset", b->reps, rep_memset, &a, why),
              why);
    CK(ss__sys_munmap(a.dst, a.len));
    return f;
}

const struct fig *bl_memset(struct bench *b)
{
    return bl_memset_(b, false);
}

const struct fig *bl_memset_zeros(struct bench *b)
{
    return bl_memset_(b, true);
}

const struct fig *bl_memcpy(struct bench *b)
{
    struct bl_arg a = {.len = b->bw_region, .f = &b->bl_memcpy};
    char why[WHY_LEN];

    if (b->bl_memcpy.done)
        return &b->bl_memcpy;
    a.src = faulted_alloc(a.len);
    a.dst = faulted_alloc(a.len);
    bl_finish(b, &a, run_reps(b, "memcpy faulted", b->reps, rep_memcpy, &a, why), why);
    CK(ss__sys_munmap(a.src, a.len));
    CK(ss__sys_munmap(a.dst, a.len));
    return &b->bl_memcpy;
}

const struct fig *bl_memcpy_sized(struct bench *b, uint64_t size)
{
    struct bl_arg a = {.call = size};
    char why[WHY_LEN], label[48], sz[16];
    int k = 0;

    while (k < b->nsizes && b->sizes[k] != size)
        k++;
    if (k == b->nsizes || !size)
        return bl_memcpy(b);
    a.f = &b->bl_memcpy_at[k];
    if (a.f->done)
        return a.f;
    a.len = size >= b->bw_region ? size : b->bw_region / size * size;
    a.src = faulted_alloc(a.len);
    a.dst = faulted_alloc(a.len);
    snprintf(label, sizeof(label), "memcpy faulted, calls of %s", fmt_size(size, sz, sizeof(sz)));
    bl_finish(b, &a, run_reps(b, label, b->reps, rep_memcpy, &a, why), why);
    CK(ss__sys_munmap(a.src, a.len));
    CK(ss__sys_munmap(a.dst, a.len));
    return a.f;
}

static const struct fig *bl_fill(struct bench *b, int bk, bool zero)
{
    struct fig *f = zero ? &b->bl_zero[bk] : &b->bl_touch[bk];
    struct bl_arg a = {.bk = bk, .len = region_for(b, bk), .f = f};
    char why[WHY_LEN], label[64];

    if (f->done)
        return f;
    if (!backing_usable(bk, a.len, why)) {
        fig_skip(f, why);
        return f;
    }
    snprintf(label, sizeof(label), "%s %s", zero ? "populate-write" : "first-touch",
             backings[bk].name);
    bl_finish(b, &a, run_reps(b, label, b->reps, zero ? rep_zero : rep_touch, &a, why), why);
    return f;
}

const struct fig *bl_touch(struct bench *b, int bk)
{
    return bl_fill(b, bk, false);
}

const struct fig *bl_zero(struct bench *b, int bk)
{
    return bl_fill(b, bk, true);
}

/* Microseconds the kernel needs to zero `bytes` of backing bk (NaN if the
 * zeroing baseline was skipped): the floor of a cold create. */
double zero_us(struct bench *b, int bk, uint64_t bytes)
{
    const struct fig *z = bl_zero(b, bk);

    return fig_ok(z) ? (double)bytes / z->med / 1e3 : NAN;
}

void run_baseline(struct bench *b)
{
    char name[48], metric[40], sz[16];
    uint64_t len;

    report(b, &(struct rowspec){.figure = "memset, faulted memory", .metric = "memset",
                                .unit = "GB/s", .size = b->bw_region, .f = bl_memset(b)});
    report(b, &(struct rowspec){.figure = "memset zeros, faulted memory",
                                .metric = "memset_zeros", .unit = "GB/s", .size = b->bw_region,
                                .f = bl_memset_zeros(b), .bl_name = "memset",
                                .bl = bl_memset(b)});
    report(b, &(struct rowspec){.figure = "memcpy, faulted memory", .metric = "memcpy",
                                .unit = "GB/s", .size = b->bw_region, .f = bl_memcpy(b),
                                .bl_name = "memset", .bl = bl_memset(b)});
    for (int bk = 0; bk < SS_BACKING__COUNT; bk++) {
        len = region_for(b, bk);
        fmt_size(len, sz, sizeof(sz));
        snprintf(name, sizeof(name), "first-touch memset %s [%s]", sz, backings[bk].name);
        report(b, &(struct rowspec){.figure = name, .metric = "first_touch",
                                    .backing = backings[bk].name, .unit = "GB/s", .size = len,
                                    .f = bl_touch(b, bk), .bl_name = "memset",
                                    .bl = bl_memset(b)});
        snprintf(name, sizeof(name), "kernel zeroing %s [%s]", sz, backings[bk].name);
        snprintf(metric, sizeof(metric), "populate_write");
        report(b, &(struct rowspec){.figure = name, .metric = metric,
                                    .backing = backings[bk].name, .unit = "GB/s", .size = len,
                                    .f = bl_zero(b, bk), .bl_name = "memset",
                                    .bl = bl_memset(b)});
    }
    print_table(b, "machine limits (anonymous memory for memset/memcpy; fresh memfd per "
                   "rep for fills)");
}


/* ------------------------------------------------------ processes, buffers */

void *shared_alloc(size_t len)
{
    void *p = ss__sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (ss__is_err(p))
        die_rc((int)ss__ptr_err(p), "mmap shared anonymous %zu bytes", len);
    return p;
}

/*
 * The embedded store's populator maps each object segment writable while
 * it fills it, without MADV_DONTFORK: a fork at that moment copies the
 * mapping, and as long as the child lives F_SEAL_WRITE on that segment
 * fails, so whoever is later given the segment gets EBUSY from ss_seal.
 * Our children never need the store's mappings: drop any writable one.
 * Returns how many were dropped.
 */
static int drop_store_mappings(void)
{
    char line[512];
    int n = 0;
    FILE *f = fopen("/proc/self/maps", "re");

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char perms[8];

        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
            continue;
        if (perms[1] == 'w' && perms[3] == 's' && strstr(line, "/memfd:sealstore-obj")) {
            munmap((void *)lo, hi - lo);
            n++;
        }
    }
    fclose(f);
    return n;
}

pid_t fork_child(int (*fn)(void *arg), void *arg)
{
    pid_t pid;

    /* _exit() in the child never flushes, but a buffered line could still
     * be copied into a child that exec's or crashes: start clean */
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        die_rc(-errno, "fork");
    if (pid == 0) {
        int dropped = drop_store_mappings();

        if (dropped && getenv("SEALSTORE_BENCH_DEBUG"))
            fprintf(stderr, PROG ": child %d dropped %d inherited writable store mapping(s)\n",
                    (int)getpid(), dropped);
        g_tty = false; /* progress belongs to the parent */
        _exit(fn(arg));
    }
    return pid;
}

void reap(pid_t pid, const char *what)
{
    int st;

    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die_rc(-errno, "waitpid(%s)", what);
    if (WIFSIGNALED(st))
        die_rc(0, "%s (pid %d) died of signal %d", what, (int)pid, WTERMSIG(st));
    if (WEXITSTATUS(st) != 0)
        die_rc(0, "%s (pid %d) failed (exit %d; its message is above)", what, (int)pid,
               WEXITSTATUS(st));
}

void reap_all(const pid_t *pids, int n, const char *what)
{
    int left = n;

    while (left > 0) {
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        int i;

        if (pid < 0) {
            if (errno == EINTR)
                continue;
            die_rc(-errno, "waitpid(%s)", what);
        }
        for (i = 0; i < n && pids[i] != pid; i++)
            ;
        if (i == n)
            continue; /* not one of these */
        left--;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            continue;
        for (int j = 0; j < n; j++)
            if (j != i)
                kill(pids[j], SIGKILL);
        while (left > 0 && (waitpid(-1, &st, 0) >= 0 || errno == EINTR))
            left--;
        if (WIFSIGNALED(st))
            die_rc(0, "a %s process died of a signal", what);
        die_rc(0, "a %s process failed (its message is above)", what);
    }
}

/* One source for every fill, faulted once: the cost of producing the bytes
 * stays out of the figures, as it does in the memcpy baseline. Children
 * share it copy-on-write and only read it. Its address never changes (a
 * reservation as large as --sizes allows, faulted as far as asked), so a
 * pointer taken for a small size stays good after a larger one is asked. */
#define SRC_RESERVE (65 * SS_GiB)
static unsigned char *g_src;
static uint64_t g_src_len;

const void *src_buf(uint64_t size)
{
    if (!g_src) {
        void *p = ss__sys_mmap(NULL, SRC_RESERVE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

        if (ss__is_err(p))
            die_rc((int)ss__ptr_err(p), "reserving %" PRIu64 " GiB of address space",
                   (uint64_t)(SRC_RESERVE / SS_GiB));
        g_src = p;
    }
    if (size > SRC_RESERVE)
        die_rc(-EINVAL, "a source buffer of %" PRIu64 " bytes", size);
    if (size > g_src_len) {
        uint64_t len = SS_ALIGN_UP(size, 2 * SS_MiB);

        memset(g_src + g_src_len, 0x5a, len - g_src_len);
        g_src_len = len;
    }
    return g_src;
}

void fig_gbps(const struct opfig *o, uint64_t size, struct fig *out)
{
    fig_scale(&o->ops, (double)size / 1e9, out);
}

/* -------------------------------------------- the IPC baselines (naive way) */

static int sendall(int fd, const struct iovec *iov0, int n)
{
    struct iovec iov[4];
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};

    memcpy(iov, iov0, (size_t)n * sizeof(*iov));
    while (mh.msg_iovlen) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (mh.msg_iovlen && (size_t)w >= mh.msg_iov->iov_len) {
            w -= (ssize_t)mh.msg_iov->iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen) {
            mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + w;
            mh.msg_iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* 0 at end of stream before any byte, 1 when len bytes arrived, -errno */
static int recvall(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t r = recv(fd, (char *)buf + got, len - got, MSG_WAITALL);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return got ? -EPIPE : 0;
        got += (size_t)r;
    }
    return 1;
}

/* Bare round trip: what every synchronous store call costs at least (the
 * store's socket type, blocking on both sides, a 64-byte message). */
struct rtt_arg {
    int fd, other; /* the child closes `other`, or it never sees EOF */
    size_t req;    /* request bytes (64 unless a store call carries more) */
    char *buf;     /* req bytes to send */
};

#define RTT_REPLY 64 /* the echo answers every request with 64 bytes */

static int rtt_child(void *arg)
{
    struct rtt_arg *a = arg;
    static char buf[256 * 1024];

    close(a->other);
    for (;;) {
        ssize_t r = recv(a->fd, buf, sizeof(buf), 0);

        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (send(a->fd, buf, RTT_REPLY, MSG_NOSIGNAL) != RTT_REPLY)
            return 1;
    }
}

static uint64_t rtt_op(struct bench *b, void *arg, uint64_t i)
{
    struct rtt_arg *a = arg;
    char reply[RTT_REPLY];
    uint64_t t0;

    a->buf[0] = (char)i;
    t0 = now_ns();
    if (send(a->fd, a->buf, a->req, MSG_NOSIGNAL) != (ssize_t)a->req ||
        recv(a->fd, reply, sizeof(reply), 0) != (ssize_t)sizeof(reply))
        die_rc(-errno, "SOCK_SEQPACKET ping-pong");
    return now_ns() - t0;
}

/* Start the echo process for req-byte requests; a->fd is then our end. */
static pid_t rtt_open(struct rtt_arg *a, size_t req)
{
    int sv[2];
    pid_t pid;

    a->req = req < RTT_REPLY ? RTT_REPLY : req;
    a->buf = xcalloc(1, a->req);

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die_rc(-errno, "socketpair(SOCK_SEQPACKET)");
    a->fd = sv[1];
    a->other = sv[0];
    pid = fork_child(rtt_child, a);
    close(sv[1]);
    a->fd = sv[0];
    return pid;
}

static void rtt_close(struct rtt_arg *a, pid_t pid)
{
    free(a->buf);
    close(a->fd);
    reap(pid, "round-trip echo process");
}

static void rtt_measure(struct bench *b, const char *label, struct opfig *out)
{
    struct rtt_arg a;
    pid_t pid = rtt_open(&a, RTT_REPLY);

    run_ops(b, label, b->duration_ns, 100, rtt_op, &a, out);
    rtt_close(&a, pid);
}

/*
 * The VM's idle/busy swing (below) can flip within a second, between a
 * baseline measured alone and the store's figure. Measuring bare round
 * trips in half of every slice of the store's calls puts both under the
 * same conditions: their ratio is the store's own cost. (Not one of each
 * in turn: with two peers to wake, the scheduler keeps one beside the
 * caller and sends the other to the idle vCPU, ~40 us per wake-up, and
 * which one wins is arbitrary.)
 */
void run_ops_rtt(struct bench *b, const char *label, uint64_t duration_ns, unsigned min_ops,
                 op_fn fn, void *arg, struct opfig *out, struct opfig *rtt, size_t req)
{
    struct rtt_arg a;
    pid_t pid = rtt_open(&a, req);

    run_ops_pair(b, label, duration_ns, min_ops, fn, arg, out, rtt_op, &a, rtt);
    rtt_close(&a, pid);
    snprintf(rtt->ops.note, sizeof(rtt->ops.note),
             "bare round trips (%zu B request, 64 B reply) in half of every slice of the "
             "store's calls", a.req);
    memcpy(rtt->us.note, rtt->ops.note, sizeof(rtt->us.note));
}

/*
 * On this VM (Firecracker, 2 vCPUs) a wake-up that crosses to an idle vCPU
 * costs ~40 us more than one to a busy vCPU: the round trip is ~6 us while
 * anything else keeps the other vCPU busy and ~47 us when the machine is
 * idle. Every store call crosses the same way, so its baseline must come
 * from the same minute: a measurement older than this is repeated.
 */
#define RTT_MAX_AGE_S 30

const struct opfig *bl_rtt(struct bench *b)
{
    if (b->bl_rtt.ops.done && now_ns() - b->bl_rtt_at < RTT_MAX_AGE_S * 1000000000ull)
        return &b->bl_rtt;
    rtt_measure(b, "seqpacket round trip", &b->bl_rtt);
    b->bl_rtt_at = now_ns();
    return &b->bl_rtt;
}

/* Set every thread of this process (the embedded store's too) to `set`;
 * old (if non-NULL) gets the calling thread's mask first. 0 or -errno. */
int pin_process(const cpu_set_t *set, cpu_set_t *old)
{
    DIR *d;
    struct dirent *e;
    int rc = 0;

    if (old && sched_getaffinity(0, sizeof(*old), old) < 0)
        return -errno;
    d = opendir("/proc/self/task");
    if (!d)
        return -errno;
    while ((e = readdir(d))) {
        pid_t tid = (pid_t)atoi(e->d_name);

        if (tid > 0 && sched_setaffinity(tid, sizeof(*set), set) < 0 && errno != ESRCH)
            rc = -errno;
    }
    closedir(d);
    return rc;
}

/* Both ends pinned to the CPU we run on: a wake-up without crossing
 * vCPUs, i.e. what pinning a client beside the store can give. */
const struct opfig *bl_rtt_one_cpu(struct bench *b)
{
    cpu_set_t old, one;
    int cpu = sched_getcpu();

    if (b->bl_rtt1.ops.done)
        return &b->bl_rtt1;
    if (cpu < 0 || sched_getaffinity(0, sizeof(old), &old) < 0) {
        fig_skip(&b->bl_rtt1.ops, "sched_getcpu/sched_getaffinity failed");
        fig_skip(&b->bl_rtt1.us, "sched_getcpu/sched_getaffinity failed");
        return &b->bl_rtt1;
    }
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof(one), &one) < 0)
        die_rc(-errno, "sched_setaffinity(CPU %d)", cpu);
    rtt_measure(b, "seqpacket round trip, one CPU", &b->bl_rtt1); /* the child inherits it */
    snprintf(b->bl_rtt1.ops.note, sizeof(b->bl_rtt1.ops.note),
             "both processes pinned to CPU %d: no wake-up crosses vCPUs", cpu);
    if (sched_setaffinity(0, sizeof(old), &old) < 0)
        die_rc(-errno, "sched_setaffinity (restore)");
    return &b->bl_rtt1;
}

/* A /dev/shm file per object: the writer creates, sizes, maps and fills a
 * new file; unlinking it (freeing the pages) is not timed, like the
 * store's delete. */
struct shm_arg {
    uint64_t size;
    unsigned nfiles; /* reader: files cycled through */
    const void *src;
};

static void shm_name(char *buf, size_t len, uint64_t i)
{
    snprintf(buf, len, "/sealstore-bench-%d-%" PRIu64, (int)getpid(), i);
}

static void shm_create_fill(const char *name, uint64_t size, const void *src)
{
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    void *p;

    if (fd < 0)
        die_rc(-errno, "shm_open(%s)", name);
    if (ftruncate(fd, (off_t)size) < 0)
        die_rc(-errno, "ftruncate /dev/shm%s to %" PRIu64, name, size);
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die_rc(-errno, "mmap /dev/shm%s", name);
    memcpy(p, src, size);
    clobber(p);
    munmap(p, size);
    close(fd);
}

static uint64_t shm_write_op(struct bench *b, void *arg, uint64_t i)
{
    struct shm_arg *a = arg;
    char name[64];
    uint64_t t0, t1;

    shm_name(name, sizeof(name), i);
    t0 = now_ns();
    shm_create_fill(name, a->size, a->src);
    t1 = now_ns();
    shm_unlink(name);
    return t1 - t0;
}

/* The reader opens, learns the size and maps, then lets go; neither this
 * nor a store get touches the bytes, so both measure access, not reading. */
static uint64_t shm_read_op(struct bench *b, void *arg, uint64_t i)
{
    struct shm_arg *a = arg;
    char name[64];
    struct stat stb;
    uint64_t t0, t1;
    void *p;
    int fd;

    shm_name(name, sizeof(name), i % a->nfiles);
    t0 = now_ns();
    fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0 || fstat(fd, &stb) < 0)
        die_rc(-errno, "shm_open/fstat(%s)", name);
    p = mmap(NULL, (size_t)stb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die_rc(-errno, "mmap /dev/shm%s read-only", name);
    clobber(p);
    munmap(p, (size_t)stb.st_size);
    close(fd);
    t1 = now_ns();
    return t1 - t0;
}

static unsigned objects_for(uint64_t size, uint64_t budget, unsigned most)
{
    uint64_t n = budget / size;

    return n < 1 ? 1 : n > most ? most : (unsigned)n;
}

/* The plot's GB/s for a baseline measured at one of the put/get sizes. */
static void plot_set(struct bench *b, uint64_t size, int which, const struct opfig *o)
{
    int k = size_index(b, size);
    struct fig g;

    if (k < 0)
        return;
    fig_gbps(o, size, &g);
    if (which == 0)
        b->plot[k].shm_w = g.med;
    else if (which == 1)
        b->plot[k].shm_r = g.med;
    else
        b->plot[k].sock = g.med;
}

static const struct opfig *bl_shm(struct bench *b, uint64_t size, bool write)
{
    struct opfig *f = memo_at(write ? &b->bl_shm_w : &b->bl_shm_r, size);
    struct shm_arg a = {.size = size, .src = src_buf(size)};
    char label[64], sz[16], name[64];

    if (!f)
        die_rc(0, "more than %d sizes for the /dev/shm baseline", MEMO_MAX);
    if (f->ops.done)
        return f;
    snprintf(label, sizeof(label), "/dev/shm file %s %s", write ? "write" : "open+map",
             fmt_size(size, sz, sizeof(sz)));
    if (write) {
        run_ops(b, label, b->duration_ns, 3, shm_write_op, &a, f);
    } else {
        a.nfiles = objects_for(size, 64 * SS_MiB, 64);
        for (unsigned i = 0; i < a.nfiles; i++) {
            shm_name(name, sizeof(name), i);
            shm_unlink(name); /* a leftover of a killed run */
            shm_create_fill(name, size, a.src);
        }
        run_ops(b, label, b->duration_ns, 3, shm_read_op, &a, f);
        for (unsigned i = 0; i < a.nfiles; i++) {
            shm_name(name, sizeof(name), i);
            shm_unlink(name);
        }
    }
    plot_set(b, size, write ? 0 : 1, f);
    return f;
}

const struct opfig *bl_shm_write(struct bench *b, uint64_t size)
{
    return bl_shm(b, size, true);
}

const struct opfig *bl_shm_read(struct bench *b, uint64_t size)
{
    return bl_shm(b, size, false);
}

/* Copying through a socket: the writer sends an 8-byte send time and the
 * bytes; the reader, once its buffer holds them all, answers with the
 * latency by its clock (CLOCK_MONOTONIC is one clock for all processes).
 * One way, copy included, no pipelining between messages. */
struct sock_arg {
    int fd, other;
    uint64_t size;
    const void *src;
};

static int sock_child(void *arg)
{
    struct sock_arg *a = arg;
    uint64_t len = a->size + 8;
    unsigned char *buf = faulted_alloc(len);

    close(a->other);
    for (;;) {
        uint64_t t0, lat;
        int rc = recvall(a->fd, buf, len);

        if (rc == 0)
            return 0;
        if (rc < 0)
            return 1;
        memcpy(&t0, buf, 8);
        lat = now_ns() - t0;
        if (send(a->fd, &lat, 8, MSG_NOSIGNAL) != 8)
            return 1;
    }
}

static uint64_t sock_op(struct bench *b, void *arg, uint64_t i)
{
    struct sock_arg *a = arg;
    uint64_t t0 = now_ns(), lat;
    struct iovec iov[2] = {{&t0, 8}, {(void *)a->src, a->size}};
    int rc = sendall(a->fd, iov, 2);

    if (rc < 0 || (rc = recvall(a->fd, &lat, 8)) != 1)
        die_rc(rc ? rc : -EPIPE, "socket copy of %" PRIu64 " bytes", a->size);
    return lat;
}

const struct opfig *bl_sock(struct bench *b, uint64_t size)
{
    struct opfig *f = memo_at(&b->bl_sock, size);
    struct sock_arg a = {.size = size, .src = src_buf(size)};
    char label[64], sz[16];
    int sv[2];
    pid_t pid;

    if (!f)
        die_rc(0, "more than %d sizes for the socket baseline", MEMO_MAX);
    if (f->ops.done)
        return f;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die_rc(-errno, "socketpair(SOCK_STREAM)");
    a.fd = sv[1];
    a.other = sv[0];
    pid = fork_child(sock_child, &a);
    close(sv[1]);
    a.fd = sv[0];
    snprintf(label, sizeof(label), "socket copy %s", fmt_size(size, sz, sizeof(sz)));
    run_ops(b, label, b->duration_ns, 3, sock_op, &a, f);
    close(sv[0]);
    reap(pid, "socket-copy reader");
    plot_set(b, size, 2, f);
    return f;
}

/* The baselines as a table of their own, at every put/get size. */
void run_ipc(struct bench *b)
{
    const struct opfig *r = bl_rtt(b), *o;
    struct fig f;
    char name[64], sz[16];

    report(b, &(struct rowspec){.figure = "seqpacket round trip 64 B", .metric = "rtt_ops",
                                .unit = "ops/s", .size = 64, .f = &r->ops});
    report(b, &(struct rowspec){.figure = "seqpacket round trip 64 B p50",
                                .metric = "rtt_p50", .unit = "us", .size = 64, .f = &r->us});
    report(b, &(struct rowspec){.figure = "seqpacket round trip 64 B p99",
                                .metric = "rtt_p99", .unit = "us", .size = 64, .f = &r->us,
                                .stat = ST_P99});
    o = bl_rtt_one_cpu(b);
    report(b, &(struct rowspec){.figure = "seqpacket RTT 64 B, one CPU",
                                .metric = "rtt_one_cpu_ops", .unit = "ops/s", .size = 64,
                                .f = &o->ops, .bl_name = "seqpacket round trip",
                                .bl = &r->ops});
    report(b, &(struct rowspec){.figure = "seqpacket RTT 64 B, one CPU p50",
                                .metric = "rtt_one_cpu_p50", .unit = "us", .size = 64,
                                .f = &o->us, .bl_name = "seqpacket round trip p50",
                                .bl = &r->us});
    for (int i = 0; i < b->nsizes; i++) {
        uint64_t size = b->sizes[i];

        fmt_size(size, sz, sizeof(sz));
        o = bl_shm_write(b, size);
        fig_gbps(o, size, &f);
        snprintf(name, sizeof(name), "/dev/shm file write %s", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "shm_write", .unit = "GB/s",
                                    .size = size, .f = &f, .bl_name = "memcpy faulted",
                                    .bl = bl_memcpy(b)});
        report(b, &(struct rowspec){.figure = name, .metric = "shm_write_ops", .unit = "ops/s",
                                    .size = size, .f = &o->ops,
                                    .bl_name = "seqpacket round trip", .bl = &r->ops});
        o = bl_shm_read(b, size);
        snprintf(name, sizeof(name), "/dev/shm file open+map %s", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "shm_read_ops", .unit = "ops/s",
                                    .size = size, .f = &o->ops,
                                    .bl_name = "seqpacket round trip", .bl = &r->ops});
        o = bl_sock(b, size);
        fig_gbps(o, size, &f);
        snprintf(name, sizeof(name), "socket copy %s", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "sock_copy", .unit = "GB/s",
                                    .size = size, .f = &f, .bl_name = "memcpy faulted",
                                    .bl = bl_memcpy(b)});
        snprintf(name, sizeof(name), "socket copy %s p50", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "sock_copy_p50", .unit = "us",
                                    .size = size, .f = &o->us,
                                    .bl_name = "seqpacket round trip p50", .bl = &r->us});
    }
    print_table(b, "IPC baselines: bare round trip, and the naive alternatives per object "
                   "(memcpy from a faulted source; readers do not touch the bytes)");
}
