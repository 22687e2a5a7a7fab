/* SPDX-License-Identifier: MIT */
/*
 * Several processes around one store, through the public API only.
 *
 * The store is embedded in this process (SS_CONNECT_EMBED on a socket in
 * t_tmpdir()); other processes are forked children that connect afresh.
 * A forked child of the host inherits the host's handle (dead in the
 * child: -ENOTCONN) and, for the tests that play an outside reader, closes
 * every inherited fd first so it holds only what the store sends it.
 *
 * Covered: producer and consumer share the same physical pages (pagemap
 * PFNs, as root); a reader cannot write through a view nor make any fd of
 * an object writable, also as uid 65534; a blocking get in one process
 * woken by a seal in another; the embedded store used by a forked child;
 * dozens of processes churning thousands of objects with the store's fds,
 * objects and resident bytes back to baseline; a creator killed mid-create;
 * the store killed (errors, no SIGPIPE, views readable, release unmaps); a
 * 64 MiB object on 2 MiB hugepages when the pool has pages.
 *
 * The store runs without a populator pool (SEALSTORE_POOL_SIZE=0), so its
 * fd count and resident bytes have exact baselines.
 *
 * Hugepage case: as root it reserves 2 MiB pages itself (t_hugetlb_reserve,
 * restored at exit); otherwise raise vm.nr_hugepages (48 free pages).
 */
#define _GNU_SOURCE
#include "sealstore.h"
#include "t_helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned id_counter;

static ss_id new_id(void)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "mp-%u-%u", (unsigned)getpid(), ++id_counter);
    return id;
}




static void put_obj(ss_client *c, const ss_id *id, uint64_t size, unsigned seed)
{
    void *buf = malloc(size ? size : 1);

    assert_non_null(buf);
    t_fill(buf, size, seed);
    t_assert_ok(ss_put(c, id, buf, size, NULL, 0));
    free(buf);
}


/* Stats once the populator has stopped moving: two readings 50 ms apart
 * agree on resident and pool bytes (at most ~3 s). */
static ss_stats settled_stats(ss_client *c)
{
    ss_stats a = t_store_stats(c), b;

    for (int i = 0; i < 60; i++) {
        t_sleep_ms(50);
        b = t_store_stats(c);
        if (b.resident_bytes == a.resident_bytes && b.pool_ready_bytes == a.pool_ready_bytes &&
            b.objects == a.objects)
            return b;
        a = b;
    }
    return a;
}


/* ------------------------------------------------------------ children */

/* In a child: report a failed check and exit non-zero (never return into
 * cmocka, never run the parent's atexit handlers). */
#define CHK(cond)                                                             \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "child %d: check failed at line %d: %s\n",        \
                    (int)getpid(), __LINE__, #cond);                          \
            _exit(1);                                                         \
        }                                                                     \
    } while (0)

static pid_t fork_child(void (*fn)(void *), void *arg)
{
    pid_t pid;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    return pid;
}

static void wait_ok(pid_t pid)
{
    int st;

    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child %d: %s %d", (int)pid, WIFEXITED(st) ? "exit" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* An outside reader holds only what the store gives it: drop the host's
 * inherited fds (the store's own, and the dead handle's socket). */
static void close_inherited(int keep)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int dfd = d ? dirfd(d) : -1;
    int fds[1024], n = 0;

    if (!d)
        _exit(3);
    while ((e = readdir(d)) && n < 1024) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd > 2 && fd != dfd && fd != keep)
            fds[n++] = fd;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static ss_client *child_connect(void)
{
    ss_client *c = NULL;
    int rc = ss_connect(t_embed_path, 0, &c);

    if (rc != 0)
        fprintf(stderr, "child connect: %s\n", ss_strerror(rc));
    CHK(rc == 0);
    return c;
}

/* ------------------------------------------------------- fault probes */

static sigjmp_buf fault_jmp;

static void on_fault(int sig)
{
    (void)sig;
    siglongjmp(fault_jmp, 1);
}

/* write: store the byte's own value back; read: load it */
static bool access_faults(const void *p, bool write)
{
    struct sigaction sa, old_segv, old_bus;
    volatile bool faulted = false;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    if (sigsetjmp(fault_jmp, 1) == 0) {
        volatile unsigned char *b = (volatile unsigned char *)p;
        unsigned char v = *b;
        if (write)
            *b = v;
    } else {
        faulted = true;
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return faulted;
}

/* Is p inside any mapping of this process? (/proc/self/maps: no fault
 * needed, so valgrind has nothing to report) */
static bool is_mapped(const void *p)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    bool found = false;

    if (!f)
        return true;
    while (!found && fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;

        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo && (uintptr_t)p < hi)
            found = true;
    }
    fclose(f);
    return found;
}

/* ------------------------------------------------------- shared pages */

/* Physical frame of the page holding p (touched first), 0 if the kernel
 * hides PFNs from us (not CAP_SYS_ADMIN). */
