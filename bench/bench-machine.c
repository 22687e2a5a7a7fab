/* SPDX-License-Identifier: MIT */
/*
 * What the machine gives without sealstore: facts for the header, a memfd of
 * each backing made by hand, and the baselines every scenario compares
 * against (memoized in struct bench, measured on first use).
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
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

struct hpool hpool_read(uint64_t page)
{
    char path[128];
    struct hpool h = {0};
    const char *base = "/sys/kernel/mm/hugepages/hugepages-";

    snprintf(path, sizeof(path), "%s%" PRIu64 "kB/nr_hugepages", base, page / 1024);
    if (ss__sys_read_u64(path, &h.nr) < 0)
        return h;
    h.present = true;
    snprintf(path, sizeof(path), "%s%" PRIu64 "kB/free_hugepages", base, page / 1024);
    (void)ss__sys_read_u64(path, &h.free);
    snprintf(path, sizeof(path), "%s%" PRIu64 "kB/resv_hugepages", base, page / 1024);
    (void)ss__sys_read_u64(path, &h.resv);
    snprintf(path, sizeof(path), "%s%" PRIu64 "kB/surplus_hugepages", base, page / 1024);
    (void)ss__sys_read_u64(path, &h.surplus);
    return h;
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
        struct hpool h = hpool_read(d->page);
        uint64_t need = (bytes + d->page - 1) / d->page;
        uint64_t avail = h.free > h.resv ? h.free - h.resv : 0;
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
    uint64_t t0 = now_ns();

    memcpy(a->dst, a->src, a->len);
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

