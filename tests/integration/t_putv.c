/* SPDX-License-Identifier: MIT */
/*
 * ss_putv: a put of the concatenation of the caller's buffers, against a
 * store embedded in this process, with a second handle reading back.
 *
 * Covered: every size class (empty, small inline, the small limit, just
 * above it, a few MiB, over the store's chunking of large copies) in many
 * buffer shapes (one buffer, 4 KiB pieces, odd pieces, zero-length
 * pieces, SS_IOV_MAX pieces, pieces that straddle the page size) read
 * back byte-exact with their meta; argument errors; a buffer that is not
 * the caller's memory (-EFAULT, nothing stored, the handle still works);
 * creator-bound putv; the same id twice (-EEXIST); a reader's view of an
 * object in an arena stays intact while the object is deleted and new
 * ones are put (its place is reused only after the release); a store that
 * may not read the caller's memory (another uid, a process that is not
 * dumpable): the put still works, the library's own way.
 */
#include "config.h"

#include "sealstore.h"
#include "t_helpers.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned id_counter;

static ss_id new_id(void)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "pv-%u-%u", (unsigned)getpid(), ++id_counter);
    return id;
}

/* Cut buf[0..size) into pieces: 0 one buffer; else pieces of `piece`
 * bytes, every third one followed by a zero-length piece, at most max
 * pieces (the last takes the rest). Returns the count. */
static int cut(unsigned char *buf, uint64_t size, uint64_t piece, int max, struct iovec *iov)
{
    int n = 0;
    uint64_t off = 0;

    if (piece == 0) {
        iov[0] = (struct iovec){ buf, (size_t)size };
        return size ? 1 : 0;
    }
    while (off < size && n < max) {
        uint64_t len = size - off < piece || n == max - 1 ? size - off : piece;
        iov[n++] = (struct iovec){ buf + off, (size_t)len };
        off += len;
        if (n % 3 == 0 && n < max - 1 && off < size)
            iov[n++] = (struct iovec){ NULL, 0 };
    }
    return n;
}

static void put_and_check(uint64_t size, uint64_t piece, int max, bool with_meta)
{
    static const char meta[] = "putv-meta";
    struct iovec *iov = calloc(SS_IOV_MAX, sizeof(*iov));
    unsigned char *buf = malloc(size ? size : 1);
    unsigned seed = (unsigned)(size * 31 + piece + (uint64_t)max);
    ss_id id = new_id();
    ss_client *r = NULL;
    ss_object o;
    int n;

    assert_non_null(iov);
    assert_non_null(buf);
    t_fill(buf, size, seed);
    n = cut(buf, size, piece, max, iov);
    t_assert_ok(ss_putv(t_embed, &id, iov, n, with_meta ? meta : NULL,
                        with_meta ? sizeof(meta) : 0, 0));
    /* another client sees exactly the bytes, in order */
    t_assert_ok(ss_connect(t_embed_path, 0, &r));
    assert_int_equal(ss_get(r, &id, 1, 0, &o), 1);
    assert_int_equal(o.size, size);
    assert_true(t_check(o.data, size, seed));
    assert_int_equal(o.meta_size, with_meta ? sizeof(meta) : 0);
    if (with_meta)
        assert_memory_equal(o.meta, meta, sizeof(meta));
    t_assert_ok(ss_release(r, &id));
    t_assert_ok(ss_delete(r, &id));
    ss_disconnect(r);
    free(buf);
    free(iov);
}

static void test_shapes(void **state)
{
    static const uint64_t sizes[] = { 0, 1, 1000, 64 * 1024, 64 * 1024 + 1, 300 * 1000,
                                      3 * 1024 * 1024 + 7, 20 * 1024 * 1024 + 4095 };
    static const struct { uint64_t piece; int max; } shapes[] = {
        { 0, 1 }, { 4096, SS_IOV_MAX }, { 333, SS_IOV_MAX }, { 1, SS_IOV_MAX },
        { 5000, 7 }, { 4097, 1021 }, { 4097, 1022 },
    };
    (void)state;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        for (size_t j = 0; j < sizeof(shapes) / sizeof(shapes[0]); j++)
            put_and_check(sizes[i], shapes[j].piece, shapes[j].max, (i + j) % 2 == 0);
}