static uint64_t pfn_of(const void *p)
{
    long pg = sysconf(_SC_PAGESIZE);
    uint64_t e = 0;
    int fd;

    (void)*(const volatile unsigned char *)p;
    fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (pread(fd, &e, sizeof(e), (off_t)((uintptr_t)p / (uintptr_t)pg * sizeof(e))) !=
        (ssize_t)sizeof(e))
        e = 0;
    close(fd);
    if (!(e >> 63))
        return 0;
    return e & ((1ull << 55) - 1);
}

struct pages_arg {
    ss_id big, small;
    int pipe_w;
};

static void child_pages(void *a)
{
    struct pages_arg *pa = a;
    ss_client *c;
    ss_object o[2];
    uint64_t pfn[3];

    close_inherited(pa->pipe_w);
    c = child_connect();
    CHK(ss_get(c, (ss_id[]){ pa->big, pa->small }, 2, 0, o) == 2);
    CHK(t_check(o[0].data, 2 << 20, 1) && t_check(o[1].data, 1000, 2));
    pfn[0] = pfn_of(o[0].data);
    pfn[1] = pfn_of((const char *)o[0].data + (1 << 20));
    pfn[2] = pfn_of(o[1].data);
    CHK(write(pa->pipe_w, pfn, sizeof(pfn)) == (ssize_t)sizeof(pfn));
    ss_disconnect(c);
}

static void test_shared_pages(void **state)
{
    struct pages_arg pa;
    ss_object o;
    uint64_t child_pfn[3], mine[3];
    void *p;
    int fds[2];
    pid_t pid;
    (void)state;

    pa.big = new_id();
    pa.small = new_id();
    t_assert_ok(ss_create(t_embed, &pa.big, 2 << 20, NULL, 0, &p));
    t_fill(p, 2 << 20, 1);
    t_assert_ok(ss_seal(t_embed, &pa.big));
    put_obj(t_embed, &pa.small, 1000, 2);
    assert_int_equal(ss_get(t_embed, &pa.small, 1, 0, &o), 1);

    assert_int_equal(pipe(fds), 0);
    pa.pipe_w = fds[1];
    pid = fork_child(child_pages, &pa);
    close(fds[1]);
    assert_int_equal(read(fds[0], child_pfn, sizeof(child_pfn)), (ssize_t)sizeof(child_pfn));
    close(fds[0]);
    wait_ok(pid);

    /* the producer's own pointer (written in place) and the consumer's view */
    mine[0] = pfn_of(p);
    mine[1] = pfn_of((char *)p + (1 << 20));
    mine[2] = pfn_of(o.data);
    t_assert_ok(ss_release(t_embed, &pa.small));
    t_assert_ok(ss_release(t_embed, &pa.big));
    t_assert_ok(ss_delete(t_embed, &pa.big));
    t_assert_ok(ss_delete(t_embed, &pa.small));
    T_SKIP_IF(mine[0] == 0 || child_pfn[0] == 0, NULL,
              "pagemap shows no PFNs (needs CAP_SYS_ADMIN; none under valgrind)");
    assert_int_equal(mine[0], child_pfn[0]);
    assert_int_equal(mine[1], child_pfn[1]);
    assert_int_equal(mine[2], child_pfn[2]);
}

/* --------------------------------------------------- no write path */

/* Open the mapping that contains p through /proc/self/map_files (root
 * only), read-only, as if it were an fd the store had sent us. */
static int open_mapping_of(const void *p)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int fd = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char path[128];

        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
            continue;
        if ((uintptr_t)p < lo || (uintptr_t)p >= hi)
            continue;
        if (!strstr(line, "/memfd:"))
            break;
        snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", lo, hi);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        break;
    }
    fclose(f);
    return fd;
}

/* Every write path on an fd of a sealed object fails. */
static void attack_fd(int fd)
{
    struct stat st;
    void *m;

    CHK(fstat(fd, &st) == 0);
    m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHK(m == MAP_FAILED);
    m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (m != MAP_FAILED) {
        CHK(mprotect(m, 4096, PROT_READ | PROT_WRITE) != 0);
        munmap(m, 4096);
    }
    CHK(pwrite(fd, "x", 1, 0) < 0);
    CHK(write(fd, "x", 1) < 0);
    CHK(ftruncate(fd, 0) < 0);
    CHK(ftruncate(fd, st.st_size + 4096) < 0);
    CHK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) < 0);
    CHK(fallocate(fd, 0, st.st_size, 4096) < 0);
}

/* Make an fd writable by any route: reopen O_RDWR through /proc (may
 * open on a sealed memfd, but must give no write path). */
static int attack_reopen(int fd)
{
    char p[64];
    int rw;

    snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
    rw = open(p, O_RDWR | O_CLOEXEC);
    if (rw < 0)
        return 0;
    attack_fd(rw);
    close(rw);
    return 1;
}

struct reader_arg {
    ss_id ids[3];
    uint64_t sizes[3];
    bool drop;
};

