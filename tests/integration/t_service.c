/* SPDX-License-Identifier: MIT */
/*
 * sealstored as a service, without systemd: the test plays the service
 * manager.
 *
 * Readiness (sd_notify protocol): the daemon runs with NOTIFY_SOCKET naming
 * a datagram socket the test owns, a path or an abstract name ('@'). The
 * first datagram must carry READY=1 and must not come before the store
 * answers: the moment it arrives, one connect (no retry) must succeed and
 * the store must answer a request. SIGTERM brings STOPPING=1 and exit 0. A
 * store that cannot start sends no READY=1, only a STATUS= and ERRNO=.
 *
 * --reserve-hugepages (root; 2 MiB pool): the pool must return to exactly
 * its previous size after SIGTERM, after a start that fails once the pages
 * were added, and after SIGKILL once the daemon is started again (without
 * the flag: the crash record in STATE_DIRECTORY says what to give back). A
 * record from another boot is discarded, pool untouched. The cases hold
 * the test programs' pool lock (t_hugetlb_lock) so that no other test
 * program resizes the pool meanwhile, ask for 4 pages more than are free,
 * and put the pool back in their teardown whatever happened. Not root, or
 * no 2 MiB pool: those cases skip ("needs root" / "no 2 MiB hugetlb pool").
 *
 * The pool's size is its persistent pages (t_hugetlb_persistent), not what
 * nr_hugepages reads: programs outside the lock map free pages at any time
 * (stores of other tests on the default backing), and the pages they still
 * map when the daemon gives back stay in nr_hugepages as surplus pages
 * until they are unmapped. Two cases make that happen on purpose, holding
 * every free page themselves: while the daemon gives back, and before it
 * reserves (the daemon must not keep those surplus pages in the pool).
 *
 * Waiting is on events (datagrams, waitpid), never on time; the poll
 * timeouts only turn a hang into a failure.
 */
#include "config.h"

#include "t_helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#define HUGE_2M (2ull << 20)
#define HOLD_MAX 64   /* free pages a case maps at most (128 MiB) */
#define HANG_MS 60000 /* a daemon silent this long is hung, not slow */

static char g_daemon[4096];

typedef struct run {
    pid_t pid;
    int nfd;            /* our end of NOTIFY_SOCKET */
    char notify[108];   /* its address as NOTIFY_SOCKET spells it */
    char sock[256];     /* the store's socket */
    char state[256];    /* STATE_DIRECTORY */
    char spec[32];      /* --reserve-hugepages argument */
} run;

static run g_run = {.pid = -1, .nfd = -1};
static char g_ready[1024]; /* the last READY=1 notification */

/* A datagram socket at `addr` (a path, or '@' + abstract name). */
static int notify_socket(const char *addr)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(addr);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_true(n < sizeof(a.sun_path));
    memcpy(a.sun_path, addr, n);
    if (addr[0] == '@')
        a.sun_path[0] = '\0';
    if (bind(fd, (struct sockaddr *)&a,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (addr[0] != '@'))) < 0)
        fail_msg("bind %s: %s", addr, strerror(errno));
    return fd;
}

/* Start the daemon on r->sock with NOTIFY_SOCKET=r->notify; extra flags
 * (NULL-terminated) after the defaults. */
static void start(run *r, const char *const *extra)
{
    const char *argv[16];
    int n = 0;

    argv[n++] = g_daemon;
    while (extra && *extra && n < 14)
        argv[n++] = *extra++;
    argv[n] = NULL;
    r->pid = fork();
    assert_true(r->pid >= 0);
    if (r->pid == 0) {
        setenv("NOTIFY_SOCKET", r->notify, 1);
        setenv("SEALSTORE_SOCKET", r->sock, 1);
        setenv("SEALSTORE_SPILL_DIR", "off", 1);
        setenv("STATE_DIRECTORY", r->state, 1);
        execv(g_daemon, (char *const *)argv);
        _exit(127);
    }
}

/* The next datagram into buf, or "" when none came within ms. */
static void next_msg(run *r, char *buf, size_t len, int ms)
{
    struct pollfd p = {.fd = r->nfd, .events = POLLIN};
    ssize_t n = 0;

    buf[0] = '\0';
    if (poll(&p, 1, ms) == 1)
        n = recv(r->nfd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
}

/* Wait for the daemon to exit; its status. */
static int reap(run *r)
{
    int st;

    assert_int_equal(waitpid(r->pid, &st, 0), r->pid);
    r->pid = -1;
    return st;
}

/* Wait for the daemon to exit with `code`. */
static void expect_exit(run *r, int code)
{
    int st = reap(r);

    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), code);
}