static void test_args(void **state)
{
    unsigned char b[16] = { 0 };
    struct iovec ok = { b, sizeof(b) }, nullbase = { NULL, 1 };
    struct iovec huge[2] = { { b, SIZE_MAX / 2 }, { b, 2 } };
    ss_id id = new_id();
    (void)state;

    assert_int_equal(ss_putv(NULL, &id, &ok, 1, NULL, 0, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, NULL, &ok, 1, NULL, 0, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, &ok, -1, NULL, 0, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, &ok, SS_IOV_MAX + 1, NULL, 0, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, NULL, 1, NULL, 0, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, &nullbase, 1, NULL, 0, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, huge, 2, NULL, 0, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, &ok, 1, NULL, 1, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, &ok, 1, b, 64 * 1024 + 1, 0), -EINVAL);
    assert_int_equal(ss_putv(t_embed, &id, &ok, 1, NULL, 0, 2), -EINVAL);
    assert_int_equal(ss_contains(t_embed, &id), 0);
    /* no buffers: an empty object */
    t_assert_ok(ss_putv(t_embed, &id, NULL, 0, NULL, 0, 0));
    assert_int_equal(ss_contains(t_embed, &id), 1);
    assert_int_equal(ss_putv(t_embed, &id, &ok, 1, NULL, 0, 0), -EEXIST);
    t_assert_ok(ss_delete(t_embed, &id));
}

/* A buffer that is not the caller's memory: -EFAULT, nothing stored,
 * the handle still works; for a small object and a large one. */
static void test_efault(void **state)
{
    static const uint64_t sizes[] = { 4096, 1024 * 1024, 16 * 1024 * 1024 };
    long pg = sysconf(_SC_PAGESIZE);
    (void)state;

    /* the kernel finds the bad buffer: the store's process_vm_readv, or
     * sendmsg for a small object. Where the store cannot read this
     * process (ENOSYS, e.g. under valgrind) the library copies large
     * buffers itself, and a bad one faults as memcpy would. */
    T_SKIP_IF(!t_remote_reads_work(), "process_vm_readv",
              "no process_vm_readv, pidfd_open or pidfd_send_signal here (ENOSYS)");

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t size = sizes[i];
        unsigned char *buf = malloc(size);
        /* a hole: mapped, then unmapped, so nothing else is there */
        unsigned char *hole = mmap(NULL, (size_t)pg * 4, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ss_id id = new_id();

        assert_non_null(buf);
        assert_true(hole != MAP_FAILED);
        assert_int_equal(munmap(hole, (size_t)pg * 4), 0);
        t_fill(buf, size, 7);
        struct iovec iov[3] = { { buf, (size_t)size / 2 }, { hole, (size_t)pg },
                                { buf + size / 2, (size_t)(size - size / 2) } };
        assert_int_equal(ss_putv(t_embed, &id, iov, 3, NULL, 0, 0), -EFAULT);
        assert_int_equal(ss_contains(t_embed, &id), 0);
        /* the id is free, the handle works */
        iov[1].iov_len = 0;
        t_assert_ok(ss_putv(t_embed, &id, iov, 3, NULL, 0, 0));
        assert_int_equal(ss_contains(t_embed, &id), 1);
        t_assert_ok(ss_delete(t_embed, &id));
        free(buf);
    }
}

/* Creator-bound: gone with its creator's connection. */
static void test_bound(void **state)
{
    static unsigned char buf[200 * 1024];
    struct iovec iov[2] = { { buf, 1000 }, { buf + 1000, sizeof(buf) - 1000 } };
    ss_id a = new_id(), b = new_id();
    ss_client *w = NULL;
    (void)state;

    t_fill(buf, sizeof(buf), 3);
    t_assert_ok(ss_connect(t_embed_path, 0, &w));
    t_assert_ok(ss_putv(w, &a, iov, 2, NULL, 0, SS_LIFETIME_CREATOR));
    t_assert_ok(ss_putv(w, &b, iov, 2, NULL, 0, 0));
    assert_int_equal(ss_contains(t_embed, &a), 1);
    ss_disconnect(w);
    t_wait_clients(t_embed, 1); /* the store has seen it go */
    assert_int_equal(ss_contains(t_embed, &a), 0);
    assert_int_equal(ss_contains(t_embed, &b), 1);
    t_assert_ok(ss_delete(t_embed, &b));
}