static void child_reader(void *a)
{
    struct reader_arg *ra = a;
    ss_client *c;
    ss_object o[3];
    int fds[6], nfd = 0, reopened = 0;

    close_inherited(-1);
    c = child_connect();
    CHK(ss_get(c, ra->ids, 3, 0, o) == 3);
    /* as root, hold an fd of every view's memfd (data and meta) */
    for (int i = 0; i < 3; i++) {
        int fd = open_mapping_of(o[i].data);
        CHK(fd >= 0);
        fds[nfd++] = fd;
        if (o[i].meta) {
            fd = open_mapping_of(o[i].meta);
            CHK(fd >= 0);
            fds[nfd++] = fd;
        }
    }
    if (ra->drop) {
        CHK(setgroups(0, NULL) == 0);
        CHK(setgid(65534) == 0 && setuid(65534) == 0);
        CHK(getuid() == 65534 && geteuid() == 65534);
        /* setuid clears it; stay dumpable so /proc/self/fd reopens are
         * possible: the harder case */
        CHK(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0);
    }
    for (int i = 0; i < 3; i++) {
        long pg = sysconf(_SC_PAGESIZE);
        void *base = (void *)((uintptr_t)o[i].data / (uintptr_t)pg * (uintptr_t)pg);

        CHK(t_check(o[i].data, ra->sizes[i], 10 + (unsigned)i));
        CHK(access_faults(o[i].data, true));
        CHK(access_faults((const char *)o[i].data + ra->sizes[i] - 1, true));
        CHK(mprotect(base, (size_t)pg, PROT_READ | PROT_WRITE) != 0);
        if (o[i].meta)
            CHK(access_faults(o[i].meta, true));
    }
    for (int i = 0; i < nfd; i++) {
        attack_fd(fds[i]);
        reopened += attack_reopen(fds[i]);
    }
    /* fds the library itself holds, if any */
    {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *e;
        CHK(d);
        while ((e = readdir(d))) {
            char p[64], t[256];
            ssize_t n;
            int fd = atoi(e->d_name);
            bool ours = false;

            if (e->d_name[0] == '.')
                continue;
            for (int i = 0; i < nfd; i++)
                ours |= fds[i] == fd;
            snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
            n = readlink(p, t, sizeof(t) - 1);
            if (ours || n <= 0)
                continue;
            t[n] = 0;
            if (strncmp(t, "/memfd:", 7) == 0) {
                attack_fd(fd);
                reopened += attack_reopen(fd);
            }
        }
        closedir(d);
    }
    if (!ra->drop)
        CHK(reopened > 0); /* as root the reopen opens: the seals must hold */
    for (int i = 0; i < 3; i++)
        CHK(ss_release(c, &ra->ids[i]) == 0);
    ss_disconnect(c);
}

static void test_reader_cannot_write(void **state)
{
    struct reader_arg ra;
    void *p;
    (void)state;
    T_SKIP_IF(geteuid() != 0, NULL, "needs root (reads /proc/self/map_files, drops to uid 65534)");

    ra.sizes[0] = 3 << 20; /* its own segment, written in place */
    ra.sizes[1] = 5000;    /* small, with meta */
    ra.sizes[2] = (1 << 20) + 3; /* its own segment, through ss_put */
    for (int i = 0; i < 3; i++)
        ra.ids[i] = new_id();
    t_assert_ok(ss_create(t_embed, &ra.ids[0], ra.sizes[0], "meta0", 5, &p));
    t_fill(p, ra.sizes[0], 10);
    t_assert_ok(ss_seal(t_embed, &ra.ids[0]));
    t_assert_ok(ss_release(t_embed, &ra.ids[0]));
    {
        void *b = malloc(ra.sizes[2]);
        assert_non_null(b);
        t_fill(b, ra.sizes[1], 11);
        t_assert_ok(ss_put(t_embed, &ra.ids[1], b, ra.sizes[1], "meta1", 5));
        t_fill(b, ra.sizes[2], 12);
        t_assert_ok(ss_put(t_embed, &ra.ids[2], b, ra.sizes[2], NULL, 0));
        free(b);
    }
    ra.drop = false;
    wait_ok(fork_child(child_reader, &ra));
    ra.drop = true;
    wait_ok(fork_child(child_reader, &ra));
    for (int i = 0; i < 3; i++)
        t_assert_ok(ss_delete(t_embed, &ra.ids[i]));
}

/* ------------------------------------------------- blocking, cross-process */

static void child_waiter(void *a)
{
    const ss_id *id = a;
    ss_client *c;
    ss_object o;

    close_inherited(-1);
    c = child_connect();
    CHK(ss_get(c, id, 1, -1, &o) == 1);
    CHK(o.size == (2 << 20) + 1 && t_check(o.data, o.size, 20));
    CHK(ss_release(c, id) == 0);
    ss_disconnect(c);
}

static void test_blocking_get_other_process(void **state)
{
    ss_id id = new_id();
    pid_t pid;
    void *p;
    (void)state;

    pid = fork_child(child_waiter, &id);
    t_sleep_ms(150); /* let it connect and park its get */
    t_assert_ok(ss_create(t_embed, &id, (2 << 20) + 1, NULL, 0, &p));
    t_fill(p, (2 << 20) + 1, 20);
    t_assert_ok(ss_seal(t_embed, &id));
    wait_ok(pid);
    t_assert_ok(ss_release(t_embed, &id));
    t_assert_ok(ss_delete(t_embed, &id));
}

