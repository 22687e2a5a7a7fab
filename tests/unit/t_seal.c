/* SPDX-License-Identifier: MIT */
/*
 * Seal sequences of segments (segment.h): what a write-sealed object segment and a FUTURE_WRITE-sealed
 * small segment still allow, through every fd and mapping a reader or a
 * hostile creator can get.
 *
 * Every case runs on 4K shmem and on 2 MiB hugetlb memfds. The hugetlb runs
 * need pages in the 2 MiB pool; as root the test reserves them itself (and
 * puts the pool back at exit). Otherwise provision first:
 *     echo 16 > /proc/sys/vm/nr_hugepages
 * Without them the hugetlb cases skip ("raise vm.nr_hugepages"), or fail
 * when SEALSTORE_TEST_REQUIRE contains "hugepages".
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../t_helpers.h"

#include "numa.h"
#include "options.h"
#include "segment.h"

#define HUGE_2M (2ull << 20)
#define NOBODY 65534
#define HUGE_PAGES_NEEDED 8 /* the most any one case maps at once, plus margin */

static bool no_hugetlb;
static char no_hugetlb_why[160];

struct variant {
    int hugepages; /* enum ss__hugepages */
    int backing;   /* what that gives */
    bool huge;
};
static struct variant v_shmem = {SS_HP_OFF, SS_BACKING_4K, false};
static struct variant v_huge = {SS_HP_2M, SS_BACKING_2M, true};

/* ------------------------------------------------------------- helpers */

/* Skip a hugetlb case when the machine has no pool, and make sure the pages
 * are free right now (other test programs change the pool too). */
static struct variant *need(void **state, long pages)
{
    struct variant *v = *state;

    if (v->huge) {
        long fr;

        T_SKIP_IF(no_hugetlb, "hugepages", no_hugetlb_why);
        fr = t_hugetlb_reserve(HUGE_2M, pages);
        if (fr < pages)
            fail_msg("could not reserve %ld 2 MiB pages (%ld)", pages, fr);
    }
    return v;
}

static uint64_t page_of(const struct variant *v)
{
    return v->huge ? HUGE_2M : 4096;
}

static void pattern(unsigned char *p, size_t n, unsigned seed)
{
    /* a few spots are enough to tell two fills apart; touching every byte
     * would cost time without adding coverage */
    for (size_t off = 0; off < n; off += 4093)
        p[off] = (unsigned char)(seed + off * 7);
    p[n - 1] = (unsigned char)(seed ^ 0x5a);
}

static bool pattern_ok(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t off = 0; off < n; off += 4093)
        if (p[off] != (unsigned char)(seed + off * 7))
            return false;
    return p[n - 1] == (unsigned char)(seed ^ 0x5a);
}

static void make_seg(ss__seg *seg, const struct variant *v, int kind, uint64_t size)
{
    ss__seg_params p = {
        .size = size, .hugepages = v->hugepages, .kind = kind, .numa = NULL,
        .node = SS_NODE_ANY,
    };

    t_assert_ok(ss__seg_create(seg, &p));
    assert_int_equal(seg->backing, v->backing);
    assert_int_equal(seg->page_size, page_of(v));
    assert_int_equal(seg->kind, kind);
    assert_true(seg->size >= size && seg->size % seg->page_size == 0);
    assert_true(seg->fd >= 0);
    if (kind == SS_SEG_SMALL)
        assert_non_null(seg->map);
    else
        assert_null(seg->map);
}

/* An object segment, size-sealed, filled through the creator's mapping
 * (unmapped again), not yet write-sealed. */
static void make_filled_object(ss__seg *seg, const struct variant *v, uint64_t size,
                               unsigned seed)
{
    unsigned char *w;

    make_seg(seg, v, SS_SEG_OBJECT, size);
    t_assert_ok(ss__seg_fix_size(seg, size));
    w = mmap(NULL, seg->size, PROT_READ | PROT_WRITE, MAP_SHARED, seg->fd, 0);
    assert_true(w != MAP_FAILED);
    pattern(w, seg->size, seed);
    assert_int_equal(munmap(w, seg->size), 0);
}