static ss_stats stats_of(ss_client *c)
{
    ss_stats st = { .size = sizeof(st), .version = SS_STATS_VERSION };

    t_assert_ok(ss_stats_get(c, &st));
    return st;
}

/* A view of an arena object stays intact while the object is deleted and
 * others take arena space; its place is reused only after the release. */
static void test_view_outlives_delete(void **state)
{
    enum { SIZE = 256 * 1024, N = 40 };
    unsigned char *buf = malloc(SIZE);
    ss_id a = new_id(), more[N];
    ss_client *r = NULL;
    ss_object o;
    (void)state;

    assert_non_null(buf);
    t_fill(buf, SIZE, 90);
    t_assert_ok(ss_put(t_embed, &a, buf, SIZE, NULL, 0));
    ss_stats st0 = stats_of(t_embed);
    /* (where the store cannot read this process, e.g. under valgrind, the
     * put went through a staging area: an arena object all the same) */
    assert_true(st0.arena_live_bytes >= SIZE);
    t_assert_ok(ss_connect(t_embed_path, 0, &r));
    assert_int_equal(ss_get(r, &a, 1, 0, &o), 1);
    t_assert_ok(ss_delete(t_embed, &a));
    /* others fill the arena; none may land on the held object's bytes */
    for (int i = 0; i < N; i++) {
        more[i] = new_id();
        t_fill(buf, SIZE, 100 + (unsigned)i);
        t_assert_ok(ss_put(t_embed, &more[i], buf, SIZE, NULL, 0));
        if (i % 2 == 0)
            t_assert_ok(ss_delete(t_embed, &more[i])); /* freed at once: reusable */
    }
    assert_true(t_check(o.data, SIZE, 90));
    /* still counted while held, gone once released */
    assert_true(stats_of(t_embed).arena_live_bytes >= (uint64_t)SIZE * (1 + N / 2));
    t_assert_ok(ss_release(r, &a));
    for (int i = 1; i < N; i += 2) {
        ss_object m;
        assert_int_equal(ss_get(r, &more[i], 1, 0, &m), 1);
        assert_true(t_check(m.data, SIZE, 100 + (unsigned)i));
        t_assert_ok(ss_release(r, &more[i]));
        t_assert_ok(ss_delete(r, &more[i]));
    }
    assert_int_equal(stats_of(t_embed).arena_live_bytes, st0.arena_live_bytes - SIZE);
    ss_disconnect(r);
    free(buf);
}

/* A producer killed while the store copies its puts: every object that
 * got in is whole, nothing else is left (no half-copied object, no
 * arena space or connection held). */
static void test_producer_killed(void **state)
{
    enum { SIZE = 24 << 20, ROUNDS = 4 };
    ss_stats st0 = stats_of(t_embed);
    (void)state;

    for (int round = 0; round < ROUNDS; round++) {
        int go[2];
        assert_int_equal(pipe(go), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            ss_client *h;
            unsigned char *buf = malloc(SIZE);
            if (!buf || ss_connect(t_embed_path, 0, &h) != 0)
                _exit(2);
            for (unsigned i = 0;; i++) {
                ss_id id;
                memset(&id, 0, sizeof(id));
                snprintf((char *)id.b, sizeof(id.b), "pk-%d-%u", round, i);
                t_fill(buf, SIZE, 1000u * (unsigned)round + i);
                if (i == 1)
                    (void)!write(go[1], "g", 1);
                if (ss_put(h, &id, buf, SIZE, NULL, 0) != 0)
                    _exit(3);
            }
        }
        char b;
        close(go[1]);
        assert_int_equal(read(go[0], &b, 1), 1); /* one put done, the next under way */
        usleep(1000 * (useconds_t)(round * 3));
        kill(pid, SIGKILL);
        int ws;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        assert_true(WIFSIGNALED(ws));
        close(go[0]);
        t_wait_clients(t_embed, 1);
        for (unsigned i = 0; i < 64; i++) {
            ss_id id;
            ss_object o;
            memset(&id, 0, sizeof(id));
            snprintf((char *)id.b, sizeof(id.b), "pk-%d-%u", round, i);
            if (ss_get(t_embed, &id, 1, 0, &o) != 1)
                continue;
            assert_int_equal(o.size, SIZE);
            assert_true(t_check(o.data, SIZE, 1000u * (unsigned)round + i));
            t_assert_ok(ss_release(t_embed, &id));
            t_assert_ok(ss_delete(t_embed, &id));
        }
    }
    /* a copy for a killed producer may still be in flight: the store
     * frees its object when it completes */
    ss_stats st = stats_of(t_embed);
    for (int i = 0; i < 5000 && st.objects != st0.objects; i++) {
        usleep(1000);
        st = stats_of(t_embed);
    }
    assert_int_equal(st.objects, st0.objects);
    assert_int_equal(st.arena_live_bytes, st0.arena_live_bytes);
}