/* ------------------------------------------------------ forked child */

struct fork_arg {
    ss_id sealed, big_unsealed, small_unsealed, from_child;
    const void *view;
    void *pbig, *psmall;
};

static void child_inherits(void *a)
{
    struct fork_arg *fa = a;
    ss_client *c;
    ss_object o;
    ss_stats st;
    ss_id id;
    void *p;
    int fd;

    /* the inherited handle is dead here: every call says so */
    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    st.version = SS_STATS_VERSION;
    CHK(ss_get(t_embed, &fa->sealed, 1, 0, &o) == -ENOTCONN);
    CHK(ss_put(t_embed, &fa->from_child, "x", 1, NULL, 0) == -ENOTCONN);
    CHK(ss_create(t_embed, &fa->from_child, 1, NULL, 0, &p) == -ENOTCONN);
    CHK(ss_seal(t_embed, &fa->big_unsealed) == -ENOTCONN);
    CHK(ss_abort(t_embed, &fa->small_unsealed) == -ENOTCONN);
    CHK(ss_release(t_embed, &fa->sealed) == -ENOTCONN);
    CHK(ss_contains(t_embed, &fa->sealed) == -ENOTCONN);
    CHK(ss_delete(t_embed, &fa->sealed) == -ENOTCONN);
    CHK(ss_stats_get(t_embed, &st) == -ENOTCONN);
    CHK(ss_subscribe(t_embed, SS_EVENT_SEALED, &fd) == -ENOTCONN);
    /* writable memory of unsealed objects is not inherited (MADV_DONTFORK) */
    CHK(!is_mapped(fa->pbig));
    CHK(!is_mapped(fa->psmall));

    /* a fresh connection works, to the store embedded in the parent */
    c = child_connect();
    CHK(ss_get(c, &fa->sealed, 1, 0, &o) == 1);
    CHK(t_check(o.data, 4096, 30));
    CHK(ss_release(c, &fa->sealed) == 0);
    CHK(ss_put(c, &fa->from_child, "child!", 6, NULL, 0) == 0);
    CHK(ss_contains(c, &fa->big_unsealed) == 0);
    /* the child's own writable mapping (a fork hands the library's fork
     * guard over in a usable state) */
    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "fork-child-%d", (int)getpid());
    CHK(ss_create(c, &id, 1 << 20, NULL, 0, &p) == 0);
    memset(p, 7, 1 << 20);
    CHK(ss_seal(c, &id) == 0 && ss_release(c, &id) == 0 && ss_delete(c, &id) == 0);
    ss_disconnect(c);
    /* dropping the inherited handle must not disturb the parent */
    ss_disconnect(t_embed);
}

static void test_forked_child(void **state)
{
    struct fork_arg fa;
    ss_object o;
    (void)state;

    fa.sealed = new_id();
    fa.big_unsealed = new_id();
    fa.small_unsealed = new_id();
    fa.from_child = new_id();
    put_obj(t_embed, &fa.sealed, 4096, 30);
    assert_int_equal(ss_get(t_embed, &fa.sealed, 1, 0, &o), 1);
    t_assert_ok(ss_create(t_embed, &fa.big_unsealed, 1 << 20, NULL, 0, &fa.pbig));
    t_assert_ok(ss_create(t_embed, &fa.small_unsealed, 100, NULL, 0, &fa.psmall));
    t_fill(fa.pbig, 1 << 20, 31);
    t_fill(fa.psmall, 100, 32);

    wait_ok(fork_child(child_inherits, &fa));

    /* the parent's handle, views and unsealed objects are intact */
    assert_true(t_check(o.data, 4096, 30));
    assert_true(t_check(fa.pbig, 1 << 20, 31));
    t_assert_ok(ss_seal(t_embed, &fa.big_unsealed));
    t_assert_ok(ss_seal(t_embed, &fa.small_unsealed));
    assert_int_equal(ss_get(t_embed, &fa.from_child, 1, 0, &o), 1);
    assert_int_equal(o.size, 6);
    assert_memory_equal(o.data, "child!", 6);
    t_assert_ok(ss_release(t_embed, &fa.from_child));
    t_assert_ok(ss_release(t_embed, &fa.sealed));
    t_assert_ok(ss_release(t_embed, &fa.big_unsealed));
    t_assert_ok(ss_release(t_embed, &fa.small_unsealed));
    t_assert_ok(ss_delete(t_embed, &fa.sealed));
    t_assert_ok(ss_delete(t_embed, &fa.big_unsealed));
    t_assert_ok(ss_delete(t_embed, &fa.small_unsealed));
    t_assert_ok(ss_delete(t_embed, &fa.from_child));
}

/* ------------------------------------------------------ embed race */