static const unsigned char *map_ro(int fd, uint64_t size)
{
    void *r = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);

    if (r == MAP_FAILED)
        fail_msg("mmap(PROT_READ, MAP_SHARED): %s", strerror(errno));
    return r;
}

/* Did `call` fail with `err`? (records which check failed in why_failed) */
static const char *why_failed;
static int got_errno;
#define EXPECT_FAIL(n, call, err)                                             \
    do {                                                                      \
        errno = 0;                                                            \
        if ((call) >= 0 || errno != (err)) {                                  \
            why_failed = #call " should fail with " #err;                     \
            got_errno = errno;                                                \
            return (n);                                                       \
        }                                                                     \
    } while (0)

/*
 * Every way to change a sealed object's bytes or size through `fd`; none may
 * work. `rdwr`: fd is O_RDWR (the seals stop it) rather than O_RDONLY (the
 * fd mode stops it). Returns 0, or the number of the first path that was
 * not refused as the seals promise (a child's exit code).
 */
static int no_write_path(int fd, bool rdwr, bool huge, uint64_t size)
{
    uint64_t pg = huge ? HUGE_2M : 4096;
    char c = 'x';
    void *p;
    int rc, e;

    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
        why_failed = "mmap(PROT_WRITE, MAP_SHARED) succeeded";
        return 1;
    }
    if (errno != (rdwr ? EPERM : EACCES)) {
        why_failed = "mmap(PROT_WRITE, MAP_SHARED): wrong errno";
        got_errno = errno;
        return 2;
    }
    p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        why_failed = "mmap(PROT_READ, MAP_SHARED) failed";
        got_errno = errno;
        return 3;
    }
    rc = mprotect(p, size, PROT_READ | PROT_WRITE);
    e = errno;
    munmap(p, size);
    if (rc == 0 || e != EACCES) {
        why_failed = "mprotect(RW) of a shared read-only mapping";
        got_errno = rc == 0 ? 0 : e;
        return 4;
    }
    /* hugetlbfs has no write(): EINVAL before any seal is looked at */
    EXPECT_FAIL(5, pwrite(fd, &c, 1, 0), rdwr ? (huge ? EINVAL : EPERM) : EBADF);
    EXPECT_FAIL(6, write(fd, &c, 1), rdwr ? (huge ? EINVAL : EPERM) : EBADF);
    EXPECT_FAIL(7, ftruncate(fd, (off_t)(size + pg)), rdwr ? EPERM : EINVAL);
    EXPECT_FAIL(8, ftruncate(fd, (off_t)(size - pg)), rdwr ? EPERM : EINVAL);
    EXPECT_FAIL(9, fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)pg),
                rdwr ? EPERM : EBADF);
    EXPECT_FAIL(10, fallocate(fd, 0, (off_t)size, (off_t)pg), rdwr ? EPERM : EBADF);
    EXPECT_FAIL(11, fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), EPERM);
    return 0;
}

static void assert_no_write_path(int fd, bool rdwr, bool huge, uint64_t size)
{
    int rc = no_write_path(fd, rdwr, huge, size);

    if (rc)
        fail_msg("write path %d open: %s (errno %d %s)", rc, why_failed, got_errno,
                 strerror(got_errno));
}

/* Open an O_RDWR description of the same file, as any holder of an fd can. */
static int reopen_rdwr(int fd)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    return open(path, O_RDWR | O_CLOEXEC);
}

/* --------------------------------------------------------------- cases */

/* The reader sees the creator's bytes in place: one copy of the data, seen
 * through two mappings, before and after the seal. */