static void setup_run(run *r, const char *name, bool abstract)
{
    const char *dir = t_tmpdir();

    r->pid = -1;
    if (abstract)
        snprintf(r->notify, sizeof(r->notify), "@sealstore-t-service-%d-%s", (int)getpid(),
                 name);
    else
        snprintf(r->notify, sizeof(r->notify), "%s/%s.notify", dir, name);
    snprintf(r->sock, sizeof(r->sock), "%s/%s.sock", dir, name);
    snprintf(r->state, sizeof(r->state), "%s/%s.state", dir, name);
    if (mkdir(r->state, 0700) < 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", r->state, strerror(errno));
    r->nfd = notify_socket(r->notify);
}

static int teardown_run(void **state)
{
    run *r = &g_run;

    (void)state;
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = -1;
    }
    if (r->nfd >= 0)
        close(r->nfd);
    r->nfd = -1;
    if (r->notify[0] == '/')
        unlink(r->notify);
    return 0;
}

/* READY=1 arrives first, and then the store answers at once. */
static void expect_ready(run *r)
{
    char msg[1024];
    ss_client *c = NULL;
    ss_stats st;

    next_msg(r, msg, sizeof(msg), HANG_MS);
    if (!strstr(msg, "READY=1"))
        fail_msg("first notification is not READY=1: \"%s\"", msg);
    if (!strstr(msg, "STATUS=serving ") || !strstr(msg, r->sock))
        fail_msg("READY=1 without a STATUS naming the socket: \"%s\"", msg);
    snprintf(g_ready, sizeof(g_ready), "%s", msg);
    /* one try, no retry: READY=1 promises the store answers now */
    t_assert_ok(ss_connect(r->sock, 0, &c));
    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    st.version = SS_STATS_VERSION;
    t_assert_ok(ss_stats_get(c, &st));
    ss_disconnect(c);
}

/* SIGTERM: STOPPING=1, then a clean exit. */
static void expect_stop(run *r)
{
    char msg[1024];

    assert_int_equal(kill(r->pid, SIGTERM), 0);
    next_msg(r, msg, sizeof(msg), HANG_MS);
    if (!strstr(msg, "STOPPING=1"))
        fail_msg("SIGTERM brought no STOPPING=1: \"%s\"", msg);
    expect_exit(r, 0);
}

static void notify_ready_stop(bool abstract)
{
    run *r = &g_run;

    setup_run(r, abstract ? "abstract" : "path", abstract);
    start(r, NULL);
    expect_ready(r);
    expect_stop(r);
}

static void t_notify_path(void **state)
{
    (void)state;
    notify_ready_stop(false);
}

static void t_notify_abstract(void **state)
{
    (void)state;
    notify_ready_stop(true);
}

/* A store that cannot start (its socket's directory does not exist) says
 * why and never READY=1. */
static void t_notify_failed_start(void **state)
{
    run *r = &g_run;
    char msg[1024];
    bool status = false;

    (void)state;
    setup_run(r, "fail", false);
    snprintf(r->sock, sizeof(r->sock), "%s/no/such/dir/s.sock", t_tmpdir());
    start(r, NULL);
    expect_exit(r, 1);
    /* it has exited: everything it sent is queued */
    for (next_msg(r, msg, sizeof(msg), 0); msg[0]; next_msg(r, msg, sizeof(msg), 0)) {
        if (strstr(msg, "READY=1"))
            fail_msg("a store that did not start sent READY=1: \"%s\"", msg);
        status |= strstr(msg, "STATUS=cannot start") && strstr(msg, "ERRNO=");
    }
    assert_true(status);
}

/* ------------------------------------------------------- hugepage pool */

static int g_lock = -1;
static long g_before = -1; /* persistent pages before the case; -1: not taken */
static void *g_hold;       /* pages the case maps itself (hold) */
static size_t g_hold_len;

/* The 2 MiB pool's persistent pages, what writing nr_hugepages sets. */
static long nr_only(void)
{
    return t_hugetlb_persistent(HUGE_2M);
}

static void set_nr(long v)
{
    char buf[32];
    int fd = open("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", O_WRONLY);
    int n = snprintf(buf, sizeof(buf), "%ld", v);

    if (fd >= 0) {
        if (write(fd, buf, (size_t)n) != n)
            fprintf(stderr, "warning: could not put nr_hugepages back to %ld\n", v);
        close(fd);
    }
}

/* Map and touch `pages` 2 MiB pages, as a program outside the pool lock
 * does; false when they are not free (someone took them meanwhile). A
 * pool that others made large is not held whole: skip. */