enum { RACERS = 4 };
struct embed_arg {
    char path[160];
    int me;
    int up[2];   /* child -> parent: "I see everyone" */
    int down[2]; /* parent -> children: EOF = disconnect now */
};

/* Several processes embedding a store on one path at once: one wins,
 * the others connect to it (-EADDRINUSE from the store means exactly
 * that), so every object is visible to every racer. */
static void child_embed(void *a)
{
    struct embed_arg *ea = a;
    ss_client *c;
    ss_id ids[RACERS];
    ss_object o[RACERS];
    char x = 1;
    int rc;

    close(ea->up[0]);
    close(ea->down[1]);
    rc = ss_connect(ea->path, SS_CONNECT_EMBED, &c);
    if (rc != 0)
        fprintf(stderr, "racer %d: %s\n", ea->me, ss_strerror(rc));
    CHK(rc == 0);
    for (int i = 0; i < RACERS; i++) {
        memset(&ids[i], 0, sizeof(ids[i]));
        snprintf((char *)ids[i].b, sizeof(ids[i].b), "racer-%d", i);
    }
    CHK(ss_put(c, &ids[ea->me], &ea->me, sizeof(ea->me), NULL, 0) == 0);
    CHK(ss_get(c, ids, RACERS, 10000, o) == RACERS);
    for (int i = 0; i < RACERS; i++)
        CHK(o[i].size == sizeof(int) && memcmp(o[i].data, &i, sizeof(int)) == 0);
    CHK(write(ea->up[1], &x, 1) == 1);
    CHK(read(ea->down[0], &x, 1) == 0);
    ss_disconnect(c);
}

static void test_embed_race(void **state)
{
    struct embed_arg ea;
    pid_t pids[RACERS];
    char x;
    (void)state;

#ifdef __SANITIZE_THREAD__
    /* The racers start embedded stores (threads) in children forked from
     * this multi-threaded process: ThreadSanitizer's runtime cannot follow
     * that (it dies, or reuses a live thread's id); the normal and
     * ASan builds run this case. */
    fprintf(stderr, "SKIP: ThreadSanitizer cannot start threads in a child of a "
                    "multi-threaded fork\n");
    skip();
#endif
    snprintf(ea.path, sizeof(ea.path), "%s/race.sock", t_tmpdir());
    assert_int_equal(pipe(ea.up), 0);
    assert_int_equal(pipe(ea.down), 0);
    for (int i = 0; i < RACERS; i++) {
        ea.me = i;
        pids[i] = fork_child(child_embed, &ea);
    }
    close(ea.up[1]);
    close(ea.down[0]);
    for (int i = 0; i < RACERS; i++)
        if (read(ea.up[0], &x, 1) != 1)
            break;
    close(ea.down[1]); /* everyone saw everyone: let them go */
    close(ea.up[0]);
    for (int i = 0; i < RACERS; i++)
        wait_ok(pids[i]);
}

/* -------------------------------------------------------------- churn */

enum { CHURN_PROCS = 24, CHURN_ITERS = 120 };

static int churn_go[2] = { -1, -1 }; /* read end: EOF once every child is forked */

static void child_churn(void *a)
{
    int me = (int)(intptr_t)a;
    static unsigned char buf[200 * 1024];
    ss_client *c;
    char x;

    /* Start together, after the last fork: a fork while this host's
     * embedded store populates a segment would hand the child the store's
     * transient writable mapping (see the report on segment.c), and the
     * churn is about the store, not about that. */
    close(churn_go[1]);
    CHK(read(churn_go[0], &x, 1) == 0);
    close_inherited(-1);
    c = child_connect();
    for (int i = 0; i < CHURN_ITERS; i++) {
        ss_id id, other;
        ss_object o[2];
        uint64_t size = i % 10 == 9 ? sizeof(buf) - (uint64_t)i : 64 + (uint64_t)((i * 97) % 8000);
        int n, rc;

        memset(&id, 0, sizeof(id));
        snprintf((char *)id.b, sizeof(id.b), "ch-%d-%d", me, i);
        other = id;
        snprintf((char *)other.b, sizeof(other.b), "ch-%d-%d", (me + 1) % CHURN_PROCS, i);
        t_fill(buf, size, (unsigned)(me * 1000 + i));
        rc = ss_put(c, &id, buf, size, NULL, 0);
        if (rc != 0)
            fprintf(stderr, "child %d: put %d of %llu bytes: %s\n", me, i,
                    (unsigned long long)size, ss_strerror(rc));
        CHK(rc == 0);
        n = ss_get(c, (ss_id[]){ id, other }, 2, 0, o);
        CHK(n >= 1 && o[0].size == size && t_check(o[0].data, size, (unsigned)(me * 1000 + i)));
        CHK(ss_release(c, &id) == 0);
        if (o[1].data)
            CHK(ss_release(c, &other) == 0);
        CHK(ss_delete(c, &id) == 0);
        if (i % 16 == 0) {
            void *p;
            CHK(ss_create(c, &id, i % 32 == 0 ? (300 << 10) : 100, NULL, 0, &p) == 0);
            CHK(ss_abort(c, &id) == 0);
        }
    }
    ss_disconnect(c);
}