static void t_same_bytes_two_mappings(void **state)
{
    struct variant *v = need(state, 2);
    uint64_t size = 2 * page_of(v);
    ss__seg seg;
    unsigned char *w;
    const unsigned char *r, *r2;
    int rfd;

    make_seg(&seg, v, SS_SEG_OBJECT, size);
    t_assert_ok(ss__seg_fix_size(&seg, size));
    rfd = ss__seg_reopen_ro(seg.fd);
    t_assert_ok(rfd);
    assert_int_equal(fcntl(rfd, F_GETFL) & O_ACCMODE, O_RDONLY);
    assert_int_not_equal(fcntl(rfd, F_GETFD) & FD_CLOEXEC, 0);

    w = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, seg.fd, 0);
    assert_true(w != MAP_FAILED);
    r = map_ro(rfd, seg.size);
    pattern(w, seg.size, 11);
    assert_true(pattern_ok(r, seg.size, 11));
    w[seg.size / 2] = 0xab; /* a later store shows through: no copy anywhere */
    assert_int_equal(r[seg.size / 2], 0xab);
    pattern(w, seg.size, 12);
    assert_int_equal(munmap(w, seg.size), 0);

    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    assert_true(ss__seals_object_ok(ss__seg_get_seals(seg.fd)));
    assert_true(ss__seals_object_ok(ss__seg_get_seals(rfd)));
    assert_true(pattern_ok(r, seg.size, 12));
    r2 = map_ro(rfd, seg.size);
    assert_true(pattern_ok(r2, seg.size, 12));

    munmap((void *)r, seg.size);
    munmap((void *)r2, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
}

/* A reader's O_RDONLY fd of a sealed object: no way to write or resize. */
static void t_reader_fd_no_write(void **state)
{
    struct variant *v = need(state, 2);
    ss__seg seg;
    int rfd;
    const unsigned char *r;

    make_filled_object(&seg, v, 2 * page_of(v), 21);
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    rfd = ss__seg_reopen_ro(seg.fd);
    t_assert_ok(rfd);
    assert_no_write_path(rfd, false, v->huge, seg.size);
    r = map_ro(rfd, seg.size);
    assert_true(pattern_ok(r, seg.size, 21));
    /* copy-on-write is allowed and never reaches the file */
    {
        unsigned char *cow = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, rfd, 0);

        assert_true(cow != MAP_FAILED);
        cow[0] ^= 0xff;
        assert_int_not_equal(cow[0], r[0]);
        munmap(cow, seg.size);
    }
    assert_true(pattern_ok(r, seg.size, 21));
    munmap((void *)r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
}

/* Even an O_RDWR description (reopened through /proc/self/fd, as root can)
 * and the creator's own fd give no write path once sealed. */