static bool hold(long pages)
{
    int fd = memfd_create("t-service-hold", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
    void *p;

    if (pages > HOLD_MAX) {
        close(fd);
        T_SKIP_IF(true, NULL, "the 2 MiB pool has more free pages than this case holds cheaply");
    }
    if (fd < 0)
        fail_msg("memfd_create(MFD_HUGETLB): %s", strerror(errno));
    g_hold_len = (size_t)pages * HUGE_2M;
    assert_int_equal(ftruncate(fd, (off_t)g_hold_len), 0);
    p = mmap(NULL, g_hold_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return false;
    memset(p, 1, g_hold_len);
    g_hold = p;
    return true;
}

static void unhold(void)
{
    if (g_hold)
        munmap(g_hold, g_hold_len);
    g_hold = NULL;
}

static long avail_now(void)
{
    long fr = t_hugetlb_free(HUGE_2M), rsv = t_hugetlb_resv(HUGE_2M);

    assert_true(fr >= 0 && rsv >= 0);
    return fr > rsv ? fr - rsv : 0;
}

/* r's --reserve-hugepages: 4 pages more than are free now. */
static void spec_beyond_free(run *r)
{
    snprintf(r->spec, sizeof(r->spec), "%ldM", (avail_now() + 4) * 2);
}

/* Root and a 2 MiB pool, or skip; then hold the pool lock, note the pool
 * and set up run `name` whose --reserve-hugepages asks 4 pages beyond what
 * is free. `sock`: its socket path instead of the default. */
static void reserving_run(run *r, const char *name, const char *sock)
{
    T_SKIP_IF(geteuid() != 0, "hugepages", "--reserve-hugepages needs root");
    T_SKIP_IF(nr_only() < 0, "hugepages", "no 2 MiB hugetlb pool in this kernel");
    g_lock = t_hugetlb_lock();
    g_before = nr_only();
    assert_true(g_before >= 0);
    setup_run(r, name, false);
    spec_beyond_free(r);
    if (sock)
        snprintf(r->sock, sizeof(r->sock), "%s", sock);
}

/* Start r reserving. */
static void start_reserving(run *r)
{
    const char *flags[] = {"--reserve-hugepages", r->spec, NULL};

    start(r, flags);
}

static int teardown_pool(void **state)
{
    teardown_run(state);
    unhold();
    if (g_before >= 0 && nr_only() != g_before) {
        fprintf(stderr, "restoring nr_hugepages %ld -> %ld\n", nr_only(), g_before);
        set_nr(g_before);
    }
    g_before = -1;
    t_hugetlb_unlock(g_lock);
    g_lock = -1;
    return 0;
}

/* Pages were added, as many as the daemon's READY status says it
 * reserved: 4, or more or fewer when a program outside the pool lock (a
 * store on the default backing) took or freed pages between our look at
 * the pool and the daemon's; none only when the kernel found no free
 * memory (skip: the machine is full, the daemon is not wrong). Returns
 * how many. */
static long expect_added(void)
{
    long now = nr_only(), said = 0;
    const char *p = strstr(g_ready, "; ");

    T_SKIP_IF(now >= 0 && now <= g_before, "hugepages",
              "the kernel could not find more 2 MiB pages");
    if (!p || sscanf(p, "; %ld 2 MiB hugepages reserved", &said) != 1)
        fail_msg("the pool grew by %ld pages, READY=1 says none reserved: \"%s\"",
                 now - g_before, g_ready);
    assert_int_equal(now - g_before, said);
    return said;
}

static void t_reserve_sigterm(void **state)
{
    run *r = &g_run;

    (void)state;
    reserving_run(r, "hp-term", NULL);
    start_reserving(r);
    expect_ready(r);
    (void)expect_added();
    expect_stop(r);
    assert_int_equal(nr_only(), g_before);
}

/* The pages are added before the store opens; a store that then cannot
 * start gives them back before it exits 1. */
static void t_reserve_failed_start(void **state)
{
    char sock[512];
    run *r = &g_run;

    (void)state;
    snprintf(sock, sizeof(sock), "%s/no/such/dir/s.sock", t_tmpdir());
    reserving_run(r, "hp-fail", sock);
    start_reserving(r);
    expect_exit(r, 1);
    assert_int_equal(nr_only(), g_before);
}

/* SIGKILL leaves the pages added; the next start (no flag) gives them
 * back from the record and then serves. */
static void t_reserve_sigkill_restart(void **state)
{
    run *r = &g_run;
    long added;

    (void)state;
    reserving_run(r, "hp-kill", NULL);
    /* a state directory whose parents do not exist yet (a default under a
     * prefix nobody made): the daemon makes them, or it keeps no record */
    assert_true(strlen(r->state) + 16 < sizeof(r->state));
    strcat(r->state, "/new/state");
    start_reserving(r);

    expect_ready(r);
    added = expect_added();
    assert_int_equal(kill(r->pid, SIGKILL), 0);
    assert_true(WIFSIGNALED(reap(r)));
    assert_int_equal(nr_only(), g_before + added);
    start(r, NULL);
    expect_ready(r);
    assert_int_equal(nr_only(), g_before);
    expect_stop(r);
    assert_int_equal(nr_only(), g_before);
}

/* Pages still mapped by another program when the daemon gives back stay
 * as surplus pages until unmapped: the pool's persistent pages are back at
 * once, and nothing is left when they are unmapped. */
static void t_reserve_pages_in_use_at_stop(void **state)
{
    run *r = &g_run;

    (void)state;
    reserving_run(r, "hp-inuse", NULL);
    start_reserving(r);
    expect_ready(r);
    (void)expect_added();
    T_SKIP_IF(!hold(avail_now()), "hugepages", "the free pages were taken meanwhile");
    expect_stop(r);
    assert_int_equal(nr_only(), g_before);
    unhold();
    assert_int_equal(nr_only(), g_before);
}

/* Surplus pages in use when the daemon starts: its raise turns them into
 * persistent pages, and its give-back must leave them surplus again, so
 * that the kernel frees them when they are unmapped; the pool must not
 * keep them. */
static void t_reserve_surplus_at_start(void **state)
{
    run *r = &g_run;

    (void)state;
    reserving_run(r, "hp-surplus", NULL);
    /* two pages more, every free page mapped, the pool lowered back: the
     * two are surplus pages in use */
    set_nr(g_before + 2);
    T_SKIP_IF(nr_only() < g_before + 2, "hugepages", "the kernel could not find 2 more 2 MiB pages");
    T_SKIP_IF(!hold(avail_now()), "hugepages", "the free pages were taken meanwhile");
    set_nr(g_before);
    assert_int_equal(nr_only(), g_before);
    T_SKIP_IF(t_hugetlb_surplus(HUGE_2M) < 2, "hugepages",
              "pages were unmapped meanwhile: no surplus pages to keep");
    spec_beyond_free(r);
    start_reserving(r);
    expect_ready(r);
    (void)expect_added();
    expect_stop(r);
    assert_int_equal(nr_only(), g_before);
    unhold();
    assert_int_equal(nr_only(), g_before);
}

/* A record written in another boot: the boot rebuilt the pool, so the
 * record is emptied and the pool left alone. */
static void t_reserve_record_other_boot(void **state)
{
    char rec[600];
    run *r = &g_run;
    FILE *f;
    struct stat st;
    int found = 0;

    (void)state;
    reserving_run(r, "hp-boot", NULL);
    /* a clean run leaves its (empty) record; the name is the daemon's
     * business, so find it */
    {
        DIR *d;
        struct dirent *e;

        start_reserving(r);
        expect_ready(r);
        expect_stop(r);
        assert_int_equal(nr_only(), g_before);
        d = opendir(r->state);
        assert_non_null(d);
        while ((e = readdir(d)))
            if (!strncmp(e->d_name, "hugepages-", 10) && strstr(e->d_name, ".reserve")) {
                snprintf(rec, sizeof(rec), "%s/%s", r->state, e->d_name);
                found++;
            }
        closedir(d);
    }
    assert_int_equal(found, 1);
    f = fopen(rec, "w");
    assert_non_null(f);
    fprintf(f, "sealstore-hugepages boot=00000000-0000-0000-0000-000000000000 "
               "page=2097152 added=5 pid=1\n");
    fclose(f);
    start(r, NULL);
    expect_ready(r);
    assert_int_equal(nr_only(), g_before);
    expect_stop(r);
    assert_int_equal(stat(rec, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(nr_only(), g_before);
}

int main(void)
{
    const char *b = getenv("SS_BUILDDIR");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(t_notify_path, teardown_run),
        cmocka_unit_test_teardown(t_notify_abstract, teardown_run),
        cmocka_unit_test_teardown(t_notify_failed_start, teardown_run),
        cmocka_unit_test_teardown(t_reserve_sigterm, teardown_pool),
        cmocka_unit_test_teardown(t_reserve_failed_start, teardown_pool),
        cmocka_unit_test_teardown(t_reserve_sigkill_restart, teardown_pool),
        cmocka_unit_test_teardown(t_reserve_record_other_boot, teardown_pool),
        cmocka_unit_test_teardown(t_reserve_pages_in_use_at_stop, teardown_pool),
        cmocka_unit_test_teardown(t_reserve_surplus_at_start, teardown_pool),
    };

    snprintf(g_daemon, sizeof(g_daemon), "%s/src/daemon/sealstored", b ? b : ".");
    if (access(g_daemon, X_OK) != 0)
        return t_skip_program(NULL, "no sealstored at %s (set SS_BUILDDIR)", g_daemon);
    return t_run(tests, NULL, NULL);
}
