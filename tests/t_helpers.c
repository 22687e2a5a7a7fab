/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "t_helpers.h"

#include <errno.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ftw.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <linux/memfd.h>
#include <dirent.h>
#include <time.h>

#include "sealstore.h"

int t_skipped;

bool t_required(const char *feature)
{
    const char *req = getenv("SEALSTORE_TEST_REQUIRE");
    size_t n = strlen(feature);

    while (req && *req) {
        const char *end = strchr(req, ',');
        size_t len = end ? (size_t)(end - req) : strlen(req);
        if (len == n && strncmp(req, feature, n) == 0)
            return true;
        req = end ? end + 1 : NULL;
    }
    return false;
}

int t_skip_program(const char *feature, const char *fmt, ...)
{
    va_list ap;
    bool req = feature && t_required(feature);

    fprintf(stderr, req ? "FAIL (required feature '%s' missing): " : "SKIP%s%s: ",
            req ? feature : "", "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return req ? T_EXIT_ERROR : T_EXIT_SKIP;
}

void t_apply_filter(void)
{
    const char *f = getenv("SS_TEST_FILTER");

    if (f && *f)
        cmocka_set_test_filter(f);
}

int t_finish(int failures, size_t ncases)
{
    if (failures)
        return 1;
    if (ncases > 0 && (size_t)t_skipped == ncases) {
        fprintf(stderr, "every case skipped\n");
        return T_EXIT_SKIP;
    }
    return 0;
}

const char *t_strerror(int err)
{
    return ss_strerror(err);
}

/* ------------------------------------------------------------ hugepages */

/*
 * Several test programs run at once (make -j check) and share the kernel's
 * pools. Pages one program adds are free for anyone to take, so a program
 * that reserves hugepages holds the pool's flock from its first
 * reservation until it gives them back (t_hugetlb_restore, at exit at the
 * latest): hugepage work of different programs runs one at a time, and no
 * other test program reserves, frees or reads the pool meanwhile. Each
 * program adds the pages it needs on top of whatever is there and takes
 * back exactly what it added. Programs outside the lock still map free
 * pages (stores of other tests on the default backing, the benchmark), and
 * a pool lowered below what is mapped keeps those pages as surplus pages
 * until they are unmapped: every count here is of persistent pages
 * (t_hugetlb_persistent), what writing nr_hugepages sets. (Stores under test run with
 * SEALSTORE_HUGEPAGES=off unless a test asks, so they take none.)
 */
static long added[2]; /* pages this program added: [0] 2 MiB, [1] 1 GiB */
static const uint64_t pool_sizes[2] = {2ull << 20, 1ull << 30};
static bool in_session;      /* this program reserved: it holds the pool lock */
static int session_fd = -1;  /* that lock (-1 if the lock file could not open) */
static pid_t session_pid;    /* a forked child's exit must not give pages back */

static void pool_path(uint64_t page_size, const char *file, char *buf, size_t len)
{
    snprintf(buf, len, "/sys/kernel/mm/hugepages/hugepages-%llukB/%s",
             (unsigned long long)(page_size / 1024), file);
}

static long read_long(const char *path)
{
    FILE *f = fopen(path, "r");
    long v;

    if (!f)
        return -errno;
    if (fscanf(f, "%ld", &v) != 1)
        v = -EIO;
    fclose(f);
    return v;
}

static int write_long(const char *path, long v)
{
    FILE *f = fopen(path, "w");
    int rc = 0;

    if (!f)
        return -errno;
    if (fprintf(f, "%ld\n", v) < 0)
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

static int lock_open(void)
{
    int fd = open("/tmp/sealstore-test-hugetlb.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    if (fd >= 0)
        while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
            ;
    return fd; /* -1: go on unserialised */
}

int t_hugetlb_lock(void)
{
    if (in_session && session_pid == getpid())
        return -2; /* already held for this program's reservation */
    return lock_open();
}

void t_hugetlb_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}

long t_hugetlb_free(uint64_t page_size)
{
    char p[160];

    pool_path(page_size, "free_hugepages", p, sizeof(p));
    return read_long(p);
}

long t_hugetlb_resv(uint64_t page_size)
{
    char p[160];

    pool_path(page_size, "resv_hugepages", p, sizeof(p));
    return read_long(p);
}

long t_hugetlb_surplus(uint64_t page_size)
{
    char p[160];

    pool_path(page_size, "surplus_hugepages", p, sizeof(p));
    return read_long(p);
}

long t_hugetlb_persistent(uint64_t page_size)
{
    char nr_p[160], sur_p[160];
    long nr = -EIO, s1, s2 = 0;

    pool_path(page_size, "nr_hugepages", nr_p, sizeof(nr_p));
    pool_path(page_size, "surplus_hugepages", sur_p, sizeof(sur_p));
    for (int i = 0; i < 8; i++) {
        s1 = read_long(sur_p);
        nr = read_long(nr_p);
        s2 = read_long(sur_p);
        if (s1 < 0 || nr < 0 || s2 < 0)
            return s1 < 0 ? s1 : nr < 0 ? nr : s2;
        if (s1 == s2)
            break;
    }
    return nr > s2 ? nr - s2 : 0;
}

long t_hugetlb_total(uint64_t page_size)
{
    char p[160];
    long nr, over;

    pool_path(page_size, "nr_hugepages", p, sizeof(p));
    nr = read_long(p);
    if (nr < 0)
        return nr;
    pool_path(page_size, "nr_overcommit_hugepages", p, sizeof(p));
    over = read_long(p);
    return nr + (over > 0 ? over : 0);
}

void t_hugetlb_restore(void)
{
    if (!in_session || session_pid != getpid())
        return;
    for (size_t i = 0; i < 2; i++) {
        char p[160];
        long nr;

        if (added[i] <= 0)
            continue;
        pool_path(pool_sizes[i], "nr_hugepages", p, sizeof(p));
        nr = t_hugetlb_persistent(pool_sizes[i]);
        if (nr < 0 || write_long(p, nr > added[i] ? nr - added[i] : 0) < 0)
            fprintf(stderr, "warning: could not give back %ld pages of %s\n", added[i], p);
        added[i] = 0;
    }
    if (session_fd >= 0)
        close(session_fd);
    session_fd = -1;
    in_session = false;
}

long t_hugetlb_reserve(uint64_t page_size, long pages)
{
    int i = page_size >= (1ull << 30) ? 1 : 0;
    static bool registered;
    char p[160];
    long fr, nr, now;
    int rc;

    fr = t_hugetlb_free(page_size);
    if (fr < 0)
        return fr;
    if (geteuid() != 0)
        return fr >= pages ? fr : -EPERM;
    if (!registered) {
        atexit(t_hugetlb_restore);
        registered = true;
    }
    if (!in_session || session_pid != getpid()) {
        session_fd = lock_open();
        session_pid = getpid();
        in_session = true;
    }
    if (added[i] >= pages)
        return t_hugetlb_free(page_size);
    pool_path(page_size, "nr_hugepages", p, sizeof(p));
    nr = t_hugetlb_persistent(page_size);
    if (nr < 0)
        return nr;
    rc = write_long(p, nr + (pages - added[i]));
    /* the kernel may grant fewer (fragmentation); a raise also turns
     * surplus pages into persistent ones, which count as added */
    now = t_hugetlb_persistent(page_size);
    if (now > nr)
        added[i] += now - nr;
    if (rc < 0)
        return rc;
    return t_hugetlb_free(page_size);
}

int t_hugetlb_kernel(char *why, size_t len)
{
    int fd = memfd_create("t-hugetlb-probe", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);

    if (fd >= 0) {
        close(fd);
        return 1;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != ENODEV) {
        fprintf(stderr, "memfd_create(MFD_HUGETLB): %s\n", strerror(errno));
        exit(T_EXIT_ERROR);
    }
    snprintf(why, len, "kernel without 2 MiB hugetlb memfds (%s)", strerror(errno));
    return 0;
}

const char *t_thp_shmem_mode(void)
{
    static char mode[32];
    char buf[256];
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
    char *a, *b;

    if (!f)
        return "never";
    if (!fgets(buf, sizeof(buf), f)) {
        fclose(f);
        return "never";
    }
    fclose(f);
    a = strchr(buf, '[');
    b = a ? strchr(a, ']') : NULL;
    if (!a || !b || (size_t)(b - a - 1) >= sizeof(mode))
        return "never";
    memcpy(mode, a + 1, (size_t)(b - a - 1));
    mode[b - a - 1] = '\0';
    return mode;
}

/* ---------------------------------------------------------------- smaps */

long t_smaps_field(const void *addr, const char *field)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    bool in = false;
    size_t flen = strlen(field);
    long val = -ENOENT;

    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char c;

        /* a mapping header: "lo-hi perms ..." */
        if (sscanf(line, "%lx-%lx %c", &lo, &hi, &c) == 3) {
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
            continue;
        }
        if (in && strncmp(line, field, flen) == 0 && line[flen] == ':') {
            long kb;
            if (sscanf(line + flen + 1, "%ld", &kb) == 1)
                val = kb * 1024;
            break;
        }
    }
    fclose(f);
    return val;
}