static void t_rdwr_reopen_no_write(void **state)
{
    struct variant *v = need(state, 2);
    ss__seg seg;
    int rfd, wfd;
    const unsigned char *r;

    make_filled_object(&seg, v, 2 * page_of(v), 31);
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    rfd = ss__seg_reopen_ro(seg.fd);
    t_assert_ok(rfd);
    wfd = reopen_rdwr(rfd);
    if (wfd < 0) {
        /* 0400 stops the reopen for a non-root uid: that is fine too */
        assert_int_equal(errno, EACCES);
        assert_int_not_equal(geteuid(), 0);
    } else {
        assert_int_equal(fcntl(wfd, F_GETFL) & O_ACCMODE, O_RDWR);
        assert_no_write_path(wfd, true, v->huge, seg.size);
        close(wfd);
    }
    assert_no_write_path(seg.fd, true, v->huge, seg.size);
    r = map_ro(rfd, seg.size);
    assert_true(pattern_ok(r, seg.size, 31));
    munmap((void *)r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
}

/* F_SEAL_WRITE waits for every mapping made from a writable fd to go,
 * PROT_READ ones and other processes' included; read-only-fd mappings do
 * not hold it up. A refused seal changes nothing. */
static void t_seal_write_busy(void **state)
{
    struct variant *v = need(state, 2);
    ss__seg seg;
    void *w, *pr;
    const unsigned char *r;
    int rfd, seals, to_child[2], to_parent[2];
    pid_t pid;
    char c;

    make_filled_object(&seg, v, 2 * page_of(v), 41);
    rfd = ss__seg_reopen_ro(seg.fd);
    t_assert_ok(rfd);
    r = map_ro(rfd, seg.size); /* kept mapped throughout */

    w = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, seg.fd, 0);
    assert_true(w != MAP_FAILED);
    t_assert_err(ss__seg_seal_write(seg.fd, seg.size), -EBUSY);
    seals = ss__seg_get_seals(seg.fd);
    t_assert_ok(seals);
    assert_int_equal(seals & (F_SEAL_WRITE | F_SEAL_SEAL), 0);
    assert_int_equal(munmap(w, seg.size), 0);

    /* VM_MAYWRITE counts: a PROT_READ mapping of the O_RDWR fd blocks too */
    pr = mmap(NULL, seg.size, PROT_READ, MAP_SHARED, seg.fd, 0);
    assert_true(pr != MAP_FAILED);
    t_assert_err(ss__seg_seal_write(seg.fd, seg.size), -EBUSY);
    assert_int_equal(munmap(pr, seg.size), 0);

    /* a writable mapping in another process (a forked child) blocks */
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(to_parent), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        void *cw = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, seg.fd, 0);

        c = cw == MAP_FAILED ? 'F' : 'M';
        (void)!write(to_parent[1], &c, 1);
        (void)!read(to_child[0], &c, 1);
        _exit(0);
    }
    assert_int_equal(read(to_parent[0], &c, 1), 1);
    assert_int_equal(c, 'M');
    t_assert_err(ss__seg_seal_write(seg.fd, seg.size), -EBUSY);
    assert_int_equal(write(to_child[1], "x", 1), 1);
    {
        int st;

        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    close(to_child[0]);
    close(to_child[1]);
    close(to_parent[0]);
    close(to_parent[1]);

    /* only the read-only-fd mapping is left: granted */
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    assert_true(ss__seals_object_ok(ss__seg_get_seals(seg.fd)));
    assert_true(pattern_ok(r, seg.size, 41));
    munmap((void *)r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
}

/* A creator holds a writable fd, so it can add seals of its own; any such
 * tampering must make the store's seal fail, never publish. */
static void t_creator_tampering(void **state)
{
    struct variant *v = need(state, 2);
    static const struct {
        int seals;
        const char *what;
    } tamper[] = {
        {F_SEAL_FUTURE_WRITE | F_SEAL_SEAL, "FUTURE_WRITE|SEAL"},
        {F_SEAL_SEAL, "SEAL"},
        {F_SEAL_FUTURE_WRITE, "FUTURE_WRITE (extra seal)"},
        {F_SEAL_WRITE | F_SEAL_SEAL, "WRITE|SEAL (sealed before the store)"},
    };

    for (size_t i = 0; i < SS_ARRAY_SIZE(tamper); i++) {
        ss__seg seg;
        int rc;

        make_filled_object(&seg, v, page_of(v), 51);
        assert_int_equal(fcntl(seg.fd, F_ADD_SEALS, tamper[i].seals), 0);
        rc = ss__seg_seal_write(seg.fd, seg.size);
        if (rc != -EPERM)
            fail_msg("creator added %s: seal_write = %d (%s), expected -EPERM", tamper[i].what,
                     rc, t_strerror(rc));
        /* WRITE|SEAL from the creator does leave the right seals, but the
         * store did not add them: the protocol still aborts */
        if (!(tamper[i].seals & F_SEAL_WRITE))
            assert_false(ss__seals_object_ok(ss__seg_get_seals(seg.fd)));
        ss__seg_destroy(&seg);
    }

    /* missing size seals (fix_size never ran) are tampering too */
    {
        ss__seg seg;

        make_seg(&seg, v, SS_SEG_OBJECT, page_of(v));
        t_assert_err(ss__seg_seal_write(seg.fd, seg.size), -EPERM);
        ss__seg_destroy(&seg);
    }
    /* the store's seal needs a writable fd */
    {
        ss__seg seg;
        int rfd;

        make_filled_object(&seg, v, page_of(v), 52);
        rfd = ss__seg_reopen_ro(seg.fd);
        t_assert_ok(rfd);
        t_assert_err(ss__seg_seal_write(rfd, seg.size), -EPERM);
        t_assert_ok(ss__seg_seal_write(seg.fd, seg.size)); /* nothing was changed */
        close(rfd);
        ss__seg_destroy(&seg);
    }
    t_assert_err(ss__seg_seal_write(-1, 4096), -EBADF);
}

/* fix_size: trims to the page, then nobody can resize (no SIGBUS for
 * readers) and the mode is 0400. */
static void t_size_seals(void **state)
{
    struct variant *v = need(state, 3);
    uint64_t pg = page_of(v);
    ss__seg seg;
    struct stat st;
    int seals;

    make_seg(&seg, v, SS_SEG_OBJECT, 3 * pg);
    assert_int_equal(seg.size, 3 * pg);
    t_assert_err(ss__seg_fix_size(&seg, 3 * pg + 1), -EINVAL);
    t_assert_err(ss__seg_fix_size(&seg, UINT64_MAX), -EINVAL);
    t_assert_ok(ss__seg_fix_size(&seg, pg + 1)); /* rounds up to two pages */
    assert_int_equal(seg.size, 2 * pg);
    assert_int_equal(fstat(seg.fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, 2 * pg);
    assert_int_equal(st.st_mode & 07777, 0400);
    seals = ss__seg_get_seals(seg.fd);
    t_assert_ok(seals);
    assert_int_equal(seals & SS_SEALS_SIZE, SS_SEALS_SIZE);
    assert_int_equal(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL), 0);

    errno = 0;
    assert_int_equal(ftruncate(seg.fd, (off_t)(3 * pg)), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(ftruncate(seg.fd, (off_t)pg), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(ftruncate(seg.fd, 0), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(ftruncate(seg.fd, (off_t)(2 * pg)), 0); /* same size: no change */
    assert_int_equal(fallocate(seg.fd, FALLOC_FL_KEEP_SIZE, (off_t)(2 * pg), (off_t)pg), -1);
    assert_int_equal(errno, EPERM);
    /* the size seals do not stop writing yet: that is the write seal's job */
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    assert_int_equal(ftruncate(seg.fd, (off_t)pg), -1);
    assert_int_equal(errno, EPERM);
    ss__seg_destroy(&seg);
}

/* seal_write allocates holes, so readers' faults cannot allocate memory
 * behind the store's accounting. */
static void t_seal_fills_holes(void **state)
{
    struct variant *v = need(state, 3);
    uint64_t pg = page_of(v);
    ss__seg seg;
    struct stat st;
    const unsigned char *r;
    int rfd;

    make_filled_object(&seg, v, 3 * pg, 61);
    /* the creator may punch a hole before the seal (it holds the fd) */
    assert_int_equal(fallocate(seg.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)pg,
                               (off_t)pg), 0);
    assert_int_equal(fstat(seg.fd, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 < seg.size);
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    assert_int_equal(fstat(seg.fd, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 >= seg.size);
    rfd = ss__seg_reopen_ro(seg.fd);
    t_assert_ok(rfd);
    r = map_ro(rfd, seg.size);
    assert_int_equal(r[pg], 0); /* the hole reads as zeros */
    assert_int_equal(r[0], (unsigned char)61);
    munmap((void *)r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
}

/* Small segments: after seal_small only the store's earlier mapping writes;
 * readers see its stores in place. */
static void t_small_seal(void **state)
{
    struct variant *v = need(state, 2);
    ss__seg seg;
    const unsigned char *r;
    unsigned char *m;
    void *p;
    int rfd, wfd, seals;
    char c = 'x';

    make_seg(&seg, v, SS_SEG_SMALL, 2 * page_of(v));
    m = seg.map;
    pattern(m, seg.size, 71);
    t_assert_err(ss__seg_fix_size(&seg, seg.size), -EINVAL); /* OBJECT only */
    t_assert_ok(ss__seg_seal_small(&seg));
    seals = ss__seg_get_seals(seg.fd);
    assert_true(ss__seals_small_ok(seals));
    assert_false(ss__seals_object_ok(seals));

    /* no new writable mapping, no write(), from any fd */
    errno = 0;
    p = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, seg.fd, 0);
    assert_true(p == MAP_FAILED);
    assert_int_equal(errno, EPERM);
    assert_int_equal(pwrite(seg.fd, &c, 1, 0), -1);
    assert_int_equal(errno, v->huge ? EINVAL : EPERM);
    assert_int_equal(ftruncate(seg.fd, (off_t)(seg.size * 2)), -1);
    assert_int_equal(errno, EPERM);
    wfd = reopen_rdwr(seg.fd);
    t_assert_ok(wfd < 0 ? -errno : wfd);
    p = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, wfd, 0);
    assert_true(p == MAP_FAILED);
    assert_int_equal(errno, EPERM);
    close(wfd);
    rfd = ss__seg_reopen_ro(seg.fd);
    t_assert_ok(rfd);
    r = map_ro(rfd, seg.size);
    assert_int_equal(mprotect((void *)r, seg.size, PROT_READ | PROT_WRITE), -1);
    assert_int_equal(errno, EACCES);
    assert_true(pattern_ok(r, seg.size, 71));

    /* the store's mapping still writes, in place */
    pattern(m, seg.size, 72);
    assert_true(pattern_ok(r, seg.size, 72));
    m[seg.size - 2] = 0x42;
    assert_int_equal(r[seg.size - 2], 0x42);

    /* no one can seal it further (F_SEAL_SEAL), not even the store */
    t_assert_err(ss__seg_seal_small(&seg), -EPERM);
    t_assert_err(ss__seg_seal_write(seg.fd, seg.size), -EPERM);
    munmap((void *)r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
    assert_int_equal(seg.fd, -1);
    assert_null(seg.map);
}

/* Is addr inside some mapping of this process? (/proc/self/maps) */
static int maps_has(const void *addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;

        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)addr >= lo &&
            (uintptr_t)addr < hi)
            found = 1;
    }
    fclose(f);
    return found;
}

/* A forked child does not inherit the store's writable small-segment
 * mapping (MADV_DONTFORK), while an ordinary mapping is inherited. */
static void t_small_dontfork(void **state)
{
    struct variant *v = need(state, 2);
    ss__seg seg;
    const unsigned char *r;
    pid_t pid;
    int st;

    make_seg(&seg, v, SS_SEG_SMALL, page_of(v));
    r = map_ro(seg.fd, seg.size); /* control: no MADV_DONTFORK */
    assert_int_equal(maps_has(seg.map), 1);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char vec[1];

        if (maps_has(r) != 1)
            _exit(10); /* the probe cannot see inherited mappings */
        if (maps_has(seg.map) != 0)
            _exit(11); /* the writable mapping was inherited */
        /* mincore: ENOMEM means the range is not mapped */
        if (mincore(seg.map, 4096, vec) == 0 || errno != ENOMEM)
            _exit(12);
        if (mincore((void *)r, 4096, vec) != 0)
            _exit(13);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) != 0)
        fail_msg("child reports %d (10: probe blind, 11/12: DONTFORK mapping inherited)",
                 WEXITSTATUS(st));
    munmap((void *)r, seg.size);
    ss__seg_destroy(&seg);
}

