/* SPDX-License-Identifier: MIT */
/*
 * t_cli: the `sealstore` command-line tool.
 *
 * Two groups:
 *  - format: the tool's own helpers (sizes, ids, JSON escaping, argument
 *    parsing), tested in-process: tools/sealstore.c is #included here with
 *    its main() compiled out;
 *  - end to end: this program starts an embedded store (SS_CONNECT_EMBED,
 *    socket in t_tmpdir(); it serves other processes too) and runs the
 *    built tool, $SS_BUILDDIR/tools/sealstore (a libtool wrapper script is
 *    fine: posix_spawn execs it), with --socket, checking output, files and
 *    exit status (0 ok, 1 failed, 2 usage, 3 no store, 4 not found).
 *
 * Every child is waited for with a deadline and killed past it, so a hung
 * tool fails the case instead of hanging make check. A child killed by a
 * signal (a crash) fails whichever case ran it.
 */
#include "config.h"

#define SEALSTORE_CLI_NO_MAIN
#include "../../tools/sealstore.c"

#include "t_helpers.h"

#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

extern char **environ;

static const char *g_tool;      /* the built tool */
static char g_sock[256];        /* the embedded store's socket */
static ss_client *g_c;          /* this process's client of that store */
static int g_connect_rc = -EAGAIN;
static unsigned g_seq;          /* names output files uniquely */

/* ------------------------------------------------------- running the tool */

struct run {
    pid_t pid;
    int code;                   /* exit status; -signal if killed */
    char *out, *err;            /* NUL-terminated copies of stdout/stderr */
    size_t out_len, err_len;
    char out_path[512], err_path[512];
};