bool t_map_of(const void *addr, char perms[5], char name[256], unsigned long *lo,
              unsigned long *hi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f)) {
        int pos = 0;

        if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", lo, hi, perms, &pos) < 3)
            continue;
        if ((uintptr_t)addr < *lo || (uintptr_t)addr >= *hi)
            continue;
        snprintf(name, 256, "%s", pos ? line + pos : "");
        name[strcspn(name, "\n")] = 0;
        found = true;
    }
    fclose(f);
    return found;
}

void t_expect_map(const void *addr, const char *what, const char *perms)
{
    char p[5] = "", n[256] = "";
    unsigned long lo, hi;

    if (!t_map_of(addr, p, n, &lo, &hi))
        fail_msg("%p is not mapped", addr);
    if (!strstr(n, what) || (perms && strcmp(p, perms) != 0))
        fail_msg("%p is mapped %s from '%s', expected %s from %s", addr, p, n,
                 perms ? perms : "(any)", what);
}

long t_kernel_page_size(const void *addr)
{
    return t_smaps_field(addr, "KernelPageSize");
}

/* ------------------------------------------------------------- tmpdir */

static char tmpdir[64];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void tmpdir_cleanup(void)
{
    if (tmpdir[0])
        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *t_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/sstest-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            /* the machine's fault, not a missing feature: a hard error */
            fprintf(stderr, "ERROR: cannot make a temporary directory under /tmp: %s\n",
                    strerror(errno));
            exit(T_EXIT_ERROR);
        }
        atexit(tmpdir_cleanup);
    }
    return tmpdir;
}