/* A reader running as another uid (nobody) that receives the read-only fd:
 * reopening O_RDWR may work or give EACCES, but no write path does. */
static void t_other_uid(void **state)
{
    struct variant *v = *state;
    ss__seg seg;
    int rfd, st;
    pid_t pid;

    T_SKIP_IF(geteuid() != 0, NULL, "needs root to switch to uid 65534");
    need(state, 2);
    make_filled_object(&seg, v, 2 * page_of(v), 81);
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    rfd = ss__seg_reopen_ro(seg.fd);
    t_assert_ok(rfd);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int wfd, rc;
        const unsigned char *r;

        /* the store's own fd must not reach the reader */
        close(seg.fd);
        if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
            _exit(90);
        /* stay dumpable, or /proc/self/fd turns root-owned and the test
         * would prove nothing about the memfd itself */
        if (prctl(PR_SET_DUMPABLE, 1) != 0)
            _exit(91);
        if (getuid() != NOBODY || geteuid() != NOBODY)
            _exit(92);
        rc = no_write_path(rfd, false, v->huge, seg.size);
        if (rc)
            _exit(20 + rc);
        {
            /* /proc/self/fd must be walkable, so an EACCES below comes
             * from the memfd's own mode, not from /proc */
            char path[64], link[256];

            snprintf(path, sizeof(path), "/proc/self/fd/%d", rfd);
            if (readlink(path, link, sizeof(link)) < 0)
                _exit(96);
        }
        wfd = reopen_rdwr(rfd);
        if (wfd >= 0) {
            rc = no_write_path(wfd, true, v->huge, seg.size);
            if (rc)
                _exit(40 + rc);
            close(wfd);
        } else if (errno != EACCES) {
            _exit(93);
        }
        r = mmap(NULL, seg.size, PROT_READ, MAP_SHARED, rfd, 0);
        if (r == MAP_FAILED)
            _exit(94);
        if (!pattern_ok(r, seg.size, 81))
            _exit(95);
        _exit(wfd >= 0 ? 1 : 0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) > 1)
        fail_msg("child as uid %d exited %d (2x: read-only fd path, 4x: O_RDWR reopen path, "
                 "9x: setup)",
                 NOBODY, WEXITSTATUS(st));
    print_message("uid %d: O_RDWR reopen %s; no write path either way\n", NOBODY,
                  WEXITSTATUS(st) ? "succeeded" : "refused (EACCES)");
    close(rfd);
    ss__seg_destroy(&seg);
}