/*
 * Stores that may not read a client's memory; the put still works (the
 * library writes a segment of its own) and the store read nothing from
 * the client. sealstored runs as a program of its own (an embedded store
 * in a forked child would inherit this process's state); the client is
 * uid 65534.
 *  - store as uid 65534, client not dumpable: the kernel refuses
 *    (process_vm_readv needs CAP_SYS_PTRACE then);
 *  - store as root, client dumpable (the kernel would allow it): the store
 *    refuses, as it reads with CAP_SYS_PTRACE only for root clients (the
 *    process sending a put need not be the one that connected).
 */
static void no_read_case(bool store_root)
{
    char dir[] = "/tmp/ss-putv-XXXXXX", path[128], daemon[4096];
    const char *b = getenv("SS_BUILDDIR");

    snprintf(daemon, sizeof(daemon), "%s/src/daemon/sealstored", b);
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chown(dir, 65534, 65534), 0);
    assert_int_equal(chmod(dir, 0711), 0);
    snprintf(path, sizeof(path), "%s/s.sock", dir);
    pid_t st = fork();
    assert_true(st >= 0);
    if (st == 0) {
        if (!store_root && (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
                            setresuid(65534, 65534, 65534)))
            _exit(120);
        execl(daemon, daemon, "--socket", path, "--pool-size", "0", "--capacity", "64M",
              "--socket-group", "65534", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 3000 && access(path, F_OK) != 0; i++)
        usleep(1000);
    pid_t cl = fork();
    assert_true(cl >= 0);
    if (cl == 0) {
        enum { SIZE = 1 << 20 };
        ss_client *h;
        ss_object o;
        ss_id id = new_id();
        unsigned char *buf = malloc(SIZE);
        if (!buf || setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
            setresuid(65534, 65534, 65534) || prctl(PR_SET_DUMPABLE, store_root ? 1 : 0) ||
            ss_connect(path, 0, &h) != 0)
            _exit(2);
        t_fill(buf, SIZE, 77);
        if (ss_put(h, &id, buf, SIZE, NULL, 0) != 0 || ss_get(h, &id, 1, 0, &o) != 1 ||
            !t_check(o.data, SIZE, 77) || ss_release(h, &id) != 0)
            _exit(3);
        ss_stats s = { .size = sizeof(s), .version = SS_STATS_VERSION };
        if (ss_stats_get(h, &s) != 0 || s.remote_puts != 0)
            _exit(4);
        ss_disconnect(h);
        free(buf);
        _exit(0);
    }
    int ws, ws2;
    assert_int_equal(waitpid(cl, &ws, 0), cl);
    kill(st, SIGTERM);
    assert_int_equal(waitpid(st, &ws2, 0), st);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
    unlink(path);
    rmdir(dir);
}

static void test_no_permission(void **state)
{
    (void)state;
    T_SKIP_IF(geteuid() != 0, "setuid", "needs root to run the store and client as uid 65534");
    T_SKIP_IF(!getenv("SS_BUILDDIR"), "sealstored", "SS_BUILDDIR is not set (run through make check)");
    no_read_case(false);
    no_read_case(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_efault),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_view_outlives_delete),
        cmocka_unit_test(test_producer_killed),
        cmocka_unit_test(test_no_permission),
    };

    if (t_tight_store_options(256, "30000") < 0)
        return T_EXIT_ERROR;
    return t_run(tests, t_embed_setup, t_embed_teardown);
}