/* ------------------------------------------------------------ patterns */

static unsigned char pattern_byte(uint64_t i, unsigned seed)
{
    /* varies within a page and across pages, so a misplaced page shows */
    return (unsigned char)((i * 131 + seed * 7 + (i >> 12)) & 0xff);
}

void t_fill(void *p, uint64_t n, unsigned seed)
{
    unsigned char *b = p;

    for (uint64_t i = 0; i < n; i++)
        b[i] = pattern_byte(i, seed);
}

bool t_check(const void *p, uint64_t n, unsigned seed)
{
    const unsigned char *b = p;

    for (uint64_t i = 0; i < n; i++)
        if (b[i] != pattern_byte(i, seed))
            return false;
    return true;
}

uint64_t t_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void t_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int t_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -errno;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own fd */
}

ss_stats t_store_stats(ss_client *c)
{
    ss_stats st;

    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    st.version = SS_STATS_VERSION;
    t_assert_ok(ss_stats_get(c, &st));
    return st;
}

int t_tight_store_options(unsigned cap_mb, const char *create_timeout)
{
    char cap[32];

    snprintf(cap, sizeof(cap), "%uM", cap_mb);
    if (ss_option_set(SS_OPT_CAPACITY, cap) != 0 || ss_option_set(SS_OPT_POOL_SIZE, "0") != 0 ||
        ss_option_set(SS_OPT_HUGEPAGES, "off") != 0 || ss_option_set(SS_OPT_EVICT, "off") != 0 ||
        ss_option_set(SS_OPT_SPILL_DIR, "off") != 0 ||
        ss_option_set(SS_OPT_CREATE_TIMEOUT, create_timeout) != 0)
        return -1;
    return 0;
}

void t_wait_clients(ss_client *c, uint64_t n)
{
    for (int i = 0; i < 100000; i++) {
        if (t_store_stats(c).clients == n)
            return;
        usleep(100);
    }
    fail_msg("the store still counts %llu clients, expected %llu",
             (unsigned long long)t_store_stats(c).clients, (unsigned long long)n);
}

int t_budget_charge(void *arg, int64_t delta)
{
    t_budget *b = arg;

    if (delta > 0 && b->used + delta > b->limit) {
        b->refused++;
        return -ENOSPC;
    }
    b->used += delta;
    assert_true(b->used >= 0);
    return 0;
}

ss_client *t_embed;
char t_embed_path[108];

int t_embed_setup(void **state)
{
    (void)state;
    snprintf(t_embed_path, sizeof(t_embed_path), "%s/store.sock", t_tmpdir());
    return ss_connect(t_embed_path, SS_CONNECT_EMBED, &t_embed) == 0 ? 0 : -1;
}

int t_embed_teardown(void **state)
{
    (void)state;
    ss_disconnect(t_embed);
    t_embed = NULL;
    return 0;
}

bool t_remote_reads_work(void)
{
    char src = 'x', dst = 0;
    struct iovec l = { &dst, 1 }, r = { &src, 1 };
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    bool ok;

    if (fd < 0)
        return errno != ENOSYS;
    ok = syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) == 0 || errno != ENOSYS;
    close(fd);
    return ok && (process_vm_readv(getpid(), &l, 1, &r, 1, 0) == 1 || errno != ENOSYS);
}

static uint64_t rnd_state;

void t_rnd_seed(uint64_t seed)
{
    rnd_state = seed;
}

uint64_t t_rnd(void)
{
    uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double t_rnd01(void)
{
    return (double)(t_rnd() >> 11) / 9007199254740992.0;
}

bool t_under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");

    return p && strstr(p, "vgpreload") != NULL;
}