/* Absurd requests fail cleanly; an empty object is one page; destroy is
 * idempotent and harmless on a zeroed segment. */
static void t_bad_args(void **state)
{
    ss__seg seg, zero;
    ss__seg_params p = {.size = 0, .hugepages = SS_HP_OFF, .kind = SS_SEG_SMALL,
                        .node = SS_NODE_ANY};
    int fl0;

    (void)state;
    t_assert_err(ss__seg_create(&seg, &p), -EINVAL); /* SMALL of size 0 */
    p.kind = SS_SEG_OBJECT;
    p.size = (1ull << 40) + 1;
    t_assert_err(ss__seg_create(&seg, &p), -EINVAL);
    p.size = UINT64_MAX;
    t_assert_err(ss__seg_create(&seg, &p), -EINVAL);
    p.hugepages = SS_HP_2M; /* rounding UINT64_MAX up must not wrap to 0 */
    t_assert_err(ss__seg_create(&seg, &p), -EINVAL);
    p.size = 4096;
    p.hugepages = 99;
    t_assert_err(ss__seg_create(&seg, &p), -EINVAL);
    p.hugepages = SS_HP_OFF;
    p.kind = 7;
    t_assert_err(ss__seg_create(&seg, &p), -EINVAL);
    t_assert_err(ss__seg_create(NULL, &p), -EINVAL);
    t_assert_err(ss__seg_create(&seg, NULL), -EINVAL);

    /* OBJECT of size 0: one 4K page, sealable like any other */
    p.kind = SS_SEG_OBJECT;
    p.size = 0;
    t_assert_ok(ss__seg_create(&seg, &p));
    assert_int_equal(seg.backing, SS_BACKING_4K);
    assert_int_equal(seg.size, 4096);
    t_assert_ok(ss__seg_fix_size(&seg, 0));
    assert_int_equal(seg.size, 4096);
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    assert_true(ss__seals_object_ok(ss__seg_get_seals(seg.fd)));
    ss__seg_destroy(&seg);
    assert_int_equal(seg.fd, -1);
    ss__seg_destroy(&seg); /* idempotent */
    t_assert_err(ss__seg_fix_size(&seg, 0), -EINVAL);
    t_assert_err(ss__seg_seal_small(&seg), -EINVAL);

    /* a zeroed segment has fd 0: destroying it must not close stdin */
    fl0 = fcntl(0, F_GETFD);
    memset(&zero, 0, sizeof(zero));
    ss__seg_destroy(&zero);
    assert_int_equal(fcntl(0, F_GETFD), fl0);
    ss__seg_destroy(NULL);

    t_assert_err(ss__seg_get_seals(-1), -EBADF);
    t_assert_err(ss__seg_reopen_ro(-1), -EBADF);
    assert_false(ss__seals_object_ok(-EBADF));
    assert_false(ss__seals_small_ok(-EBADF));
    assert_true(ss__seals_object_ok(SS_SEALS_OBJECT | F_SEAL_EXEC));
    assert_false(ss__seals_object_ok(SS_SEALS_OBJECT | F_SEAL_FUTURE_WRITE));
    assert_false(ss__seals_object_ok(SS_SEALS_OBJECT & ~F_SEAL_GROW));
    assert_true(ss__seals_small_ok(SS_SEALS_SMALL | F_SEAL_EXEC));
    assert_false(ss__seals_small_ok(SS_SEALS_SMALL | F_SEAL_WRITE));
}