static void test_churn(void **state)
{
    pid_t pids[CHURN_PROCS];
    ss_stats base, st;
    int fds0, fds1 = -1;
    ss_id warm = new_id();
    (void)state;

    /* warm up: the small allocator's first segment, the pool's classes */
    put_obj(t_embed, &warm, 500, 1);
    t_assert_ok(ss_delete(t_embed, &warm));
    put_obj(t_embed, &warm, 200000, 1);
    t_assert_ok(ss_delete(t_embed, &warm));
    base = settled_stats(t_embed);
    fds0 = t_count_fds();

    assert_int_equal(pipe(churn_go), 0);
    for (int i = 0; i < CHURN_PROCS; i++)
        pids[i] = fork_child(child_churn, (void *)(intptr_t)i);
    close(churn_go[0]);
    close(churn_go[1]);
    for (int i = 0; i < CHURN_PROCS; i++)
        wait_ok(pids[i]);

    /* the store notices the disconnects and the pool refills: wait a bit */
    for (int tries = 0; tries < 100; tries++) {
        st = settled_stats(t_embed);
        fds1 = t_count_fds();
        if (st.objects == base.objects && st.clients == base.clients &&
            st.resident_bytes <= base.resident_bytes && fds1 == fds0)
            break;
    }
    print_message("churn: %d processes x %d objects; resident %llu -> %llu, fds %d -> %d\n",
                  CHURN_PROCS, CHURN_ITERS, (unsigned long long)base.resident_bytes,
                  (unsigned long long)st.resident_bytes, fds0, fds1);
    assert_int_equal(st.objects, base.objects);
    assert_int_equal(st.clients, base.clients);
    assert_true(st.creates >= base.creates + CHURN_PROCS * CHURN_ITERS);
    assert_true(st.resident_bytes <= base.resident_bytes);
    assert_int_equal(fds1, fds0);
}

/* --------------------------------------------------- creator killed */

static void child_dies_creating(void *a)
{
    const ss_id *ids = a;
    ss_client *c;
    void *p, *q;

    close_inherited(-1);
    c = child_connect();
    CHK(ss_create(c, &ids[0], 8 << 20, NULL, 0, &p) == 0);
    CHK(ss_create(c, &ids[1], 1000, "m", 1, &q) == 0);
    memset(p, 1, 4 << 20);
    raise(SIGKILL);
}

static void test_creator_killed(void **state)
{
    ss_id ids[2] = { new_id(), new_id() };
    ss_stats base = settled_stats(t_embed), st;
    pid_t pid;
    int status, rc = -EEXIST;
    void *p;
    (void)state;

    pid = fork_child(child_dies_creating, ids);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* the store aborts its objects once it sees the connection go */
    for (int tries = 0; tries < 100 && rc == -EEXIST; tries++) {
        rc = ss_create(t_embed, &ids[0], 1 << 20, NULL, 0, &p);
        if (rc == -EEXIST)
            t_sleep_ms(20);
    }
    t_assert_ok(rc);
    t_assert_ok(ss_abort(t_embed, &ids[0]));
    assert_int_equal(ss_contains(t_embed, &ids[1]), 0);
    put_obj(t_embed, &ids[1], 10, 3);
    t_assert_ok(ss_delete(t_embed, &ids[1]));
    for (int tries = 0; tries < 20; tries++) {
        st = settled_stats(t_embed);
        if (st.objects == base.objects && st.resident_bytes <= base.resident_bytes)
            break;
    }
    assert_int_equal(st.objects, base.objects);
    assert_true(st.resident_bytes <= base.resident_bytes);
}

/* ------------------------------------------------------- store killed */

static void child_store(void *a)
{
    const char *path = a;
    ss_client *c;
    int rc = ss_connect(path, SS_CONNECT_EMBED, &c);

    CHK(rc == 0);
    for (;;)
        pause();
}