struct run_in {
    const char *path;           /* stdin from this file, */
    const void *data;           /* or these bytes through a pipe, */
    size_t len;                 /* else /dev/null */
};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    assert_non_null(f);
    for (;;) {
        size_t got;
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536 + 1;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Start the tool with args (NULL-terminated); stdout/stderr go to files. */
static void spawn_tool(struct run *r, const struct run_in *in, const char *const *args)
{
    const char *argv[32];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dfl;
    int p[2] = { -1, -1 }, n = 0, rc;

    memset(r, 0, sizeof(*r));
    argv[n++] = g_tool;
    for (; *args; args++) {
        assert_true(n < 31);
        argv[n++] = *args;
    }
    argv[n] = NULL;
    g_seq++;
    snprintf(r->out_path, sizeof(r->out_path), "%s/out.%u", t_tmpdir(), g_seq);
    snprintf(r->err_path, sizeof(r->err_path), "%s/err.%u", t_tmpdir(), g_seq);

    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    if (in && in->data) {
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(posix_spawn_file_actions_adddup2(&fa, p[0], 0), 0);
    } else {
        assert_int_equal(posix_spawn_file_actions_addopen(&fa, 0, in && in->path ? in->path : "/dev/null",
                                                          O_RDONLY, 0), 0);
    }
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, r->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 2, r->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    /* This process ignores SIGPIPE; the tool must start with the defaults. */
    assert_int_equal(posix_spawnattr_init(&attr), 0);
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawn(&r->pid, g_tool, &fa, &attr, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0)
        fail_msg("posix_spawn %s: %s", g_tool, strerror(rc));
    if (p[0] >= 0) {
        const char *d = in->data;
        size_t left = in->len;

        close(p[0]);
        while (left) { /* the tool may quit early: EPIPE just ends the feed */
            ssize_t w = write(p[1], d, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            d += w;
            left -= (size_t)w;
        }
        close(p[1]);
    }
}

/* Wait for the tool (killing it past timeout_ms) and collect its output. */
static void wait_tool(struct run *r, int timeout_ms)
{
    int status = 0;

    for (int waited = 0;; waited += 5) {
        pid_t w = waitpid(r->pid, &status, WNOHANG);
        if (w == r->pid)
            break;
        assert_int_equal(w, 0);
        if (waited >= timeout_ms) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &status, 0);
            fail_msg("the tool did not finish within %d ms", timeout_ms);
        }
        usleep(5000);
    }
    r->out = slurp(r->out_path, &r->out_len);
    r->err = slurp(r->err_path, &r->err_len);
    if (WIFSIGNALED(status))
        fail_msg("the tool was killed by signal %d (%s); stderr: %s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), r->err);
    /* In a sanitizer build the tool is instrumented too: any report fails
     * the case, whatever the exit status was. */
    if (strstr(r->err, "Sanitizer") || strstr(r->err, "runtime error:"))
        fail_msg("sanitizer report from the tool: %s", r->err);
    r->code = WEXITSTATUS(status);
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* Run to completion and check the exit status (stderr shown on mismatch). */
static void tool(struct run *r, const struct run_in *in, int want, const char *const *args)
{
    spawn_tool(r, in, args);
    wait_tool(r, 20000);
    if (r->code != want) {
        static char why[4096]; /* fail_msg does not return: free first */
        snprintf(why, sizeof(why), "exited %d, expected %d; stderr: %.2000s; stdout: %.300s", r->code,
                 want, r->err, r->out);
        run_free(r);
        fail_msg("%s", why);
    }
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define S "--socket", g_sock

static bool file_contains(const char *path, const char *needle)
{
    char *s = slurp(path, NULL);
    bool found = strstr(s, needle) != NULL;

    free(s);
    return found;
}

static void wait_contains(const char *path, const char *needle, int timeout_ms)
{
    for (int waited = 0; !file_contains(path, needle); waited += 10) {
        if (waited >= timeout_ms)
            fail_msg("'%s' did not appear in %s within %d ms", needle, path, timeout_ms);
        usleep(10000);
    }
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write_full(fd, data, len), 0);
    close(fd);
}

static unsigned char *random_bytes(size_t len)
{
    unsigned char *p = malloc(len ? len : 1);

    assert_non_null(p);
    for (size_t i = 0; i < len; i++) /* cheap, deterministic per call site */
        p[i] = (unsigned char)((i * 2654435761u) >> 13 ^ (i >> 9) ^ g_seq);
    return p;
}

static void tmp_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", t_tmpdir(), name);
}

static ss_id test_id(unsigned n)
{
    ss_id id;

    assert_int_equal(random_id(&id), 0);
    id.b[0] = (unsigned char)n;
    return id;
}

static void need_store(void)
{
    if (g_connect_rc < 0)
        fail_msg("the embedded store did not start: %s", ss_strerror(g_connect_rc));
}

/* ------------------------------------------------------- format (unit) */

static void test_fmt_size(void **state)
{
    static const struct { uint64_t v; const char *s; } cases[] = {
        { 0, "0 B" }, { 1, "1 B" }, { 1023, "1023 B" }, { 1024, "1.0 KiB" },
        { 1536, "1.5 KiB" }, { 1048575, "1.0 MiB" }, { 1048576, "1.0 MiB" },
        { 1048576 * 1023 + 900 * 1024, "1023.9 MiB" },
        { 3ull << 29, "1.5 GiB" }, { 1ull << 40, "1.0 TiB" }, { UINT64_MAX, "16.0 EiB" },
    };
    char buf[16];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(fmt_size(cases[i].v, buf, sizeof(buf)), cases[i].s);
    assert_string_equal(fmt_pct(1, 3, buf, sizeof(buf)), "33.3%");
    assert_string_equal(fmt_pct(1, 0, buf, sizeof(buf)), "-");
}

static void test_id_parse(void **state)
{
    static const char *const bad[] = {
        "", "0", "0123456789abcdef0123456789abcdef0123456",
        "0123456789abcdef0123456789abcdef012345678", "0123456789abcdef0123456789abcdef01234567g",
        "0123456789abcdef0123456789abcdef0123456 ", " 0123456789abcdef0123456789abcdef012345",
        "0x23456789abcdef0123456789abcdef01234567", "0123456789abcdef0123456789abcdef01234567-",
    };
    char hex[41];
    ss_id id, back;

    assert_int_equal(id_parse("0123456789abcdefABCDEF0123456789abcdef01", &id), 0);
    assert_int_equal(id.b[0], 0x01);
    assert_int_equal(id.b[8], 0xab);
    assert_int_equal(id.b[19], 0x01);
    ss__id_hex(&id, hex);
    assert_string_equal(hex, "0123456789abcdefabcdef0123456789abcdef01");
    assert_int_equal(id_parse(hex, &back), 0);
    assert_memory_equal(&id, &back, sizeof(id));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(id_parse(bad[i], &id), -EINVAL);
    assert_int_equal(id_parse(NULL, &id), -EINVAL);
}

static char *json_of(const void *s, size_t n)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    json_str(f, s, n);
    fclose(f);
    return buf;
}

