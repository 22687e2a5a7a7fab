/* SPDX-License-Identifier: MIT */
/*
 * The small helpers every part of the library uses: the growing array
 * (ss__array_grow, SS_ARRAY_RESERVE in internal.h) and the error channel of
 * the OS-call layer (sys.h: >= 0 or -errno, pointers as ss__err_ptr).
 *
 * Checked: the capacity doubles from `first` (1 when 0) until it covers
 * need, never past `max`; elements past the old capacity are zeroed and the
 * old ones kept; a need already covered changes nothing; need > max, or a
 * byte size that overflows, is -ENOMEM with the array and its capacity
 * unchanged. The typed macro bounds the capacity by its counter's type
 * (uint8_t, uint32_t, size_t). The wrappers return -errno, not -1.
 *
 * The event loop's busy polling (loop.h, SEALSTORE_BUSY_POLL): off, a wait
 * never polls; on, an idle loop polls until the earliest hook deadline
 * (not past it) before it sleeps, and an fd already ready is served at the
 * first poll.
 */
#include "config.h"

#include "t_helpers.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "internal.h"
#include "loop.h"
#include "sys.h"

/* every byte equals the one before it, and the first is 0 */
static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;

    return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

static void test_grow_doubles_and_zeroes(void **state)
{
    void *arr = NULL;
    size_t cap = 0;
    uint64_t *v;
    (void)state;

    assert_int_equal(ss__array_grow(&arr, &cap, 5, sizeof(uint64_t), 4, SIZE_MAX), 0);
    assert_int_equal(cap, 8); /* 4, doubled once */
    assert_true(all_zero(arr, cap * sizeof(uint64_t)));
    v = arr;
    for (size_t i = 0; i < cap; i++)
        v[i] = i + 1;

    /* covered already: nothing moves */
    assert_int_equal(ss__array_grow(&arr, &cap, 8, sizeof(uint64_t), 4, SIZE_MAX), 0);
    assert_ptr_equal(arr, v);
    assert_int_equal(cap, 8);

    /* 8 -> 32 at once for a need of 17; old elements kept, new zeroed */
    assert_int_equal(ss__array_grow(&arr, &cap, 17, sizeof(uint64_t), 4, SIZE_MAX), 0);
    assert_int_equal(cap, 32);
    v = arr;
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(v[i], i + 1);
    assert_true(all_zero(v + 8, 24 * sizeof(uint64_t)));
    free(arr);

    /* first == 0 starts at 1 */
    arr = NULL;
    cap = 0;
    assert_int_equal(ss__array_grow(&arr, &cap, 3, 1, 0, SIZE_MAX), 0);
    assert_int_equal(cap, 4);
    free(arr);
}

static void test_grow_max_refuses(void **state)
{
    void *arr = NULL, *before;
    size_t cap = 0;
    (void)state;

    assert_int_equal(ss__array_grow(&arr, &cap, 5, 4, 4, 10), 0);
    assert_int_equal(cap, 8);
    memset(arr, 0xab, cap * 4);
    before = arr;

    /* need > max: refused, nothing changed */
    assert_int_equal(ss__array_grow(&arr, &cap, 11, 4, 4, 10), -ENOMEM);
    assert_ptr_equal(arr, before);
    assert_int_equal(cap, 8);
    for (size_t i = 0; i < cap * 4; i++)
        assert_int_equal(((unsigned char *)arr)[i], 0xab);

    /* doubling stops at max: 8 -> 10, not 16 */
    assert_int_equal(ss__array_grow(&arr, &cap, 9, 4, 4, 10), 0);
    assert_int_equal(cap, 10);
    assert_true(all_zero((unsigned char *)arr + 8 * 4, 2 * 4));
    before = arr;

    /* a byte size that overflows size_t: refused, nothing changed */
    assert_int_equal(ss__array_grow(&arr, &cap, SIZE_MAX / 2, 4, 4, SIZE_MAX), -ENOMEM);
    assert_ptr_equal(arr, before);
    assert_int_equal(cap, 10);
    free(arr);

    /* size 0 is refused too */
    arr = NULL;
    cap = 0;
    assert_int_equal(ss__array_grow(&arr, &cap, 1, 0, 4, SIZE_MAX), -ENOMEM);
    assert_null(arr);
    assert_int_equal(cap, 0);
}