static void test_store_killed(void **state)
{
    char path[160], daemon[512];
    const char *bd = getenv("SS_BUILDDIR");
    ss_client *c = NULL;
    ss_id a = new_id(), b = new_id(), u = new_id(), x = new_id();
    ss_object o[2];
    void *p;
    pid_t pid;
    int rc, status;
    (void)state;

    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill this test */
    snprintf(path, sizeof(path), "%s/killed.sock", t_tmpdir());
    snprintf(daemon, sizeof(daemon), "%s/src/daemon/sealstored", bd ? bd : ".");
    fflush(NULL);
    if (access(daemon, X_OK) == 0) {
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            execl(daemon, daemon, "--socket", path, "--pool-size", "8M", "--capacity", "256M",
                  "--log", "error", (char *)NULL);
            _exit(127);
        }
        print_message("store: the daemon %s (pid %d)\n", daemon, (int)pid);
    } else {
        pid = fork_child(child_store, path);
        print_message("store: embedded in a child (pid %d): no daemon binary\n", (int)pid);
    }
    for (int tries = 0; tries < 250; tries++) {
        rc = ss_connect(path, 0, &c);
        if (rc == 0)
            break;
        t_sleep_ms(20);
    }
    t_assert_ok(rc);

    put_obj(c, &a, 3000, 40);
    put_obj(c, &b, (2 << 20) + 9, 41);
    assert_int_equal(ss_get(c, (ss_id[]){ a, b }, 2, 0, o), 2);
    t_assert_ok(ss_create(c, &u, 1 << 20, NULL, 0, &p));

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);

    /* errors, never SIGPIPE; the first call may or may not be the one that
     * notices, so try a few */
    rc = ss_put(c, &x, "x", 1, NULL, 0);
    assert_true(rc < 0);
    assert_true(ss_put(c, &x, "y", 1, NULL, 0) < 0);
    assert_true(ss_get(c, &a, 1, 0, o + 0) < 0);
    assert_true(ss_contains(c, &a) < 0);
    assert_true(ss_delete(c, &a) < 0);
    assert_true(ss_stats_get(c, &(ss_stats){ .size = sizeof(ss_stats),
                                             .version = SS_STATS_VERSION }) < 0);
    assert_true(ss_create(c, &x, 10, NULL, 0, &p) < 0);
    /* views stay readable */
    assert_true(t_check(o[0].data, 3000, 40));
    assert_true(t_check(o[1].data, (2 << 20) + 9, 41));
    /* release works, and unmaps the object's own segment */
    t_assert_ok(ss_release(c, &a));
    t_assert_ok(ss_release(c, &b));
    assert_false(is_mapped(o[1].data));
    assert_int_equal(ss_release(c, &a), -ENOENT);
    assert_true(ss_abort(c, &u) <= 0); /* cleans up locally either way */
    assert_int_equal(ss_abort(c, &u), -ENOENT);
    ss_disconnect(c);
}

/* ---------------------------------------------------------- hugepages */

static void test_hugepage_object(void **state)
{
    const uint64_t size = 64 << 20;
    char path[160], hp_was[16];
    ss_client *h, *h2;
    ss_id id = new_id();
    ss_object o;
    ss_stats st;
    long free_pages;
    void *p;
    (void)state;

    /* 32 pages for the first object, an arena for the put (up to 32), and slack */
    free_pages = t_hugetlb_reserve(2 << 20, 80);
    T_SKIP_IF(free_pages < 72, "hugepages",
              "cannot get 72 free 2 MiB hugepages (run as root, or raise vm.nr_hugepages)");
    /* its own store, started now, so it sees the pool as it is; make
     * check runs stores with SEALSTORE_HUGEPAGES=off, this one asks for
     * the default (the option beats the environment) */
    snprintf(path, sizeof(path), "%s/huge.sock", t_tmpdir());
    assert_true(ss_option_get(SS_OPT_HUGEPAGES, hp_was, sizeof(hp_was)) > 0);
    t_assert_ok(ss_option_set(SS_OPT_HUGEPAGES, "auto"));
    t_assert_ok(ss_connect(path, SS_CONNECT_EMBED, &h));
    t_assert_ok(ss_connect(path, 0, &h2));
    /* other test programs may resize the pool meanwhile: top it up again */
    free_pages = t_hugetlb_reserve(2 << 20, 72);
    if (free_pages < 67) {
        ss_disconnect(h2);
        ss_disconnect(h);
        T_SKIP_IF(true, "hugepages", "another test took the reserved hugepages meanwhile");
    }
    t_assert_ok(ss_create(h, &id, size, NULL, 0, &p));
    t_fill(p, size, 50);
    t_assert_ok(ss_seal(h, &id));
    assert_int_equal(t_kernel_page_size(p), 2 << 20);
    assert_int_equal(ss_get(h2, &id, 1, 0, &o), 1);
    assert_int_equal(t_kernel_page_size(o.data), 2 << 20);
    assert_true(t_check(o.data, size, 50));
    st = t_store_stats(h2);
    assert_true(st.bytes_by_backing[2] >= size);
    /* ss_put on hugetlb: the store copies it into an arena of 2 MiB pages */
    {
        ss_id id2 = new_id();
        ss_object o2;
        void *b = malloc(6 << 20);

        assert_non_null(b);
        t_fill(b, 6 << 20, 51);
        t_assert_ok(ss_put(h, &id2, b, 6 << 20, NULL, 0));
        free(b);
        assert_int_equal(ss_get(h2, &id2, 1, 0, &o2), 1);
        assert_int_equal(t_kernel_page_size(o2.data), 2 << 20);
        assert_true(t_check(o2.data, 6 << 20, 51));
        t_assert_ok(ss_release(h2, &id2));
        t_assert_ok(ss_delete(h, &id2));
    }
    t_assert_ok(ss_release(h2, &id));
    t_assert_ok(ss_release(h, &id));
    t_assert_ok(ss_delete(h, &id));
    ss_disconnect(h2);
    ss_disconnect(h);
    t_assert_ok(ss_option_set(SS_OPT_HUGEPAGES, hp_was));
}

/* ---------------------------------------------------- creator's uid */