/* ---------------------------------------------------------------- main */

/* Is there a 2 MiB hugetlb pool we can use? Probed once, before the group:
 * memfd_create(MFD_HUGETLB) proves only kernel support; reserving pages
 * proves there is memory. */
static void probe_hugetlb(void)
{
    long fr;

    if (!t_hugetlb_kernel(no_hugetlb_why, sizeof(no_hugetlb_why))) {
        no_hugetlb = true;
        return;
    }
    fr = t_hugetlb_reserve(HUGE_2M, HUGE_PAGES_NEEDED);
    if (fr == -EPERM || fr == -EACCES || (fr >= 0 && fr < HUGE_PAGES_NEEDED)) {
        no_hugetlb = true;
        snprintf(no_hugetlb_why, sizeof(no_hugetlb_why),
                 "%ld free 2 MiB pages, %d needed: raise vm.nr_hugepages", fr < 0 ? 0 : fr,
                 HUGE_PAGES_NEEDED);
    } else if (fr < 0) {
        fprintf(stderr, "t_hugetlb_reserve: %s\n", strerror((int)-fr));
        exit(T_EXIT_ERROR);
    }
}

/*
 * A host process (an embedded store's) may fork at any moment while the
 * store populates a segment through a writable mapping. If a child
 * inherited that mapping, F_SEAL_WRITE would fail with EBUSY while the
 * child lives. One thread forks children that linger while this thread
 * creates and seals segments: every seal must succeed.
 */