static void test_reserve_typed(void **state)
{
    struct pair {
        uint32_t a, b;
    } *p = NULL, *before;
    uint32_t cap32 = 0;
    size_t capz = 0;
    uint8_t cap8 = 0;
    uint16_t *s = NULL;
    char *c = NULL;
    (void)state;

    /* uint32_t capacity */
    assert_int_equal(SS_ARRAY_RESERVE(p, cap32, 3, 2), 0);
    assert_int_equal(cap32, 4);
    assert_true(all_zero(p, 4 * sizeof(*p)));
    p[3] = (struct pair){ 7, 9 };
    assert_int_equal(SS_ARRAY_RESERVE(p, cap32, 5, 2), 0);
    assert_int_equal(cap32, 8);
    assert_int_equal(p[3].a, 7);
    assert_int_equal(p[3].b, 9);
    assert_true(all_zero(p + 4, 4 * sizeof(*p)));
    /* a need the counter cannot hold: refused, array and counter unchanged */
    before = p;
    assert_int_equal(SS_ARRAY_RESERVE(p, cap32, (size_t)UINT32_MAX + 1, 2), -ENOMEM);
    assert_ptr_equal(p, before);
    assert_int_equal(cap32, 8);
    free(p);

    /* size_t capacity */
    assert_int_equal(SS_ARRAY_RESERVE(c, capz, 100, 16), 0);
    assert_int_equal(capz, 128);
    assert_true(all_zero(c, capz));
    free(c);

    /* uint8_t capacity: doubling stops at 255 */
    assert_int_equal(SS_ARRAY_RESERVE(s, cap8, 129, 128), 0);
    assert_int_equal(cap8, 255);
    assert_true(all_zero(s, 255 * sizeof(*s)));
    assert_int_equal(SS_ARRAY_RESERVE(s, cap8, 256, 128), -ENOMEM);
    assert_int_equal(cap8, 255);
    free(s);
}

static void test_sys_errors(void **state)
{
    struct stat st;
    uint64_t v = 0;
    struct dirent *e;
    int efd, n = 0, n2 = 0;
    DIR *d;
    (void)state;

    assert_int_equal(ss__sys_fstat(-1, &st), -EBADF);
    {
        struct statx sx;

        assert_int_equal(ss__sys_statx(-1, "", AT_EMPTY_PATH, STATX_SIZE, &sx), -EBADF);
        assert_int_equal(ss__sys_statx(AT_FDCWD, "/", 0, STATX_TYPE, &sx), 0);
        assert_true(S_ISDIR(sx.stx_mode));
    }
    assert_int_equal(ss__sys_close(-1), -EBADF);
    assert_int_equal(ss__sys_open("/nonexistent/x", O_RDONLY, 0), -ENOENT);
    assert_int_equal(ss__ptr_err(ss__sys_opendir("/nonexistent/x")), -ENOENT);
    assert_int_equal(ss__sys_read(-1, &v, sizeof(v)), -EBADF);

    efd = ss__sys_eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(efd >= 0);
    assert_int_equal(ss__sys_eventfd_read(efd, &v), -EAGAIN);
    errno = 1234;
    assert_int_equal(ss__sys_eventfd_write(efd, 3), 0);
    assert_int_equal(errno, 1234); /* kept: it may run in a signal handler */
    assert_int_equal(ss__sys_eventfd_read(efd, &v), 0);
    assert_int_equal(v, 3);

    /* a reopened stream reads from the start even after dirfd was read */
    int dfd = ss__sys_open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    assert_true(dfd >= 0);
    d = ss__sys_dir_reopen(dfd);
    assert_false(ss__is_err(d));
    while (ss__sys_readdir(d, &e) == 1)
        n++;
    assert_int_equal(ss__sys_closedir(d), 0);
    d = ss__sys_dir_reopen(dfd);
    assert_false(ss__is_err(d));
    int rc;
    while ((rc = ss__sys_readdir(d, &e)) == 1)
        n2++;
    assert_int_equal(rc, 0);
    assert_int_equal(ss__sys_closedir(d), 0);
    assert_true(n >= 2); /* . and .. at least */
    assert_int_equal(n, n2);
    assert_int_equal(ss__ptr_err(ss__sys_dir_reopen(-1)), -EBADF);
    assert_int_equal(ss__sys_close(dfd), 0);
    assert_int_equal(ss__sys_close(efd), 0);
}

/* A loop with one deadline hook that stops the loop once it is due. */
typedef struct t_loop {
    ss__loop l;
    ss__loop_hook h;
    uint64_t due;
    unsigned fired;
} t_loop;

static uint64_t t_loop_deadline(void *arg, uint64_t now)
{
    (void)now;
    return ((t_loop *)arg)->due;
}

static void t_loop_turn(void *arg, uint64_t now)
{
    t_loop *t = arg;

    if (now >= t->due)
        ss__loop_stop(&t->l);
}

static void t_loop_open(t_loop *t, uint64_t busy_ns, uint64_t due_in_ns)
{
    memset(t, 0, sizeof(*t));
    t_assert_ok(ss__loop_init(&t->l));
    t->l.spin = (ss__spin){ .ns = busy_ns };
    t->due = ss__now_ns() + due_in_ns;
    t->h = (ss__loop_hook){ t_loop_deadline, t_loop_turn, t, NULL };
    ss__loop_hook_add(&t->l, &t->h);
}

