/* SPDX-License-Identifier: MIT */
/*
 * The sealstored daemon, run as a separate program on temporary sockets
 * (fork/exec of $SS_BUILDDIR/src/daemon/sealstored) and spoken to with raw
 * protocol messages: it answers HELLO; its socket is mode 0600 (0660 and
 * the group with SEALSTORE_SOCKET_GROUP); a second daemon on a live path
 * exits non-zero with a clear message and leaves the first serving; a stale
 * socket (SIGKILLed daemon, or a listener that never answers) is replaced,
 * and the old daemon's exit does not remove its successor's socket;
 * SIGTERM answers parked requests, exits 0 and removes the socket; a FIFO
 * named like a spill file neither blocks its start nor its SIGTERM; flags
 * beat the environment; --help lists every SEALSTORE_ option.
 *
 * Non-dumpable check: a non-dumpable process's /proc/PID/fd (like every
 * /proc/PID entry but the 0555 directory itself) is owned by root whatever
 * its uid (the kernel's task_dump_owner), so the daemon is run as uid 65534
 * and /proc/PID/fd's owner must be 0; a control process run the same way
 * but dumpable shows 65534. (As root, ptrace or /proc/PID/mem
 * would succeed anyway, and PR_GET_DUMPABLE can only be asked from inside.)
 */
#include "config.h"

#include "t_helpers.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
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

#include "proto.h"

static char g_daemon[4096];

/* ---------------------------------------------------------------- raw */

static int try_connect(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -errno;
    }
    return fd;
}

static void fill_hdr(ss__msg_hdr *h, uint16_t type, uint32_t req_id, uint32_t len)
{
    memset(h, 0, sizeof(*h));
    h->magic = SS_PROTO_MAGIC;
    h->version = SS_PROTO_VERSION;
    h->type = type;
    h->req_id = req_id;
    h->len = len;
}

/* Receive one message within timeout_ms: length, 0 at EOF, -ETIMEDOUT. */
static ssize_t recv_to(int fd, void *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    if (poll(&p, 1, timeout_ms) <= 0)
        return -ETIMEDOUT;
    ssize_t n = recv(fd, buf, cap, 0);
    return n < 0 ? -errno : n;
}

/* HELLO on a connected fd: 0 and *rep, or -errno. */
static int hello(int fd, ss__rep_hello *rep)
{
    struct {
        ss__msg_hdr h;
        ss__req_hello r;
    } m;
    unsigned char buf[256];

    memset(&m, 0, sizeof(m));
    fill_hdr(&m.h, SS_MSG_HELLO, 1, sizeof(m));
    m.r.pid = (uint32_t)getpid();
    if (send(fd, &m, sizeof(m), MSG_NOSIGNAL) != sizeof(m))
        return -errno;
    ssize_t n = recv_to(fd, buf, sizeof(buf), 2000);
    if (n < 0)
        return (int)n;
    if (n != sizeof(ss__msg_hdr) + sizeof(ss__rep_hello))
        return -EPROTO;
    ss__msg_hdr h;
    memcpy(&h, buf, sizeof(h));
    if (h.magic != SS_PROTO_MAGIC || h.type != SS_MSG_HELLO || h.req_id != 1 || h.status != 0 ||
        h.flags != SS_MSGF_REPLY)
        return -EPROTO;
    if (rep)
        memcpy(rep, buf + sizeof(h), sizeof(*rep));
    return 0;
}