#define OTHER_UID 65534 /* nobody / nogroup */

struct uid_arg {
    char path[108];
    ss_id ids[2];
};

/* As uid 65534: one small object through ss_put, one in its own segment. */
static void child_other_uid(void *a)
{
    struct uid_arg *ua = a;
    ss_client *c = NULL;
    void *p;
    int rc;

    close_inherited(-1);
    CHK(setgroups(0, NULL) == 0);
    CHK(setgid(OTHER_UID) == 0 && setuid(OTHER_UID) == 0);
    rc = ss_connect(ua->path, 0, &c);
    if (rc != 0)
        fprintf(stderr, "child connect as uid %d: %s\n", OTHER_UID, ss_strerror(rc));
    CHK(rc == 0);
    CHK(ss_put(c, &ua->ids[0], "abc", 3, NULL, 0) == 0);
    CHK(ss_create(c, &ua->ids[1], 1 << 20, "m", 1, &p) == 0);
    memset(p, 7, 1 << 20);
    CHK(ss_seal(c, &ua->ids[1]) == 0);
    CHK(ss_release(c, &ua->ids[1]) == 0);
    ss_disconnect(c);
}

/*
 * The store records who created each object (SO_PEERCRED) and every get
 * and list says so: a client of another uid, let in through
 * SEALSTORE_SOCKET_GROUP, creates two objects; this process (root) one.
 */
static void test_creator_uid(void **state)
{
    char dir[] = "/tmp/ss-uid-XXXXXX";
    struct uid_arg ua;
    ss_client *h = NULL;
    ss_object o[4];
    ss_obj_info info[64];
    ss_id ids[4];
    uint64_t cur = 0;
    int rc, listed = 0;

    (void)state;
    T_SKIP_IF(geteuid() != 0, NULL, "needs root to create objects as another uid (65534)");
    if (!mkdtemp(dir) || chmod(dir, 0711) != 0)
        fail_msg("temporary directory: %s", strerror(errno));
    snprintf(ua.path, sizeof(ua.path), "%s/s.sock", dir);
    for (int i = 0; i < 4; i++)
        ids[i] = new_id();
    ua.ids[0] = ids[0];
    ua.ids[1] = ids[1];
    /* a store of its own whose socket group lets uid 65534 in */
    t_assert_ok(ss_option_set(SS_OPT_SOCKET_GROUP, "65534"));
    rc = ss_connect(ua.path, SS_CONNECT_EMBED, &h);
    t_assert_ok(ss_option_set(SS_OPT_SOCKET_GROUP, ""));
    t_assert_ok(rc);
    t_assert_ok(ss_put(h, &ids[2], "mine", 4, NULL, 0));
    wait_ok(fork_child(child_other_uid, &ua));

    assert_int_equal(ss_get(h, ids, 4, 0, o), 3);
    assert_int_equal(o[0].uid, OTHER_UID);
    assert_int_equal(o[1].uid, OTHER_UID);
    assert_int_equal(o[2].uid, geteuid());
    assert_null(o[3].data); /* ids[3] was never created */
    assert_int_equal(o[3].uid, SS_UID_UNKNOWN);
    for (int i = 0; i < 3; i++)
        t_assert_ok(ss_release(h, &ids[i]));

    do {
        int n = ss_list(h, &cur, info, sizeof(info) / sizeof(info[0]));
        t_assert_ok(n);
        for (int i = 0; i < n; i++) {
            assert_int_equal(info[i].flags, 0);
            for (int k = 0; k < 3; k++) {
                if (memcmp(&info[i].id, &ids[k], sizeof(ss_id)) != 0)
                    continue;
                assert_int_equal(info[i].uid, k < 2 ? OTHER_UID : geteuid());
                listed++;
            }
        }
    } while (cur != 0);
    assert_int_equal(listed, 3);
    ss_disconnect(h);
    unlink(ua.path);
    snprintf(ua.path, sizeof(ua.path), "%s/s.sock.lock", dir);
    unlink(ua.path);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_pages),
        cmocka_unit_test(test_reader_cannot_write),
        cmocka_unit_test(test_blocking_get_other_process),
        cmocka_unit_test(test_forked_child),
        cmocka_unit_test(test_embed_race),
        cmocka_unit_test(test_churn),
        cmocka_unit_test(test_creator_killed),
        cmocka_unit_test(test_store_killed),
        cmocka_unit_test(test_hugepage_object),
        cmocka_unit_test(test_creator_uid),
    };

    /* No populator: its ready segments (fds and bytes) would move the
     * baselines the churn and kill cases compare against; t_lifecycle runs
     * with a pool. */
    /* creates up to 1M are staged, larger ones written in place (the
     * shared-pages case needs one of those) */
    if (ss_option_set(SS_OPT_POOL_SIZE, "0") != 0 || ss_option_set(SS_OPT_CAPACITY, "512M") != 0 ||
        ss_option_set(SS_OPT_STAGE_MAX, "1M") != 0)
        return T_EXIT_ERROR;
    return t_run(tests, t_embed_setup, t_embed_teardown);
}