static void test_json_escape(void **state)
{
    static const struct { const char *in; size_t n; const char *out; } cases[] = {
        { "plain", 5, "\"plain\"" },
        { "a\"b\\c", 5, "\"a\\\"b\\\\c\"" },
        { "\n\t\r\b\f\x01\x1f\x7f", 8, "\"\\n\\t\\r\\b\\f\\u0001\\u001f\\u007f\"" },
        { "nul\0x", 5, "\"nul\\u0000x\"" },
        { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"" },
        { "\xff", 1, "\"\\ufffd\"" },
        { "\xc0\x80", 2, "\"\\ufffd\\ufffd\"" },             /* overlong NUL */
        { "\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"" },    /* surrogate */
        { "\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" }, /* > U+10FFFF */
        { "x\xe2\x82", 3, "\"x\\ufffd\\ufffd\"" },             /* truncated at the end */
        { "", 0, "\"\"" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = json_of(cases[i].in, cases[i].n);
        assert_string_equal(got, cases[i].out);
        free(got);
    }
}

static enum parse_result parse(struct cli *cli, const char *const *args)
{
    char *argv[32];
    int argc = 0;

    memset(cli, 0, sizeof(*cli));
    cli->cmd = CMD_NONE;
    argv[argc++] = (char *)"sealstore";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return parse_args(cli, argc, argv);
}

static void test_parse_args(void **state)
{
    struct cli cli;
    long long v;

    assert_int_equal(parse(&cli, ARGS("--json", "--socket", "/x", "get", "ID", "-o", "f", "--timeout=5", "--meta")),
                     PARSE_RUN);
    assert_true(cli.json);
    assert_string_equal(cli.socket, "/x");
    assert_int_equal(cli.cmd, CMD_GET);
    assert_int_equal(cli.npos, 1);
    assert_string_equal(cli.pos[0], "ID");
    assert_string_equal(cli.opt_output, "f");
    assert_string_equal(cli.opt_timeout, "5");
    assert_true(cli.opt_show_meta);

    /* global options after the command, put --meta takes a value, -oFILE */
    assert_int_equal(parse(&cli, ARGS("put", "-", "--meta", "m", "--id=ab", "--embed", "--socket=/y")), PARSE_RUN);
    assert_string_equal(cli.pos[0], "-");
    assert_string_equal(cli.opt_meta, "m");
    assert_false(cli.opt_show_meta);
    assert_string_equal(cli.opt_id, "ab");
    assert_true(cli.embed);
    assert_string_equal(cli.socket, "/y");
    assert_int_equal(parse(&cli, ARGS("get", "x", "-oout")), PARSE_RUN);
    assert_string_equal(cli.opt_output, "out");
    assert_int_equal(parse(&cli, ARGS("put", "--", "--weird-name")), PARSE_RUN);
    assert_string_equal(cli.pos[0], "--weird-name");
    assert_int_equal(parse(&cli, ARGS("get", "x", "--timeout", "-1")), PARSE_RUN);
    assert_string_equal(cli.opt_timeout, "-1");

    assert_int_equal(parse(&cli, ARGS("ls", "--help")), PARSE_HELP);
    assert_int_equal(cli.cmd, CMD_LS);
    assert_int_equal(parse(&cli, ARGS("-h")), PARSE_HELP);
    assert_int_equal(parse(&cli, ARGS("--version")), PARSE_VERSION);

    assert_int_equal(parse(&cli, ARGS("frob")), PARSE_ERROR);
    assert_int_equal(parse(&cli, ARGS("ls", "--frob")), PARSE_ERROR);
    assert_int_equal(parse(&cli, ARGS("-o", "x", "get")), PARSE_ERROR);   /* before its command */
    assert_int_equal(parse(&cli, ARGS("ls", "--count", "3")), PARSE_ERROR); /* another command's */
    assert_int_equal(parse(&cli, ARGS("get", "x", "--timeout")), PARSE_ERROR);
    assert_int_equal(parse(&cli, ARGS("--json=yes", "ls")), PARSE_ERROR);
    assert_int_equal(parse(&cli, ARGS("get", "x", "--meta=1")), PARSE_ERROR);
    assert_int_equal(parse(&cli, ARGS("rm", "1", "2", "3", "4", "5", "6", "7", "8", "9")), PARSE_ERROR);

    assert_int_equal(parse_ll("42", 1, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(parse_ll("-1", -1, 100, &v), 0);
    assert_int_equal(parse_ll("", 0, 100, &v), -EINVAL);
    assert_int_equal(parse_ll("4x", 0, 100, &v), -EINVAL);
    assert_int_equal(parse_ll(" 4", 0, 100, &v), 0); /* strtoll skips leading blanks: harmless */
    assert_int_equal(parse_ll("101", 0, 100, &v), -ERANGE);
    assert_int_equal(parse_ll("99999999999999999999", 0, LLONG_MAX, &v), -ERANGE);
}

/* ------------------------------------------------ end to end: no store */

static void test_help_version(void **state)
{
    struct run r;

    tool(&r, NULL, 0, ARGS("--help"));
    assert_non_null(strstr(r.out, "Usage: sealstore"));
    assert_non_null(strstr(r.out, "Exit status"));
    run_free(&r);
    tool(&r, NULL, 0, ARGS("get", "--help"));
    assert_non_null(strstr(r.out, "--timeout"));
    run_free(&r);
    tool(&r, NULL, 0, ARGS("help", "watch"));
    assert_non_null(strstr(r.out, "--count"));
    run_free(&r);
    tool(&r, NULL, 0, ARGS("--version"));
    assert_non_null(strstr(r.out, PACKAGE_VERSION));
    run_free(&r);
    /* no command: usage on stderr, status 2 */
    tool(&r, NULL, 2, ARGS("--json"));
    assert_non_null(strstr(r.err, "Usage:"));
    assert_int_equal(r.out_len, 0);
    run_free(&r);
}

static void test_usage_errors(void **state)
{
    static const char *const bad_ids[] = {
        "", "abc", "0123456789abcdef0123456789abcdef0123456",
        "0123456789abcdef0123456789abcdef012345678", "0123456789abcdef0123456789abcdef0123456z",
    };
    const char *good = "0123456789abcdef0123456789abcdef01234567";
    struct run r;

    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        tool(&r, NULL, 2, ARGS(S, "get", bad_ids[i]));
        assert_non_null(strstr(r.err, "bad id"));
        run_free(&r);
        tool(&r, NULL, 2, ARGS(S, "rm", good, bad_ids[i]));
        run_free(&r);
    }
    tool(&r, NULL, 2, ARGS(S, "put", "-", "--id", "xyz"));
    assert_non_null(strstr(r.err, "bad id"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS(S, "frobnicate"));
    assert_non_null(strstr(r.err, "unknown command"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS(S, "ls", "--frob"));
    assert_non_null(strstr(r.err, "unknown option"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS(S, "get"));
    assert_non_null(strstr(r.err, "missing argument"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS(S, "get", good, "--timeout", "soon"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS(S, "get", good, "--timeout", "-2"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS(S, "watch", "--count", "0"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS(S, "stat", "extra"));
    run_free(&r);
    tool(&r, NULL, 2, ARGS("--socket"));
    run_free(&r);
}

/* Odd command lines: always a normal exit with a documented status. */
static void test_odd_args(void **state)
{
    static char longsock[300], longmeta[70 * 1024];
    const char *id = "ffffffffffffffffffffffffffffffffffffffff";
    struct run r;

    memset(longsock, 'a', sizeof(longsock) - 1);
    memset(longmeta, 'm', sizeof(longmeta) - 1);
    const char *const *vecs[] = {
        ARGS("--"), ARGS("-"), ARGS(""), ARGS("\xff\xfe"), ARGS("--socket="), ARGS("--socket", longsock, "ls"),
        ARGS("--socket=", "ls"), ARGS("---"), ARGS("-x"), ARGS("--=x"), ARGS("-hx"), ARGS("help", "nope"),
        ARGS("help", "ls", "extra"), ARGS(S, "put", "-", "--meta", longmeta),
        ARGS(S, "put", "/nonexistent/file"), ARGS(S, "put", "/"), ARGS(S, "get", id, "-o", ""),
        ARGS(S, "get", id, "--timeout", "99999999999999999999"), ARGS(S, "watch", "--count", "-5"),
        ARGS(S, "watch", "extra"), ARGS(S, "rm"), ARGS(S, "ls", "--json", "--json"),
    };

    for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
        spawn_tool(&r, NULL, vecs[i]);
        wait_tool(&r, 20000);
        if (r.code > 4)
            fail_msg("case %zu exited %d; stderr: %s", i, r.code, r.err);
        if (r.code != 0 && r.err_len == 0)
            fail_msg("case %zu exited %d without a message", i, r.code);
        run_free(&r);
    }
}

static void test_no_store(void **state)
{
    char path[512];
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct run r;
    int fd;

    tmp_path(path, sizeof(path), "nobody.sock");
    tool(&r, NULL, 3, ARGS("--socket", path, "ls"));
    assert_non_null(strstr(r.err, "cannot reach the store"));
    assert_non_null(strstr(r.err, path));
    assert_int_equal(r.out_len, 0);
    run_free(&r);

    /* a stale socket file: bound, nobody listening */
    tmp_path(path, sizeof(path), "stale.sock");
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_true(strlen(path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    tool(&r, NULL, 3, ARGS("--socket", path, "--json", "stat"));
    assert_non_null(strstr(r.err, "cannot reach the store"));
    assert_int_equal(r.out_len, 0);
    run_free(&r);
    tool(&r, NULL, 3, ARGS("--socket", path, "get", "0123456789abcdef0123456789abcdef01234567"));
    run_free(&r);
}

/* ---------------------------------------------- end to end: with the store */

/* put FILE, then get it back to a file and to stdout: byte-identical. */
static void put_get_file(size_t len)
{
    char src[512], dst[512], hex[41];
    unsigned char *data = random_bytes(len);
    struct run r;
    char *back;
    size_t back_len;

    tmp_path(src, sizeof(src), "src");
    tmp_path(dst, sizeof(dst), "dst");
    write_file(src, data, len);
    tool(&r, NULL, 0, ARGS(S, "put", src));
    assert_int_equal(r.out_len, 41);
    assert_int_equal(r.out[40], '\n');
    memcpy(hex, r.out, 40);
    hex[40] = '\0';
    {
        ss_id id;
        assert_int_equal(id_parse(hex, &id), 0);
    }
    run_free(&r);

    tool(&r, NULL, 0, ARGS(S, "get", hex, "-o", dst));
    assert_int_equal(r.out_len, 0);
    run_free(&r);
    back = slurp(dst, &back_len);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, data, len);
    free(back);

    tool(&r, NULL, 0, ARGS(S, "get", hex));
    assert_int_equal(r.out_len, len);
    assert_memory_equal(r.out, data, len);
    run_free(&r);
    tool(&r, NULL, 0, ARGS(S, "rm", hex));
    run_free(&r);
    free(data);
}

static void test_put_get_small(void **state)
{
    need_store();
    put_get_file(1000);
    put_get_file(1);
    put_get_file(0);
}

static void test_put_get_large(void **state)
{
    need_store();
    put_get_file((3u << 20) + 123); /* read in place into the object */
    put_get_file((64u << 10) + 1);  /* just past the inline limit */
}

static void test_put_stdin(void **state)
{
    static const size_t sizes[] = { 10, (200u << 10) + 7 };
    char src[512];
    struct run r;

    need_store();
    for (size_t i = 0; i < 2; i++) { /* through a pipe: size unknown up front */
        unsigned char *data = random_bytes(sizes[i]);
        struct run_in in = { .data = data, .len = sizes[i] };
        char hex[41];

        tool(&r, &in, 0, ARGS(S, "--json", "put", "-"));
        assert_non_null(strstr(r.out, "\"id\": \""));
        memcpy(hex, strstr(r.out, "\"id\": \"") + 7, 40);
        hex[40] = '\0';
        run_free(&r);
        tool(&r, NULL, 0, ARGS(S, "get", hex));
        assert_int_equal(r.out_len, sizes[i]);
        assert_memory_equal(r.out, data, sizes[i]);
        run_free(&r);
        free(data);
    }
    {   /* stdin redirected from a regular file: the in-place path */
        size_t len = 2u << 20;
        unsigned char *data = random_bytes(len);
        struct run_in in = { .path = src };
        const char *hex = "5555555555555555555555555555555555555555";

        tmp_path(src, sizeof(src), "stdin-file");
        write_file(src, data, len);
        tool(&r, &in, 0, ARGS(S, "put", "-", "--id", hex));
        assert_string_equal(r.out, "5555555555555555555555555555555555555555\n");
        run_free(&r);
        tool(&r, NULL, 0, ARGS(S, "get", hex));
        assert_int_equal(r.out_len, len);
        assert_memory_equal(r.out, data, len);
        run_free(&r);
        /* the same id again: it exists */
        tool(&r, &in, 1, ARGS(S, "put", "-", "--id", hex));
        assert_non_null(strstr(r.err, "exists"));
        run_free(&r);
        tool(&r, NULL, 0, ARGS(S, "rm", hex));
        run_free(&r);
        free(data);
    }
}

static void test_meta(void **state)
{
    const char *hex = "6666666666666666666666666666666666666666";
    const char *meta = "shape=[3,4] \"q\" \\ caf\xc3\xa9";
    struct run_in in = { .data = "payload", .len = 7 };
    struct run r;

    need_store();
    tool(&r, &in, 0, ARGS(S, "put", "-", "--id", hex, "--meta", meta));
    run_free(&r);
    tool(&r, NULL, 0, ARGS(S, "get", hex, "--meta"));
    assert_string_equal(r.out, meta);
    run_free(&r);
    tool(&r, NULL, 0, ARGS(S, "get", hex));
    assert_string_equal(r.out, "payload");
    run_free(&r);
    tool(&r, NULL, 0, ARGS(S, "--json", "get", hex));
    assert_non_null(strstr(r.out, "\"size\": 7"));
    assert_non_null(strstr(r.out, "\"meta\": \"shape=[3,4] \\\"q\\\" \\\\ caf\xc3\xa9\""));
    assert_non_null(strstr(r.out, "\"output\": null"));
    run_free(&r);
    tool(&r, NULL, 0, ARGS(S, "rm", hex));
    run_free(&r);
}

static void test_ls(void **state)
{
    ss_id a = test_id(0x10), b = test_id(0x20), c = test_id(0x30);
    char ha[41], hb[41], hc[41], key[64];
    void *data;
    struct run r;

    need_store();
    ss__id_hex(&a, ha);
    ss__id_hex(&b, hb);
    ss__id_hex(&c, hc);
    t_assert_ok(ss_put_ex(g_c, &a, "hello", 5, "m", 1, SS_LIFETIME_CREATOR));
    t_assert_ok(ss_put(g_c, &b, "", 0, NULL, 0));
    t_assert_ok(ss_create(g_c, &c, 100000, NULL, 0, &data)); /* never sealed */

    tool(&r, NULL, 0, ARGS(S, "ls"));
    assert_non_null(strstr(r.out, "ID"));
    assert_non_null(strstr(r.out, "BACKING"));
    assert_non_null(strstr(r.out, ha));
    assert_non_null(strstr(r.out, hb));
    assert_non_null(strstr(r.out, hc));
    assert_non_null(strstr(r.out, "sealed"));
    assert_non_null(strstr(r.out, "created"));
    assert_non_null(strstr(r.out, "97.7 KiB"));
    assert_non_null(strstr(r.out, "LIFETIME"));
    assert_non_null(strstr(r.out, "  creator\n"));
    run_free(&r);

    tool(&r, NULL, 0, ARGS(S, "ls", "--json"));
    assert_int_equal(r.out[0], '[');
    assert_int_equal(r.out[r.out_len - 2], ']');
    snprintf(key, sizeof(key), "\"id\": \"%s\"", ha);
    assert_non_null(strstr(r.out, key));
    snprintf(key, sizeof(key), "\"id\": \"%s\"", hc);
    assert_non_null(strstr(r.out, key));
    assert_non_null(strstr(r.out, "\"state\": \"sealed\""));
    assert_non_null(strstr(r.out, "\"state\": \"created\""));
    assert_non_null(strstr(r.out, "\"size\": 100000"));
    assert_non_null(strstr(r.out, "\"meta_size\": 1"));
    assert_non_null(strstr(r.out, "\"refs\": "));
    assert_non_null(strstr(r.out, "\"backing\": "));
    assert_non_null(strstr(r.out, "\"node\": "));
    assert_non_null(strstr(r.out, "\"lifetime\": \"creator\"}"));
    assert_non_null(strstr(r.out, "\"lifetime\": null}"));
    run_free(&r);

    t_assert_ok(ss_abort(g_c, &c));
    t_assert_ok(ss_delete(g_c, &a));
    t_assert_ok(ss_delete(g_c, &b));
    tool(&r, NULL, 0, ARGS(S, "--json", "ls"));
    assert_null(strstr(r.out, ha));
    assert_null(strstr(r.out, hc));
    run_free(&r);
}

static void test_stat(void **state)
{
    struct run r;

    need_store();
    tool(&r, NULL, 0, ARGS(S, "stat"));
    assert_non_null(strstr(r.out, "capacity"));
    assert_non_null(strstr(r.out, "resident"));
    assert_non_null(strstr(r.out, "pool"));
    assert_non_null(strstr(r.out, "creates"));
    run_free(&r);
    tool(&r, NULL, 0, ARGS(S, "--json", "stat"));
    assert_int_equal(r.out[0], '{');
    assert_int_equal(r.out[r.out_len - 2], '}');
    assert_non_null(strstr(r.out, "\"capacity\": "));
    assert_non_null(strstr(r.out, "\"resident_bytes\": "));
    assert_non_null(strstr(r.out, "\"pool_hits\": "));
    assert_non_null(strstr(r.out, "\"protocol_errors\": "));
    run_free(&r);
}

static void test_rm_then_get(void **state)
{
    ss_id a = test_id(0x40), b = test_id(0x41);
    char ha[41], hb[41], want[64];
    struct run r;

    need_store();
    ss__id_hex(&a, ha);
    ss__id_hex(&b, hb);
    t_assert_ok(ss_put(g_c, &a, "x", 1, NULL, 0));
    t_assert_ok(ss_put(g_c, &b, "y", 1, NULL, 0));
    tool(&r, NULL, 0, ARGS(S, "rm", ha));
    assert_int_equal(r.out_len, 0);
    run_free(&r);
    assert_int_equal(ss_contains(g_c, &a), 0);

    tool(&r, NULL, 4, ARGS(S, "get", ha));
    assert_non_null(strstr(r.err, "no such object"));
    assert_non_null(strstr(r.err, ha));
    assert_int_equal(r.out_len, 0);
    run_free(&r);
    tool(&r, NULL, 4, ARGS(S, "rm", ha));
    assert_non_null(strstr(r.err, "no such object"));
    run_free(&r);
    /* json rm of two ids, one gone: the other is still deleted, status 4 */
    tool(&r, NULL, 4, ARGS(S, "--json", "rm", ha, hb));
    snprintf(want, sizeof(want), "{\"deleted\": [\"%s\"]}\n", hb);
    assert_string_equal(r.out, want);
    run_free(&r);
    assert_int_equal(ss_contains(g_c, &b), 0);
}

static void test_get_wait(void **state)
{
    ss_id a = test_id(0x50);
    char ha[41], dst[512];
    struct run r;
    char *back;
    void *data;

    need_store();
    ss__id_hex(&a, ha);
    tool(&r, NULL, 4, ARGS(S, "get", ha, "--timeout", "30"));
    assert_non_null(strstr(r.err, "timeout"));
    run_free(&r);

    /* a get that waits is woken by the seal */
    tmp_path(dst, sizeof(dst), "waited");
    spawn_tool(&r, NULL, ARGS(S, "get", ha, "--timeout", "15000", "-o", dst));
    t_assert_ok(ss_create(g_c, &a, 3, NULL, 0, &data));
    memcpy(data, "abc", 3);
    usleep(50000); /* let the get park (either order must work) */
    t_assert_ok(ss_seal(g_c, &a));
    t_assert_ok(ss_release(g_c, &a));
    wait_tool(&r, 20000);
    assert_int_equal(r.code, 0);
    run_free(&r);
    back = slurp(dst, NULL);
    assert_string_equal(back, "abc");
    free(back);
    t_assert_ok(ss_delete(g_c, &a));
}

static void test_watch_count(void **state)
{
    ss_id a = test_id(0x60);
    char ha[41], *nl;
    struct run r;

    need_store();
    ss__id_hex(&a, ha);
    spawn_tool(&r, NULL, ARGS(S, "watch", "--count", "2"));
    wait_contains(r.err_path, "watching", 10000);
    t_assert_ok(ss_put(g_c, &a, "12345", 5, NULL, 0));
    t_assert_ok(ss_delete(g_c, &a));
    wait_tool(&r, 20000);
    assert_int_equal(r.code, 0);
    /* exactly two lines: sealed, then deleted */
    nl = strchr(r.out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    assert_non_null(strstr(r.out, "sealed"));
    assert_non_null(strstr(r.out, ha));
    assert_non_null(strstr(r.out, "5 B"));
    assert_non_null(strstr(nl + 1, "deleted"));
    assert_non_null(strstr(nl + 1, ha));
    assert_int_equal(strchr(nl + 1, '\n') - r.out, (long)r.out_len - 1);
    run_free(&r);
}

static void test_watch_json_sigint(void **state)
{
    ss_id a = test_id(0x70);
    char ha[41], want[128];
    struct run r;
    int status;

    need_store();
    ss__id_hex(&a, ha);
    spawn_tool(&r, NULL, ARGS(S, "--json", "watch"));
    wait_contains(r.err_path, "watching", 10000);
    t_assert_ok(ss_put(g_c, &a, "xyz", 3, NULL, 0));
    t_assert_ok(ss_delete(g_c, &a));
    snprintf(want, sizeof(want), "\"event\": \"deleted\", \"id\": \"%s\"", ha);
    wait_contains(r.out_path, want, 10000);
    assert_int_equal(kill(r.pid, SIGINT), 0);
    wait_tool(&r, 10000);
    assert_int_equal(r.code, 0);
    snprintf(want, sizeof(want), "\"event\": \"sealed\", \"id\": \"%s\", \"size\": 3}", ha);
    assert_non_null(strstr(r.out, want));
    assert_int_equal(r.out[0], '{');
    assert_non_null(strstr(r.out, "\"time\": \""));
    assert_non_null(strstr(r.out, "}\n{"));
    run_free(&r);
    (void)status;
}

/* --embed with nothing at the path: the tool runs its own store. */
static void test_embed(void **state)
{
    char path[512];
    struct run r;

    tmp_path(path, sizeof(path), "embed.sock");
    tool(&r, NULL, 0, ARGS("--socket", path, "--embed", "--json", "stat"));
    assert_non_null(strstr(r.out, "\"capacity\": "));
    run_free(&r);
    /* it ended with the tool: nobody answers there now */
    tool(&r, NULL, 3, ARGS("--socket", path, "ls"));
    run_free(&r);
}

int main(void)
{
    static char tool_path[PATH_MAX];
    const char *bdir = getenv("SS_BUILDDIR");
    const struct CMUnitTest format[] = {
        cmocka_unit_test(test_fmt_size),
        cmocka_unit_test(test_id_parse),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_parse_args),
    };
    const struct CMUnitTest e2e[] = {
        cmocka_unit_test(test_help_version),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_odd_args),
        cmocka_unit_test(test_no_store),
        cmocka_unit_test(test_put_get_small),
        cmocka_unit_test(test_put_get_large),
        cmocka_unit_test(test_put_stdin),
        cmocka_unit_test(test_meta),
        cmocka_unit_test(test_ls),
        cmocka_unit_test(test_stat),
        cmocka_unit_test(test_rm_then_get),
        cmocka_unit_test(test_get_wait),
        cmocka_unit_test(test_watch_count),
        cmocka_unit_test(test_watch_json_sigint),
        cmocka_unit_test(test_embed),
    };
    int fails;

    snprintf(tool_path, sizeof(tool_path), "%s/tools/sealstore", bdir ? bdir : ".");
    if (access(tool_path, X_OK) != 0)
        return t_skip_program(NULL, "no built tool at %s (run from make check, or set SS_BUILDDIR)",
                              tool_path);
    g_tool = tool_path;
    t_tmpdir(); /* made now: exits 99 if it cannot be */
    /* Small stores, here and in the tool's --embed one: the test needs a
     * few MiB, and must not pre-fault the default pool on a shared box. */
    setenv("SEALSTORE_POOL_SIZE", "8M", 1);
    setenv("SEALSTORE_CAPACITY", "256M", 1);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_sock, sizeof(g_sock), "%s/store.sock", t_tmpdir());
    g_connect_rc = ss_connect(g_sock, SS_CONNECT_EMBED, &g_c);

    fails = cmocka_run_group_tests_name("format", format, NULL, NULL);
    fails += cmocka_run_group_tests_name("end to end", e2e, NULL, NULL);
    ss_disconnect(g_c);
    return t_finish(fails, sizeof(format) / sizeof(format[0]) + sizeof(e2e) / sizeof(e2e[0]));
}