static void test_loop_busy_poll_off(void **state)
{
    t_loop t;
    (void)state;

    t_loop_open(&t, 0, 5 * 1000 * 1000);
    t_assert_ok(ss__loop_run(&t.l));
    assert_int_equal(t.l.spins, 0); /* it slept until the deadline */
    ss__loop_fini(&t.l);
}

static void test_loop_busy_poll_until_deadline(void **state)
{
    t_loop t;
    (void)state;

    /* a spin of 1 s, a deadline in 20 ms: the loop polls, then the hook
     * runs at its deadline and stops it (a spin past the deadline would
     * only delay that) */
    t_loop_open(&t, 1000ull * 1000 * 1000, 20 * 1000 * 1000);
    t_assert_ok(ss__loop_run(&t.l));
    assert_true(t.l.spins > 0);
    assert_true(ss__now_ns() >= t.due);
    ss__loop_fini(&t.l);
}

static void t_loop_ready(void *arg, uint32_t events)
{
    t_loop *t = arg;

    (void)events;
    t->fired++;
    ss__loop_stop(&t->l);
}

static void test_loop_busy_poll_serves_ready_fd(void **state)
{
    t_loop t;
    ss__loop_fd r;
    int efd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    (void)state;

    if (efd < 0)
        exit(T_EXIT_ERROR); /* the environment, not the loop */
    t_loop_open(&t, 1000ull * 1000 * 1000, UINT64_MAX / 2);
    t_assert_ok(ss__loop_add(&t.l, &r, efd, EPOLLIN, t_loop_ready, &t));
    t_assert_ok(ss__loop_run(&t.l));
    assert_int_equal(t.fired, 1);
    assert_int_equal(t.l.spins, 0); /* found at the first poll */
    ss__loop_del(&t.l, &r);
    ss__loop_fini(&t.l);
    close(efd);
}

/* SEALSTORE_BUSY_POLL's policy (internal.h): a duration spins at every
 * wait; auto spins 50 us (with more than one CPU) and, after 8 spins in a
 * row that found nothing, lets 16 waits sleep at once, then 32, 64, ... up
 * to 1024; a spin that finds its event resets the back-off. */
static void test_spin_policy(void **state)
{
    ss__spin sp;
    (void)state;

    ss__spin_init(&sp, 0);
    assert_int_equal(ss__spin_window(&sp), 0);
    ss__spin_init(&sp, 30);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(ss__spin_window(&sp), 30000);
        ss__spin_result(&sp, false); /* fixed: never backs off */
    }
    ss__spin_init(&sp, SS_SPIN_AUTO);
    if (sysconf(_SC_NPROCESSORS_ONLN) <= 1) {
        assert_int_equal(ss__spin_window(&sp), 0);
        return;
    }
    uint32_t skip = SS_SPIN_SKIP_MIN;
    for (int round = 0; round < 9; round++) {
        for (unsigned i = 0; i < SS_SPIN_MISSES; i++) {
            assert_int_equal(ss__spin_window(&sp), SS_SPIN_AUTO_NS);
            ss__spin_result(&sp, false);
        }
        for (uint32_t i = 0; i < skip; i++)
            assert_int_equal(ss__spin_window(&sp), 0);
        skip = skip < SS_SPIN_SKIP_MAX ? skip * 2 : SS_SPIN_SKIP_MAX;
    }
    /* a hit resets both the misses and the back-off */
    for (unsigned i = 0; i < SS_SPIN_MISSES - 1; i++) {
        assert_int_equal(ss__spin_window(&sp), SS_SPIN_AUTO_NS);
        ss__spin_result(&sp, false);
    }
    assert_int_equal(ss__spin_window(&sp), SS_SPIN_AUTO_NS);
    ss__spin_result(&sp, true);
    for (unsigned i = 0; i < SS_SPIN_MISSES; i++) {
        assert_int_equal(ss__spin_window(&sp), SS_SPIN_AUTO_NS);
        ss__spin_result(&sp, false);
    }
    for (uint32_t i = 0; i < SS_SPIN_SKIP_MIN; i++)
        assert_int_equal(ss__spin_window(&sp), 0);
    assert_int_equal(ss__spin_window(&sp), SS_SPIN_AUTO_NS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spin_policy),
        cmocka_unit_test(test_grow_doubles_and_zeroes),
        cmocka_unit_test(test_grow_max_refuses),
        cmocka_unit_test(test_reserve_typed),
        cmocka_unit_test(test_sys_errors),
        cmocka_unit_test(test_loop_busy_poll_off),
        cmocka_unit_test(test_loop_busy_poll_until_deadline),
        cmocka_unit_test(test_loop_busy_poll_serves_ready_fd),
    };

    return t_run(tests, NULL, NULL);
}