static atomic_bool forker_stop;

static void *forker(void *arg)
{
    (void)arg;
    while (!atomic_load(&forker_stop)) {
        pid_t pid = fork();
        if (pid == 0) {
            usleep(20000);
            _exit(0);
        }
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
    return NULL;
}

static void t_seal_while_forking(void **state)
{
    struct variant *v = need(state, 2);
    pthread_t th;
    int failures = 0;
    const int rounds = 150;

    atomic_store(&forker_stop, false);
    assert_int_equal(pthread_create(&th, NULL, forker, NULL), 0);
    for (int i = 0; i < rounds; i++) {
        ss__seg seg;
        ss__seg_params p = {.size = 2 * SS_MiB, .hugepages = v->hugepages,
                            .kind = SS_SEG_OBJECT, .numa = NULL, .node = SS_NODE_ANY};
        int rc;

        t_assert_ok(ss__seg_create(&seg, &p));
        t_assert_ok(ss__seg_fix_size(&seg, p.size));
        rc = ss__seg_seal_write(seg.fd, seg.size);
        if (rc == -EBUSY)
            failures++;
        else
            t_assert_ok(rc);
        ss__seg_destroy(&seg);
    }
    atomic_store(&forker_stop, true);
    pthread_join(th, NULL);
    if (failures)
        fail_msg("%d of %d seals refused (EBUSY): a forked child inherited a writable "
                 "mapping", failures, rounds);
}

#define BOTH(fn)                                                              \
    {#fn "/shmem", fn, NULL, NULL, &v_shmem}, {#fn "/hugetlb-2M", fn, NULL, NULL, &v_huge}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_bad_args),
        BOTH(t_same_bytes_two_mappings),
        BOTH(t_reader_fd_no_write),
        BOTH(t_rdwr_reopen_no_write),
        BOTH(t_seal_write_busy),
        BOTH(t_creator_tampering),
        BOTH(t_size_seals),
        BOTH(t_seal_fills_holes),
        BOTH(t_small_seal),
        BOTH(t_small_dontfork),
        BOTH(t_other_uid),
        BOTH(t_seal_while_forking),
    };

    probe_hugetlb();
    return t_run(tests, NULL, NULL);
}