/* A fresh connection answers HELLO. */
static int answers(const char *path, ss__rep_hello *rep)
{
    int fd = try_connect(path);

    if (fd < 0)
        return fd;
    int rc = hello(fd, rep);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------ daemons */

/* Every process a case starts, so that a failing case (cmocka leaves the
 * body at the failed assertion) still leaves no daemon behind. */
static pid_t g_children[32];
static char g_owned_dir[64]; /* t_nondumpable's directory under /tmp */
/* The hugetlb cases' pool lock and the free pages they hold: given back
 * by teardown, so a failing case cannot leave other programs waiting. */
static int g_pool_lock = -1;
static void *g_hold;
static size_t g_hold_len;

static void child_add(pid_t pid)
{
    for (size_t i = 0; i < SS_ARRAY_SIZE(g_children); i++)
        if (!g_children[i]) {
            g_children[i] = pid;
            return;
        }
}

static void child_forget(pid_t pid)
{
    for (size_t i = 0; i < SS_ARRAY_SIZE(g_children); i++)
        if (g_children[i] == pid)
            g_children[i] = 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(g_children); i++) {
        if (g_children[i] > 0) {
            kill(g_children[i], SIGCONT);
            kill(g_children[i], SIGKILL);
            waitpid(g_children[i], NULL, 0);
        }
        g_children[i] = 0;
    }
    if (g_hold) {
        munmap(g_hold, g_hold_len);
        g_hold = NULL;
    }
    if (g_pool_lock != -1) {
        t_hugetlb_unlock(g_pool_lock);
        g_pool_lock = -1;
    }
    if (g_owned_dir[0]) {
        char p[128];
        snprintf(p, sizeof(p), "%s/n.sock", g_owned_dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/n.sock.lock", g_owned_dir);
        unlink(p);
        rmdir(g_owned_dir);
        g_owned_dir[0] = '\0';
    }
    return 0;
}


typedef struct daemon_run {
    pid_t pid;
    char path[108];
    char errlog[512];
} daemon_run;

/* Start sealstored on `path` with small defaults plus `extra` flags;
 * stderr goes to a file. as_uid >= 0: drop to that uid/gid first. */
static void spawn(daemon_run *d, const char *path, const char *const *extra, int as_uid,
                  char *const *envp)
{
    const char *argv[32];
    int n = 0;
    static int seq;

    snprintf(d->path, sizeof(d->path), "%s", path);
    snprintf(d->errlog, sizeof(d->errlog), "%s/daemon-%d.err", t_tmpdir(), ++seq);
    argv[n++] = g_daemon;
    argv[n++] = "--socket";
    argv[n++] = path;
    argv[n++] = "--pool-size";
    argv[n++] = "0";
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid > 0)
        child_add(d->pid);
    if (d->pid == 0) {
        int fd = open(d->errlog, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        if (as_uid >= 0) {
            if (setgroups(0, NULL) < 0 || setgid((gid_t)as_uid) < 0 || setuid((uid_t)as_uid) < 0)
                _exit(120);
        }
        if (envp)
            execve(g_daemon, (char *const *)argv, envp);
        else
            execv(g_daemon, (char *const *)argv);
        _exit(127);
    }
}

/* Exit status of d (waits up to timeout_ms), or -ETIMEDOUT. */
static int wait_exit(daemon_run *d, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        int st;
        pid_t r = waitpid(d->pid, &st, WNOHANG);
        if (r == d->pid) {
            child_forget(d->pid);
            d->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    return -ETIMEDOUT;
}

static void wait_ready(daemon_run *d)
{
    for (int i = 0; i < 1000; i++) {
        if (answers(d->path, NULL) == 0)
            return;
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            child_forget(d->pid);
            d->pid = 0;
            fail_msg("sealstored exited (status 0x%x) before serving %s", st, d->path);
        }
        usleep(10000);
    }
    fail_msg("sealstored does not answer on %s", d->path);
}

static void stop_ok(daemon_run *d)
{
    assert_int_equal(kill(d->pid, SIGTERM), 0);
    assert_int_equal(wait_exit(d, 10000), 0);
}

static void read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;

    if (f) {
        n = fread(buf, 1, len - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

static const char *sock_path(const char *name)
{
    static char p[4][108];
    static int i;

    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", t_tmpdir(), name);
    return p[i];
}

/* -------------------------------------------------------------- cases */

static void t_serve_mode_stop(void **state)
{
    daemon_run d;
    struct stat st;
    char lock[160];

    (void)state;
    spawn(&d, sock_path("a.sock"), NULL, -1, NULL);
    wait_ready(&d);
    assert_int_equal(lstat(d.path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    /* no temporary directory left beside it */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "ls -a %s | grep -q '^.sealstore-'", t_tmpdir());
    assert_int_not_equal(system(cmd), 0);
    stop_ok(&d);
    assert_int_equal(lstat(d.path, &st), -1);
    assert_int_equal(errno, ENOENT);
    snprintf(lock, sizeof(lock), "%s.lock", d.path);
    assert_int_equal(lstat(lock, &st), -1);
}

static void t_second_refused(void **state)
{
    daemon_run a, b;
    char log[4096], want[256];

    (void)state;
    spawn(&a, sock_path("b.sock"), NULL, -1, NULL);
    wait_ready(&a);
    spawn(&b, a.path, NULL, -1, NULL);
    int rc = wait_exit(&b, 10000);
    assert_int_not_equal(rc, 0);
    assert_true(rc > 0 && rc < 128);
    read_file(b.errlog, log, sizeof(log));
    snprintf(want, sizeof(want), "another store is serving %s", a.path);
    if (!strstr(log, want))
        fail_msg("second daemon said: '%s'", log);
    /* the first keeps serving, on the same socket file */
    assert_int_equal(answers(a.path, NULL), 0);
    stop_ok(&a);
}

static void t_stale_replaced(void **state)
{
    daemon_run a, b;
    struct stat st1, st2;

    (void)state;
    /* a SIGKILLed daemon leaves its socket behind: stale */
    spawn(&a, sock_path("c.sock"), NULL, -1, NULL);
    wait_ready(&a);
    kill(a.pid, SIGKILL);
    assert_int_equal(wait_exit(&a, 10000), 128 + SIGKILL);
    assert_int_equal(lstat(a.path, &st1), 0);
    assert_int_equal(try_connect(a.path), -ECONNREFUSED);
    spawn(&b, a.path, NULL, -1, NULL);
    wait_ready(&b);
    assert_int_equal(lstat(b.path, &st2), 0);
    assert_true(st1.st_ino != st2.st_ino);
    assert_int_equal(st2.st_mode & 07777, 0600);

    /* a listener that accepts nothing (a stopped holder): connect works,
     * HELLO is never answered, so it is stale too. Its own exit later
     * must not remove the new socket. */
    kill(b.pid, SIGSTOP);
    daemon_run c;
    spawn(&c, b.path, NULL, -1, NULL);
    wait_ready(&c);
    kill(b.pid, SIGCONT);
    stop_ok(&b);
    assert_int_equal(answers(c.path, NULL), 0);
    stop_ok(&c);
    assert_int_equal(lstat(c.path, &st2), -1);
}

static void t_flags_beat_env(void **state)
{
    daemon_run d;
    ss__rep_hello rep;
    char *envp[] = { "SEALSTORE_CAPACITY=32M", "SEALSTORE_SMALL_MAX=4K", "SEALSTORE_LOG=warn",
                     NULL };
    const char *extra[] = { "--capacity", "48M", NULL };

    (void)state;
    spawn(&d, sock_path("d.sock"), extra, -1, envp);
    wait_ready(&d);
    assert_int_equal(answers(d.path, &rep), 0);
    assert_int_equal(rep.capacity, 48ull << 20);  /* flag */
    assert_int_equal(rep.small_max, 4096);         /* environment */
    stop_ok(&d);

    /* --flag=value form; a bad value and an unknown flag: usage errors */
    const char *eq[] = { "--capacity=40M", NULL };
    spawn(&d, sock_path("d.sock"), eq, -1, envp);
    wait_ready(&d);
    assert_int_equal(answers(d.path, &rep), 0);
    assert_int_equal(rep.capacity, 40ull << 20);
    stop_ok(&d);
    const char *bad[] = { "--capacity", "lots", NULL };
    spawn(&d, sock_path("d.sock"), bad, -1, NULL);
    assert_int_equal(wait_exit(&d, 10000), 2);
    const char *unk[] = { "--no-such-flag", "1", NULL };
    spawn(&d, sock_path("d.sock"), unk, -1, NULL);
    assert_int_equal(wait_exit(&d, 10000), 2);
}

/* The daemon's exit status for `flags` plus the environment `envp`
 * (NULL: the test's own), with what it said in out. */
static int run_to_exit(const char *const *flags, char *const *envp, char *out, size_t len)
{
    daemon_run d;

    spawn(&d, sock_path("v.sock"), flags, -1, envp);
    int rc = wait_exit(&d, 10000);
    read_file(d.errlog, out, len);
    return rc;
}

/* A bad value in a flag or a SEALSTORE_ variable is refused at start with
 * the flag or variable named (the library would warn and use the default:
 * a daemon silently running on half of RAM is worse). */
static void t_bad_values_refused(void **state)
{
    static const struct {
        const char *flag, *env, *value;
    } bad[] = {
        { "--capacity", "SEALSTORE_CAPACITY", "-5" },
        { "--capacity", "SEALSTORE_CAPACITY", "99999999T" },
        { "--capacity", "SEALSTORE_CAPACITY", "1.5G" },
        { "--small-max", "SEALSTORE_SMALL_MAX", "1M" },             /* over 64K */
        { "--spill-queue-depth", "SEALSTORE_SPILL_QUEUE_DEPTH", "0" }, /* 1 to 256 */
        { "--spill-queue-depth", "SEALSTORE_SPILL_QUEUE_DEPTH", "300" },
        { "--spill-high", "SEALSTORE_SPILL_HIGH", "101%" },
        { "--spill-high", "SEALSTORE_SPILL_HIGH", "lots" },
        { "--hugepages", "SEALSTORE_HUGEPAGES", "3M" },
        { "--numa", "SEALSTORE_NUMA", "node:x" },
        { "--log", "SEALSTORE_LOG", "loud" },
        { "--create-timeout", "SEALSTORE_CREATE_TIMEOUT", "2d" },
        { "--evict", "SEALSTORE_EVICT", "maybe" },
        { "--pool-classes", "SEALSTORE_POOL_CLASSES", "4M,1M" },
    };
    static char out[8192];
    char envbuf[128];

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
        const char *flags[] = { bad[i].flag, bad[i].value, NULL };
        int rc = run_to_exit(flags, NULL, out, sizeof(out));
        if (rc != 2 || !strstr(out, bad[i].flag) || !strstr(out, bad[i].value))
            fail_msg("%s %s: exit %d, said '%s'", bad[i].flag, bad[i].value, rc, out);

        /* the variable alone (no hugepages, no spilling, from flags) */
        snprintf(envbuf, sizeof(envbuf), "%s=%s", bad[i].env, bad[i].value);
        char *envp[] = { envbuf, NULL };
        const char *quiet[] = { "--spill-dir", "off", NULL };
        rc = run_to_exit(quiet, envp, out, sizeof(out));
        if (rc != 2 || !strstr(out, bad[i].env) || !strstr(out, bad[i].value))
            fail_msg("%s: exit %d, said '%s'", envbuf, rc, out);
    }

    /* good values, from both places, still serve */
    daemon_run d;
    ss__rep_hello rep;
    char *envp[] = { "SEALSTORE_CAPACITY=64M", "SEALSTORE_SPILL_QUEUE_DEPTH=256",
                     "SEALSTORE_SPILL_HIGH=80%", "SEALSTORE_SMALL_MAX=64K",
                     "SEALSTORE_HUGEPAGES=off", "SEALSTORE_SPILL_DIR=off", NULL };
    const char *flags[] = { "--small-max", "8K", "--spill-queue-depth", "1", NULL };
    spawn(&d, sock_path("v.sock"), flags, -1, envp);
    wait_ready(&d);
    assert_int_equal(answers(d.path, &rep), 0);
    assert_int_equal(rep.capacity, 64ull << 20);
    assert_int_equal(rep.small_max, 8192);
    stop_ok(&d);
}

/* ---------------------------------------------- explicit hugepage sizes */

/* An explicit backing that cannot be had fails the start (exit 1) and says
 * what is missing, instead of serving and refusing every create. */
static void expect_backing_refused(const char *size, const char *missing)
{
    static char out[8192];
    char want[64];
    const char *flags[] = { "--hugepages", size, NULL };

    int rc = run_to_exit(flags, NULL, out, sizeof(out));
    snprintf(want, sizeof(want), "SEALSTORE_HUGEPAGES=%s cannot be had", size);
    if (rc != 1 || !strstr(out, want) || !strstr(out, missing))
        fail_msg("--hugepages %s with none to have: exit %d, said '%s'", size, rc, out);
}

static void t_thp_refused_at_start(void **state)
{
    const char *mode = t_thp_shmem_mode();

    (void)state;
    /* changing shmem_enabled would change every other test's stores */
    T_SKIP_IF(strcmp(mode, "never") && strcmp(mode, "deny"), NULL,
              "shmem THP is enabled here (the case needs shmem_enabled never or deny)");
    expect_backing_refused("thp", "shmem_enabled");
}

/* Hugetlb pool of page_size with every free page held by a reservation of
 * ours, under the cross-program pool lock: the daemon sees an empty pool
 * whatever the machine has, and the pages are back when we unmap. */
static void hugetlb_refused_at_start(uint64_t page_size, const char *size, const char *missing)
{
    char why[160], over_path[160];

    if (!t_hugetlb_kernel(why, sizeof(why)))
        T_SKIP_IF(true, NULL, why);
    snprintf(over_path, sizeof(over_path),
             "/sys/kernel/mm/hugepages/hugepages-%llukB/nr_overcommit_hugepages",
             (unsigned long long)(page_size >> 10));
    T_SKIP_IF(access(over_path, R_OK) != 0, NULL, "the kernel has no pool of this page size");

    g_pool_lock = t_hugetlb_lock();
    long fr = t_hugetlb_free(page_size), resv = t_hugetlb_resv(page_size), over = 0;
    assert_true(fr >= 0 && resv >= 0);
    FILE *f = fopen(over_path, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld", &over), 1);
    fclose(f);
    /* surplus pages could be made for the daemon: no empty pool to show */
    T_SKIP_IF(over > 0, NULL, "nr_overcommit_hugepages is set: the pool cannot look empty");
    if (fr > resv) {
        int hfd = memfd_create("t-hold", MFD_CLOEXEC | MFD_HUGETLB |
                                             (page_size >= (1ull << 30) ? MFD_HUGE_1GB
                                                                        : MFD_HUGE_2MB));
        assert_true(hfd >= 0);
        g_hold_len = (size_t)(fr - resv) * page_size;
        assert_int_equal(ftruncate(hfd, (off_t)g_hold_len), 0);
        g_hold = mmap(NULL, g_hold_len, PROT_READ | PROT_WRITE, MAP_SHARED, hfd, 0);
        close(hfd);
        if (g_hold == MAP_FAILED) {
            g_hold = NULL;
            fail_msg("reserving the %ld free pages: %s", fr - resv, strerror(errno));
        }
    }
    expect_backing_refused(size, missing);
}

static void t_2m_refused_at_start(void **state)
{
    (void)state;
    hugetlb_refused_at_start(2ull << 20, "2M", "no free 2 MiB hugepages");
}

static void t_1g_refused_at_start(void **state)
{
    (void)state;
    /* the start check names the empty pool, not the small segment size */
    hugetlb_refused_at_start(1ull << 30, "1G", "no free 1 GiB hugepages");
}

/* With pages in the pool, an explicit 2M store starts and serves. */
static void t_2m_served(void **state)
{
    daemon_run d;
    char why[160];

    (void)state;
    if (!t_hugetlb_kernel(why, sizeof(why)))
        T_SKIP_IF(true, "hugepages", why);
    long fr = t_hugetlb_reserve(2ull << 20, 4);
    T_SKIP_IF(fr == -EPERM, "hugepages", "raise vm.nr_hugepages (4 free 2 MiB pages needed)");
    assert_true(fr >= 0);
    T_SKIP_IF(fr < 4, "hugepages", "raise vm.nr_hugepages (4 free 2 MiB pages needed)");
    const char *flags[] = { "--hugepages", "2M", NULL };
    spawn(&d, sock_path("h.sock"), flags, -1, NULL);
    wait_ready(&d);
    stop_ok(&d);
    t_hugetlb_restore();
}

static void t_help_lists_options(void **state)
{
    daemon_run d;
    static char out[65536];

    (void)state;
    const char *h[] = { "--help", NULL };
    spawn(&d, sock_path("e.sock"), h, -1, NULL);
    assert_int_equal(wait_exit(&d, 10000), 0);
    read_file(d.errlog, out, sizeof(out));
    for (int i = 0; i < SS_OPT__COUNT; i++) {
        const char *name = ss_option_name((ss_option)i);
        char flag[64];
        size_t k = 0;
        assert_non_null(name);
        if (!strstr(out, name))
            fail_msg("--help does not mention %s", name);
        /* and its flag */
        flag[k++] = '-';
        flag[k++] = '-';
        for (const char *p = name + strlen("SEALSTORE_"); *p && k < sizeof(flag) - 1; p++)
            flag[k++] = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
        flag[k] = '\0';
        if (!strstr(out, flag))
            fail_msg("--help does not mention %s", flag);
    }
    const char *v[] = { "--version", NULL };
    spawn(&d, sock_path("e.sock"), v, -1, NULL);
    assert_int_equal(wait_exit(&d, 10000), 0);
    read_file(d.errlog, out, sizeof(out));
    assert_non_null(strstr(out, ss_version()));
}

/* SIGTERM with a GET parked (timeout -1): the client gets its answer
 * (not found) before the daemon exits 0. */
static void t_sigterm_answers_parked(void **state)
{
    daemon_run d;
    unsigned char buf[1024];

    (void)state;
    spawn(&d, sock_path("f.sock"), NULL, -1, NULL);
    wait_ready(&d);
    int fd = try_connect(d.path);
    assert_true(fd >= 0);
    assert_int_equal(hello(fd, NULL), 0);
    struct {
        ss__msg_hdr h;
        ss__req_get g;
        ss_id id;
    } m;
    memset(&m, 0, sizeof(m));
    const size_t len = sizeof(m.h) + sizeof(m.g) + sizeof(m.id); /* no tail padding */
    fill_hdr(&m.h, SS_MSG_GET, 7, (uint32_t)len);
    m.g.n = 1;
    m.g.timeout_ms = -1;
    m.id.b[0] = 'p';
    assert_int_equal(send(fd, &m, len, MSG_NOSIGNAL), len);
    /* parked: nothing comes */
    assert_int_equal(recv_to(fd, buf, sizeof(buf), 100), -ETIMEDOUT);
    kill(d.pid, SIGTERM);
    ssize_t n = recv_to(fd, buf, sizeof(buf), 10000);
    assert_int_equal(n, sizeof(ss__msg_hdr) + sizeof(ss__rep_get) + sizeof(ss__get_entry));
    ss__msg_hdr h;
    ss__get_entry e;
    memcpy(&h, buf, sizeof(h));
    memcpy(&e, buf + sizeof(h) + sizeof(ss__rep_get), sizeof(e));
    assert_int_equal(h.req_id, 7);
    assert_int_equal(h.status, 0);
    assert_int_equal(e.status, -ENOENT);
    /* then the end of the connection, and a clean exit */
    assert_int_equal(recv_to(fd, buf, sizeof(buf), 10000), 0);
    close(fd);
    assert_int_equal(wait_exit(&d, 10000), 0);
    struct stat st;
    assert_int_equal(lstat(d.path, &st), -1);
}

/* The store subdirectory a daemon made in spill directory `spill`. */
static bool spill_subdir(const char *spill, char *out, size_t len)
{
    DIR *d = opendir(spill);
    struct dirent *de;
    bool found = false;

    if (!d)
        return false;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, "store-", 6)) {
            snprintf(out, len, "%s/%s", spill, de->d_name);
            found = true;
        }
    closedir(d);
    return found;
}

/* A FIFO named like a spill file in the daemon's spill directory: the
 * startup scan skips it (it used to block in open() for ever, with SIGTERM
 * blocked until the store was open), the daemon answers, its spilled
 * object is back, and SIGTERM stops it cleanly. */
static void t_spill_fifo_sigterm(void **state)
{
    daemon_run d;
    char spill[256], sub[512], fifo[600];
    const char *extra[] = { "--spill-dir", spill, "--spill-high", "0", "--capacity", "64M",
                            "--hugepages", "off", NULL };
    unsigned char data[5000], out[5000];
    ss_id id;
    ss_client *c = NULL;
    ss_object o;
    ss_stats st;

    (void)state;
    snprintf(spill, sizeof(spill), "%s/spill-fifo", t_tmpdir());
    assert_int_equal(mkdir(spill, 0700), 0);
    memset(&id, 0, sizeof(id));
    memcpy(id.b, "fifo-test", 9);
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7 + 1);
    spawn(&d, sock_path("h.sock"), extra, -1, NULL);
    wait_ready(&d);
    t_assert_ok(ss_connect(d.path, 0, &c));
    t_assert_ok(ss_put(c, &id, data, sizeof(data), NULL, 0));
    st = t_store_stats(c);
    for (int i = 0; i < 1000 && st.spilled_objects < 1; i++) {
        usleep(10000);
        st = t_store_stats(c);
    }
    assert_int_equal(st.spilled_objects, 1);
    ss_disconnect(c);
    stop_ok(&d);

    assert_true(spill_subdir(spill, sub, sizeof(sub)));
    snprintf(fifo, sizeof(fifo), "%s/00000000000000f0.spill", sub);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(120); /* a daemon stuck for ever fails the test, not the suite */
    spawn(&d, sock_path("h.sock"), extra, -1, NULL);
    wait_ready(&d);
    t_assert_ok(ss_connect(d.path, 0, &c));
    assert_int_equal(ss_get(c, &id, 1, 10000, &o), 1);
    assert_int_equal(o.size, sizeof(data));
    memcpy(out, o.data, sizeof(out));
    assert_memory_equal(out, data, sizeof(data));
    t_assert_ok(ss_release(c, &id));
    ss_disconnect(c);
    stop_ok(&d);
    alarm(0);
    struct stat sb;
    assert_int_equal(lstat(fifo, &sb), 0); /* not ours to remove */
    assert_true(S_ISFIFO(sb.st_mode));
    unlink(fifo);
}

static void t_socket_group(void **state)
{
    daemon_run d;
    struct stat st;
    const char *extra[] = { "--socket-group", "1", NULL }; /* gid 1 (daemon) */

    (void)state;
    T_SKIP_IF(geteuid() != 0, NULL, "giving the socket to a group needs root here");
    spawn(&d, sock_path("g.sock"), extra, -1, NULL);
    wait_ready(&d);
    assert_int_equal(lstat(d.path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0660);
    assert_int_equal(st.st_gid, 1);
    stop_ok(&d);
}

static void t_nondumpable(void **state)
{
    char dir[] = "/tmp/ss-daemon-XXXXXX", path[108], proc[64];
    struct stat st;
    const uid_t nobody = 65534;

    (void)state;
    T_SKIP_IF(geteuid() != 0, NULL, "needs root to run the daemon as another uid");
    assert_non_null(mkdtemp(dir));
    snprintf(g_owned_dir, sizeof(g_owned_dir), "%s", dir);
    assert_int_equal(chown(dir, nobody, nobody), 0);
    snprintf(path, sizeof(path), "%s/n.sock", dir);

    /* control: a dumpable process of that uid owns its /proc/PID */
    pid_t ctl = fork();
    if (ctl == 0) {
        if (setgroups(0, NULL) < 0 || setgid(nobody) < 0 || setuid(nobody) < 0)
            _exit(120);
        execl("/bin/sleep", "sleep", "10", (char *)NULL);
        _exit(127);
    }
    assert_true(ctl > 0);
    child_add(ctl);
    snprintf(proc, sizeof(proc), "/proc/%d/fd", (int)ctl);
    int i;
    for (i = 0; i < 500; i++) { /* until it has exec'd */
        char exe[64], l[256];
        snprintf(exe, sizeof(exe), "/proc/%d/comm", (int)ctl);
        read_file(exe, l, sizeof(l));
        if (!strncmp(l, "sleep", 5))
            break;
        usleep(10000);
    }
    assert_int_equal(stat(proc, &st), 0);
    assert_int_equal(st.st_uid, nobody);
    kill(ctl, SIGKILL);
    waitpid(ctl, NULL, 0);
    child_forget(ctl);

    daemon_run d;
    spawn(&d, path, NULL, (int)nobody, NULL);
    wait_ready(&d);
    snprintf(proc, sizeof(proc), "/proc/%d/fd", (int)d.pid);
    assert_int_equal(stat(proc, &st), 0);
    assert_int_equal(st.st_uid, 0); /* non-dumpable: owned by root */
    /* it runs as nobody, and its socket is nobody's */
    assert_int_equal(lstat(path, &st), 0);
    assert_int_equal(st.st_uid, nobody);
    stop_ok(&d);
}

int main(void)
{
    const char *b = getenv("SS_BUILDDIR");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(t_serve_mode_stop, teardown),
        cmocka_unit_test_teardown(t_second_refused, teardown),
        cmocka_unit_test_teardown(t_stale_replaced, teardown),
        cmocka_unit_test_teardown(t_flags_beat_env, teardown),
        cmocka_unit_test_teardown(t_bad_values_refused, teardown),
        cmocka_unit_test_teardown(t_thp_refused_at_start, teardown),
        cmocka_unit_test_teardown(t_2m_refused_at_start, teardown),
        cmocka_unit_test_teardown(t_1g_refused_at_start, teardown),
        cmocka_unit_test_teardown(t_2m_served, teardown),
        cmocka_unit_test_teardown(t_help_lists_options, teardown),
        cmocka_unit_test_teardown(t_sigterm_answers_parked, teardown),
        cmocka_unit_test_teardown(t_spill_fifo_sigterm, teardown),
        cmocka_unit_test_teardown(t_socket_group, teardown),
        cmocka_unit_test_teardown(t_nondumpable, teardown),
    };

    if (!b)
        return t_skip_program(NULL, "SS_BUILDDIR is not set (run through make check)");
    snprintf(g_daemon, sizeof(g_daemon), "%s/src/daemon/sealstored", b);
    if (access(g_daemon, X_OK) != 0)
        return t_skip_program(NULL, "no sealstored binary at %s", g_daemon);
    signal(SIGPIPE, SIG_IGN);
    return t_run(tests, NULL, NULL);
}
