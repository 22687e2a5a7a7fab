/* SPDX-License-Identifier: MIT */
/*
 * sealstore: the command-line client of the store.
 *
 *   sealstore [--socket PATH] [--json] [--embed] COMMAND ...
 *
 * Its commands use the public API only (sealstore.h), so they double as a
 * worked example of that API and as a check that the API is enough for a
 * real tool. `doctor` (tools/doctor.c) also reuses the library's internal
 * probes, so the tool links the library's objects statically.
 *
 * Output contract, what scripts may rely on:
 *  - human output (default) is for people: sizes as "1.5 GiB", aligned
 *    columns; its layout may change between versions;
 *  - --json prints exactly one JSON document per command on stdout (watch:
 *    one JSON object per line, one line per event), with sizes in bytes;
 *    nothing else ever goes to stdout in that mode;
 *  - messages go to stderr as "sealstore: CMD ARG: what failed: why", and the
 *    exit status says what kind of failure it was (enum cli_exit below; the
 *    same table is in --help and in man/sealstore.1).
 *
 * Data paths avoid extra copies, since objects can be GiB large: put of a
 * regular file reads straight into the writable view of ss_create(); get
 * write()s straight from the read-only view. Only input of unknown size
 * (a pipe) is buffered before ss_put(), because an object's size is fixed
 * when it is created.
 *
 * Nothing here trusts its input: ids, numbers and options are validated
 * before the store is contacted, and everything the store sends back is
 * printed through escaping/bounded formatters.
 *
 * Built twice: as the tool, and #included by tests/integration/t_cli.c with
 * SEALSTORE_CLI_NO_MAIN defined so its formatting helpers can be unit-tested.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sealstore.h"
#include "doctor.h"
#include "internal.h" /* ss__id_hex: the tool links the library's objects */

/* Exit status: one value per kind of failure a script may want to tell
 * apart. Keep in step with usage_text and man/sealstore.1. */
enum cli_exit {
    CLI_OK = 0,
    CLI_FAIL = 1,     /* the operation failed */
    CLI_USAGE = 2,    /* bad command line: option, argument or id */
    CLI_NOSTORE = 3,  /* cannot reach the store, or lost it */
    CLI_NOTFOUND = 4, /* no such object */
};

/* Largest metadata the API accepts (ss_create: "at most 64 KiB"). Checked
 * here too so that a too-long --meta is a usage error, not a store error. */
#define CLI_META_MAX (64u * 1024)
/* Files up to this size go in one ss_put() round trip from a heap buffer;
 * larger ones are read in place into the object (no second buffer). It
 * matches the store's default inline limit (SEALSTORE_SMALL_MAX). */
#define CLI_PUT_INLINE_MAX (64u * 1024)
/* ss_list() batch: ~64 bytes an entry, so 16 KiB a call. */
#define CLI_LIST_BATCH 256

/* -------------------------------------------------------------- the state */

enum cli_cmd { CMD_NONE = -1, CMD_STAT, CMD_LS, CMD_PUT, CMD_GET, CMD_RM, CMD_WATCH, CMD_DOCTOR,
               CMD_HELP, CMD__COUNT };

struct cli {
    /* global options */
    const char *socket; /* NULL: the library's default */
    bool json;
    bool embed;
    /* the command and its arguments */
    enum cli_cmd cmd;
    const char *pos[8]; /* positional arguments (rm takes up to 8 ids) */
    int npos;
    /* command options, as given (validated by the command) */
    const char *opt_id;
    const char *opt_meta;
    const char *opt_output;
    const char *opt_timeout;
    const char *opt_count;
    const char *opt_spill_dir;
    bool opt_show_meta;
    /* runtime */
    ss_client *c;
};

/* ------------------------------------------------------------- formatting */

/*
 * Human size: bytes below 1 KiB, else one decimal of the largest binary
 * unit that keeps the number below 1024 after rounding ("1023.9 KiB",
 * then "1.0 MiB"). Integer arithmetic, so the output is exact and the same
 * on every machine. buf needs 16 bytes; returns buf.
 */
static const char *fmt_size(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    unsigned __int128 d = 1024, tenths;
    unsigned k = 0;

    if (v < 1024) {
        snprintf(buf, len, "%" PRIu64 " B", v);
        return buf;
    }
    while (k < 5 && v >= d * 1024) {
        d *= 1024;
        k++;
    }
    tenths = ((unsigned __int128)v * 10 + d / 2) / d;
    if (tenths >= 10240 && k < 5) { /* 1023.95 KiB rounds to 1.0 MiB */
        d *= 1024;
        k++;
        tenths = ((unsigned __int128)v * 10 + d / 2) / d;
    }
    snprintf(buf, len, "%u.%u %s", (unsigned)(tenths / 10), (unsigned)(tenths % 10), units[k]);
    return buf;
}

/* Percentage with one decimal, "-" when the whole is 0. buf: 16 bytes. */
static const char *fmt_pct(uint64_t part, uint64_t whole, char *buf, size_t len)
{
    if (whole == 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.1f%%", (double)part * 100.0 / (double)whole);
    return buf;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Exactly 40 hex digits, either case. 0 or -EINVAL. */
static int id_parse(const char *s, ss_id *out)
{
    ss_id id = { { 0 } };

    if (!s || strlen(s) != 2 * SS_ID_SIZE)
        return -EINVAL;
    for (int i = 0; i < SS_ID_SIZE; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        id.b[i] = (unsigned char)(hi << 4 | lo);
    }
    *out = id;
    return 0;
}

/*
 * Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there
 * are not one (overlong forms, surrogates and code points past U+10FFFF
 * count as invalid, per RFC 3629).
 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/*
 * A JSON string from arbitrary bytes: valid UTF-8 passes through, quotes,
 * backslashes and control characters are escaped, and each byte that is
 * not valid UTF-8 becomes U+FFFD (JSON strings are Unicode: raw bytes have
 * no faithful spelling; `get --meta` gives the exact bytes).
 */
static void json_str(FILE *f, const void *p, size_t n)
{
    const unsigned char *s = p;

    putc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char ch = s[i];
        size_t len;

        if (ch == '"' || ch == '\\') {
            putc('\\', f);
            putc(ch, f);
            i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            switch (ch) {
            case '\n': fputs("\\n", f); break;
            case '\t': fputs("\\t", f); break;
            case '\r': fputs("\\r", f); break;
            case '\b': fputs("\\b", f); break;
            case '\f': fputs("\\f", f); break;
            default: fprintf(f, "\\u%04x", ch); break;
            }
            i++;
        } else if ((len = utf8_len(s + i, n - i)) > 0) {
            fwrite(s + i, 1, len, f);
            i += len;
        } else {
            fputs("\\ufffd", f);
            i++;
        }
    }
    putc('"', f);
}

static void json_cstr(FILE *f, const char *s)
{
    json_str(f, s, strlen(s));
}

/* The formatters doctor shares (doctor.h). */
const char *cli_fmt_size(uint64_t v, char *buf, size_t len)
{
    return fmt_size(v, buf, len);
}

void cli_json_cstr(FILE *f, const char *s)
{
    json_cstr(f, s);
}

/* The store fills backing[] with a short name; never trust it to be
 * terminated or printable. */
static void backing_name(const ss_obj_info *oi, char out[sizeof(oi->backing) + 1])
{
    size_t n = strnlen(oi->backing, sizeof(oi->backing));

    for (size_t i = 0; i < n; i++) {
        char ch = oi->backing[i];
        out[i] = (ch > 0x20 && ch < 0x7f) ? ch : '?';
    }
    out[n] = '\0';
    if (n == 0)
        strcpy(out, "-");
}

static const char *state_name(uint32_t state)
{
    switch (state) {
    case SS_OBJ_CREATED: return "created";
    case SS_OBJ_SEALED: return "sealed";
    default: return "unknown";
    }
}

static const char *event_name(uint32_t type)
{
    switch (type) {
    case SS_EVENT_SEALED: return "sealed";
    case SS_EVENT_DELETED: return "deleted";
    default: return "unknown";
    }
}

/* Strict integer: the whole string, in range. 0 or -EINVAL/-ERANGE. */
static int parse_ll(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*end != '\0' || end == s)
        return -EINVAL;
    if (errno == ERANGE || v < min || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

/* ----------------------------------------------------------- diagnostics */

static void __attribute__((format(printf, 1, 2))) msg(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout); /* keep stdout and stderr in order on a terminal */
    fputs("sealstore: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char *cmd_names[CMD__COUNT] = { "stat", "ls", "put", "get", "rm", "watch", "doctor",
                                             "help" };

/* Errors that mean the store is gone or was never there. */
static bool err_is_nostore(int err)
{
    switch (-err) {
    case ECONNREFUSED: case ECONNRESET: case ECONNABORTED: case ENOTCONN:
    case EPIPE: case ETIMEDOUT: case EHOSTUNREACH:
        return true;
    default:
        return false;
    }
}

/*
 * Report a failed call of the store's API: "sealstore: WHAT: text (hint)".
 * Returns the exit status the failure maps to.
 */
static int fail_api(const char *what, int err, const char *hint)
{
    if (err_is_nostore(err)) {
        msg("%s: lost the connection to the store: %s", what, ss_strerror(err));
        return CLI_NOSTORE;
    }
    if (hint)
        msg("%s: %s (%s)", what, ss_strerror(err), hint);
    else
        msg("%s: %s", what, ss_strerror(err));
    return CLI_FAIL;
}

/* ------------------------------------------------------------------- help */

static const char usage_text[] =
    "Usage: sealstore [--socket PATH] [--json] [--embed] COMMAND [ARGS...]\n"
    "\n"
    "Command-line client of the sealstore shared-memory object store.\n"
    "\n"
    "Commands:\n"
    "  stat                       store statistics\n"
    "  ls                         list every object\n"
    "  put FILE|- [--id HEX] [--meta STRING]\n"
    "                             store a file (- reads stdin) as a sealed object\n"
    "                             and print its id\n"
    "  get ID [-o FILE] [--timeout MS] [--meta]\n"
    "                             write an object's bytes (or its metadata) to\n"
    "                             FILE or stdout\n"
    "  rm ID...                   delete objects\n"
    "  watch [--count N]          print seal and delete events as they happen\n"
    "  doctor [--spill-dir DIR]   what this machine gives the store and how to get\n"
    "                             more (exit 0 all good, 1 findings that cost\n"
    "                             performance, 2 a needed kernel feature is missing)\n"
    "  help [COMMAND]             this text, or a command's (also COMMAND --help)\n"
    "\n"
    "Options (anywhere on the line):\n"
    "  --socket PATH  the store's socket; default $SEALSTORE_SOCKET, else\n"
    "                 $XDG_RUNTIME_DIR/sealstore.sock, else a per-user directory\n"
    "                 under /tmp\n"
    "  --json         output for scripts: one JSON document per command (watch:\n"
    "                 one JSON object per line), sizes in bytes\n"
    "  --embed        if no store answers, run one inside this command for its\n"
    "                 duration (the store and its objects end with it)\n"
    "  -h, --help     show help\n"
    "  --version      show the version\n"
    "\n"
    "An ID is 20 bytes written as 40 hex digits.\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  the operation failed\n"
    "  2  usage error (unknown command or option, bad argument or id)\n"
    "  3  cannot reach the store (not running, wrong socket, no permission,\n"
    "     connection lost)\n"
    "  4  no such object\n"
    "doctor has its own: 0 all good, 1 findings that cost performance, 2 a\n"
    "kernel feature the store needs is missing.\n"
    "\n"
    "See sealstore(1).\n";

static const char *const cmd_help[CMD__COUNT] = {
    [CMD_STAT] =
        "Usage: sealstore [--json] stat\n"
        "\n"
        "Store statistics: capacity, resident memory, objects, bytes by backing\n"
        "(4K, THP, 2M, 1G), the small-object allocator (live, class-rounded and\n"
        "segment bytes, rounding waste), the segment pool (ready bytes, hits,\n"
        "misses), backing fallbacks, bytes per NUMA node, clients, operation\n"
        "counters, protocol errors, the store's bookkeeping memory and spilling\n"
        "(objects on disk, files, spill and restore totals and throughput,\n"
        "errors, io_uring or worker threads, O_DIRECT or buffered).\n"
        "With --json, one object whose keys are the ss_stats field names.\n",
    [CMD_LS] =
        "Usage: sealstore [--json] ls\n"
        "\n"
        "List every object, sorted by id: id, state (created or sealed), size,\n"
        "metadata size, references held by all clients, backing (4K, THP, 2M, 1G,\n"
        "small, disk), NUMA node (- when unknown or interleaved) and lifetime\n"
        "(creator: deleted when its creator's connection ends; - until deleted).\n"
        "With --json, an array of objects with sizes in bytes.\n",
    [CMD_PUT] =
        "Usage: sealstore put FILE|- [--id HEX] [--meta STRING]\n"
        "\n"
        "Store the contents of FILE (- for standard input) as one sealed object\n"
        "and print its id (--json: {\"id\": ..., \"size\": ...}).\n"
        "\n"
        "  --id HEX       the object's id, 40 hex digits; default: 20 random bytes\n"
        "                 from getrandom(2), so two puts never pick the same id\n"
        "  --meta STRING  metadata stored with the object (at most 64 KiB)\n"
        "\n"
        "A regular file is read straight into the object's memory; standard input\n"
        "of unknown size is buffered first. An id that exists already fails.\n",
    [CMD_GET] =
        "Usage: sealstore get ID [-o FILE] [--timeout MS] [--meta]\n"
        "\n"
        "Write the object's bytes to standard output, or to FILE.\n"
        "\n"
        "  -o, --output FILE  write to FILE (created or truncated; only once the\n"
        "                     object was found)\n"
        "  --timeout MS       wait up to MS milliseconds for the object to be\n"
        "                     sealed (-1: forever; default 0, no wait)\n"
        "  --meta             write the object's metadata instead of its bytes\n"
        "\n"
        "With --json, print {\"id\", \"size\", \"meta_size\", \"meta\", \"output\"}\n"
        "instead; the bytes are then written only to -o FILE. Exit status 4 when\n"
        "the object does not exist (or was not sealed within the timeout).\n",
    [CMD_RM] =
        "Usage: sealstore rm ID...\n"
        "\n"
        "Delete sealed objects (at most 8 per call). The memory is freed once\n"
        "no client holds a reference any more. With --json: {\"deleted\": [ids]}.\n"
        "Exit status 4 when an object does not exist; every id is still tried.\n",
    [CMD_WATCH] =
        "Usage: sealstore watch [-n|--count N]\n"
        "\n"
        "Print one line per seal or delete event until interrupted (Ctrl-C or\n"
        "SIGTERM end it with status 0), or after N events with --count N.\n"
        "A line on stderr says when the subscription is in place.\n"
        "Human lines: local time, event, id, size. With --json, one object per\n"
        "line: {\"time\", \"event\", \"id\", \"size\"} (time in UTC, ISO 8601).\n",
    [CMD_DOCTOR] =
        "Usage: sealstore [--socket PATH] [--json] doctor [--spill-dir DIR]\n"
        "\n"
        "What this machine gives the store and how to get more: hugepage pools\n"
        "(2 MiB, 1 GiB), shmem THP mode, io_uring, NUMA nodes, /dev/shm, memlock\n"
        "and open-file limits, cgroup memory limits, the spill directory (O_DIRECT,\n"
        "free space), the kernel features the store uses, and the store running at\n"
        "the socket, if any (backing in use, pressure, spilling). The limits, the\n"
        "cgroup and the spill directory are the running store's when /proc lets us\n"
        "read them (root, or the store's user), else this process's.\n"
        "Each finding that costs performance names its fix and, where measured,\n"
        "the gain, with the sealstore-bench command that measures it here.\n"
        "\n"
        "  --spill-dir DIR  probe DIR instead of the store's spill directory\n"
        "\n"
        "With --json, one object (keys in sealstore(1)). Exit status: 0 all good,\n"
        "1 findings that cost performance, 2 a kernel feature the store needs is\n"
        "missing (or a usage error).\n",
    [CMD_HELP] =
        "Usage: sealstore help [COMMAND]\n"
        "\n"
        "Show the general help, or a command's.\n",
};

/* ------------------------------------------------------ argument parsing */

enum opt_key { OPT_SOCKET, OPT_JSON, OPT_EMBED, OPT_HELP, OPT_VERSION, OPT_ID, OPT_META,
               OPT_OUTPUT, OPT_TIMEOUT, OPT_COUNT, OPT_SPILL_DIR };

#define ALL_CMDS 0xffffu
#define CMDBIT(c) (1u << (c))

static const struct opt_def {
    const char *name;   /* long name without "--" */
    char shrt;          /* short letter or 0 */
    bool has_arg;
    enum opt_key key;
    unsigned cmds;      /* commands that take it (ALL_CMDS: global) */
} opt_defs[] = {
    { "socket", 0, true, OPT_SOCKET, ALL_CMDS },
    { "json", 0, false, OPT_JSON, ALL_CMDS },
    { "embed", 0, false, OPT_EMBED, ALL_CMDS },
    { "help", 'h', false, OPT_HELP, ALL_CMDS },
    { "version", 0, false, OPT_VERSION, ALL_CMDS },
    { "id", 0, true, OPT_ID, CMDBIT(CMD_PUT) },
    { "meta", 0, true, OPT_META, CMDBIT(CMD_PUT) },
    /* get --meta takes no value: it is a different option with the same
     * name, told apart by the command (listed after put's on purpose) */
    { "meta", 0, false, OPT_META, CMDBIT(CMD_GET) },
    { "output", 'o', true, OPT_OUTPUT, CMDBIT(CMD_GET) },
    { "timeout", 0, true, OPT_TIMEOUT, CMDBIT(CMD_GET) },
    { "count", 'n', true, OPT_COUNT, CMDBIT(CMD_WATCH) },
    { "spill-dir", 0, true, OPT_SPILL_DIR, CMDBIT(CMD_DOCTOR) },
};

static enum cli_cmd cmd_lookup(const char *s)
{
    for (int i = 0; i < CMD__COUNT; i++)
        if (strcmp(s, cmd_names[i]) == 0)
            return (enum cli_cmd)i;
    return CMD_NONE;
}

/* The option `name` (long, or short when len 1 and is_short) valid for cmd. */
static const struct opt_def *opt_lookup(const char *name, size_t len, bool is_short, enum cli_cmd cmd,
                                        bool *other_cmd)
{
    *other_cmd = false;
    for (size_t i = 0; i < sizeof(opt_defs) / sizeof(opt_defs[0]); i++) {
        const struct opt_def *d = &opt_defs[i];
        bool match = is_short ? (d->shrt && d->shrt == name[0])
                              : (strlen(d->name) == len && strncmp(d->name, name, len) == 0);
        if (!match)
            continue;
        if (d->cmds == ALL_CMDS || (cmd != CMD_NONE && (d->cmds & CMDBIT(cmd))))
            return d;
        *other_cmd = true;
    }
    return NULL;
}

enum parse_result { PARSE_RUN, PARSE_HELP, PARSE_VERSION, PARSE_ERROR };

/*
 * Global options may come anywhere; a command's options only after it
 * (its name decides what they mean). "--" ends options; "-" alone is an
 * argument (stdin for put). Values: "--opt VALUE" or "--opt=VALUE", "-o
 * VALUE" or "-oVALUE". Prints its own usage errors.
 */
static enum parse_result parse_args(struct cli *cli, int argc, char **argv)
{
    bool end_opts = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!end_opts && strcmp(a, "--") == 0) {
            end_opts = true;
            continue;
        }
        if (!end_opts && a[0] == '-' && a[1] != '\0') {
            bool is_short = a[1] != '-';
            const char *name = is_short ? a + 1 : a + 2;
            const char *eq = is_short ? NULL : strchr(name, '=');
            size_t len = is_short ? 1 : (eq ? (size_t)(eq - name) : strlen(name));
            const char *value = NULL;
            bool other;
            const struct opt_def *d = opt_lookup(name, len, is_short, cli->cmd, &other);

            if (!d) {
                if (other && cli->cmd == CMD_NONE)
                    msg("option '%s' belongs after its command (see sealstore --help)", a);
                else if (cli->cmd != CMD_NONE)
                    msg("%s: unknown option '%s' (see sealstore %s --help)", cmd_names[cli->cmd], a,
                        cmd_names[cli->cmd]);
                else
                    msg("unknown option '%s' (see sealstore --help)", a);
                return PARSE_ERROR;
            }
            if (d->has_arg) {
                if (eq)
                    value = eq + 1;
                else if (is_short && a[2] != '\0')
                    value = a + 2;
                else if (i + 1 < argc)
                    value = argv[++i];
                else {
                    msg("option '%s' needs a value", a);
                    return PARSE_ERROR;
                }
            } else if (eq || (is_short && a[2] != '\0')) {
                msg("option '%s' takes no value", a);
                return PARSE_ERROR;
            }
            switch (d->key) {
            case OPT_SOCKET: cli->socket = value; break;
            case OPT_JSON: cli->json = true; break;
            case OPT_EMBED: cli->embed = true; break;
            case OPT_HELP: return PARSE_HELP;
            case OPT_VERSION: return PARSE_VERSION;
            case OPT_ID: cli->opt_id = value; break;
            case OPT_META:
                if (cli->cmd == CMD_PUT)
                    cli->opt_meta = value;
                else
                    cli->opt_show_meta = true;
                break;
            case OPT_OUTPUT: cli->opt_output = value; break;
            case OPT_TIMEOUT: cli->opt_timeout = value; break;
            case OPT_COUNT: cli->opt_count = value; break;
            case OPT_SPILL_DIR: cli->opt_spill_dir = value; break;
            }
            continue;
        }
        if (cli->cmd == CMD_NONE) {
            cli->cmd = cmd_lookup(a);
            if (cli->cmd == CMD_NONE) {
                msg("unknown command '%s' (see sealstore --help)", a);
                return PARSE_ERROR;
            }
            continue;
        }
        if (cli->npos >= (int)(sizeof(cli->pos) / sizeof(cli->pos[0]))) {
            msg("%s: too many arguments", cmd_names[cli->cmd]);
            return PARSE_ERROR;
        }
        cli->pos[cli->npos++] = a;
    }
    return PARSE_RUN;
}

/* Arity check; prints the command's usage line on error. */
static bool check_npos(struct cli *cli, int min, int max)
{
    if (cli->npos >= min && cli->npos <= max)
        return true;
    if (cli->npos < min)
        msg("%s: missing argument (see sealstore %s --help)", cmd_names[cli->cmd], cmd_names[cli->cmd]);
    else
        msg("%s: unexpected argument '%s' (see sealstore %s --help)", cmd_names[cli->cmd],
            cli->pos[max], cmd_names[cli->cmd]);
    return false;
}

static bool parse_id_arg(struct cli *cli, const char *s, ss_id *id)
{
    if (id_parse(s, id) == 0)
        return true;
    msg("%s: bad id '%.64s%s': an id is 40 hex digits", cmd_names[cli->cmd], s,
        strlen(s) > 64 ? "..." : "");
    return false;
}

/* --------------------------------------------------------------- connect */

/* Which store we talk to, for messages. */
static const char *store_name(const struct cli *cli, char *buf, size_t len)
{
    const char *env;

    if (cli->socket)
        return cli->socket;
    env = getenv("SEALSTORE_SOCKET");
    if (env && *env)
        return env;
    env = getenv("XDG_RUNTIME_DIR");
    if (env && *env) {
        snprintf(buf, len, "%s/sealstore.sock", env);
        return buf;
    }
    return "the default socket";
}

static int cli_connect(struct cli *cli)
{
    char buf[PATH_MAX + 32];
    const char *where = store_name(cli, buf, sizeof(buf));
    int rc = ss_connect(cli->socket, cli->embed ? SS_CONNECT_EMBED : 0, &cli->c);

    if (rc == 0)
        return CLI_OK;
    cli->c = NULL;
    switch (-rc) {
    case ENOENT:
    case ECONNREFUSED:
        msg("cannot reach the store at %s: %s (is sealstored running? use --socket PATH, "
            "or --embed for a one-off store)", where, ss_strerror(rc));
        return CLI_NOSTORE;
    case EACCES:
    case EPERM:
        msg("cannot reach the store at %s: %s (the socket belongs to another user or group)",
            where, ss_strerror(rc));
        return CLI_NOSTORE;
    case ETIMEDOUT:
        msg("cannot reach the store at %s: it accepted the connection but did not answer", where);
        return CLI_NOSTORE;
    case SS_E_VERSION:
        msg("cannot reach the store at %s: it speaks another protocol version (this is "
            "sealstore %s)", where, ss_version());
        return CLI_NOSTORE;
    case ENOMEM:
        msg("connecting to the store at %s: %s", where, ss_strerror(rc));
        return CLI_FAIL;
    default:
        msg("cannot reach the store at %s: %s", where, ss_strerror(rc));
        return CLI_NOSTORE;
    }
}

/* ----------------------------------------------------------------- I/O */

/* Read up to len bytes (fewer only at end of file). Bytes read or -errno. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        size_t chunk = len - got > (1u << 30) ? (1u << 30) : len - got;
        ssize_t n = read(fd, (char *)buf + got, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Write all of buf. 0 or -errno. */
static int write_full(int fd, const void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        size_t chunk = len - done > (1u << 30) ? (1u << 30) : len - done;
        ssize_t n = write(fd, (const char *)buf + done, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)n;
    }
    return 0;
}

/* The whole of a stream of unknown length into a heap buffer. */
static int read_stream(int fd, unsigned char **out, size_t *outlen)
{
    size_t cap = 64 * 1024, len = 0;
    unsigned char *buf = malloc(cap);

    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t n;

        if (len == cap) {
            unsigned char *nb;
            if (cap > SIZE_MAX / 2) {
                free(buf);
                return -EFBIG;
            }
            nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            n = -errno;
            free(buf);
            return (int)n;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *out = buf;
    *outlen = len;
    return 0;
}

/* -------------------------------------------------------------- commands */

/* GB/s (10^9 bytes per second) of bytes moved in ns of busy time. */
static double gbps(uint64_t bytes, uint64_t ns)
{
    return ns ? (double)bytes / (double)ns : 0.0;
}

static int cmd_stat(struct cli *cli)
{
    ss_stats st;
    char a[16], b[16], c[16], d[16];
    int rc;

    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    st.version = SS_STATS_VERSION;
    rc = ss_stats_get(cli->c, &st);
    if (rc < 0)
        return fail_api("stat", rc, NULL);

    if (cli->json) {
        static const char *const bk[4] = { "4K", "THP", "2M", "1G" };
        FILE *f = stdout;
        bool first = true;

        fprintf(f, "{\"capacity\": %" PRIu64 ", \"resident_bytes\": %" PRIu64
                   ", \"objects\": %" PRIu64 ", \"sealed_objects\": %" PRIu64
                   ", \"object_bytes\": %" PRIu64 ",\n \"bytes_by_backing\": {",
                st.capacity, st.resident_bytes, st.objects, st.sealed_objects, st.object_bytes);
        for (int i = 0; i < 4; i++)
            fprintf(f, "%s\"%s\": %" PRIu64, i ? ", " : "", bk[i], st.bytes_by_backing[i]);
        fprintf(f, "},\n \"small_live_bytes\": %" PRIu64 ", \"small_used_bytes\": %" PRIu64
                   ", \"small_segment_bytes\": %" PRIu64 ", \"small_waste_pct\": %.1f,\n",
                st.small_live_bytes, st.small_used_bytes, st.small_segment_bytes,
                st.small_used_bytes && st.small_used_bytes >= st.small_live_bytes
                    ? (double)(st.small_used_bytes - st.small_live_bytes) * 100.0 /
                          (double)st.small_used_bytes
                    : 0.0);
        fprintf(f, " \"pool_ready_bytes\": %" PRIu64 ", \"pool_hits\": %" PRIu64
                   ", \"pool_misses\": %" PRIu64 ", \"backing_fallbacks\": %" PRIu64
                   ", \"pool_yields\": %" PRIu64 ", \"seal_waits\": %" PRIu64
                   ",\n \"node_bytes\": {",
                st.pool_ready_bytes, st.pool_hits, st.pool_misses, st.backing_fallbacks,
                st.pool_yields, st.seal_waits);
        for (int i = 0; i < 8; i++) {
            if (!st.node_bytes[i])
                continue;
            fprintf(f, "%s\"%d\": %" PRIu64, first ? "" : ", ", i, st.node_bytes[i]);
            first = false;
        }
        fprintf(f, "},\n \"clients\": %" PRIu64 ", \"creates\": %" PRIu64 ", \"seals\": %" PRIu64
                   ", \"aborts\": %" PRIu64 ", \"gets\": %" PRIu64 ", \"releases\": %" PRIu64
                   ", \"deletes\": %" PRIu64 ", \"evictions\": %" PRIu64 ", \"waits\": %" PRIu64
                   ", \"wait_timeouts\": %" PRIu64 ",\n \"protocol_errors\": %" PRIu64
                   ", \"bookkeeping_bytes\": %" PRIu64 ", \"bookkeeping_bytes_per_object\": %" PRIu64
                   ",\n \"parked_requests\": %" PRIu64 ", \"parked_bytes\": %" PRIu64
                   ", \"fd_deferred\": %" PRIu64 ",\n \"trusted_producers\": %s"
                   ", \"trusted_bytes\": %" PRIu64 ",\n",
                st.clients, st.creates, st.seals, st.aborts, st.gets, st.releases, st.deletes,
                st.evictions, st.waits, st.wait_timeouts, st.protocol_errors, st.bookkeeping_bytes,
                st.objects ? st.bookkeeping_bytes / st.objects : 0, st.parked_requests,
                st.parked_bytes, st.fd_deferred, st.trusted_producers ? "true" : "false",
                st.trusted_bytes);
        fprintf(f, " \"spill_mode\": %" PRIu64 ", \"spill_uring\": %s, \"spill_direct\": %s"
                   ", \"spill_queue_depth\": %" PRIu64 ",\n \"spilled_objects\": %" PRIu64
                   ", \"spilled_bytes\": %" PRIu64 ", \"spill_files\": %" PRIu64
                   ", \"spill_disk_bytes\": %" PRIu64 ",\n \"spills\": %" PRIu64
                   ", \"spill_bytes\": %" PRIu64 ", \"spill_ns\": %" PRIu64
                   ", \"spill_gbps\": %.3f,\n \"restores\": %" PRIu64
                   ", \"restore_bytes\": %" PRIu64 ", \"restore_ns\": %" PRIu64
                   ", \"restore_gbps\": %.3f,\n \"spill_errors\": %" PRIu64
                   ", \"restore_errors\": %" PRIu64 ", \"spill_lost\": %" PRIu64
                   ",\n \"spill_scanning\": %s, \"spill_scan_bytes\": %" PRIu64 "}\n",
                st.spill_mode, (st.spill_mode & SS_SPILL_MODE_URING) ? "true" : "false",
                (st.spill_mode & SS_SPILL_MODE_DIRECT) ? "true" : "false", st.spill_queue_depth,
                st.spilled_objects, st.spilled_bytes, st.spill_files, st.spill_disk_bytes,
                st.spills, st.spill_bytes, st.spill_ns, gbps(st.spill_bytes, st.spill_ns),
                st.restores, st.restore_bytes, st.restore_ns,
                gbps(st.restore_bytes, st.restore_ns), st.spill_errors, st.restore_errors,
                st.spill_lost, (st.spill_mode & SS_SPILL_MODE_SCANNING) ? "true" : "false",
                st.spill_scan_bytes);
        return CLI_OK;
    }

    if (st.capacity)
        printf("%-17s%s\n", "capacity", fmt_size(st.capacity, a, sizeof(a)));
    else
        printf("%-17s%s\n", "capacity", "unlimited");
    printf("%-17s%s", "resident", fmt_size(st.resident_bytes, a, sizeof(a)));
    if (st.capacity)
        printf(" (%s of capacity)", fmt_pct(st.resident_bytes, st.capacity, b, sizeof(b)));
    printf("\n");
    printf("%-17s%" PRIu64 " (%" PRIu64 " sealed, %" PRIu64 " being written), %s of data\n",
           "objects", st.objects, st.sealed_objects,
           st.objects >= st.sealed_objects ? st.objects - st.sealed_objects : 0,
           fmt_size(st.object_bytes, a, sizeof(a)));
    printf("%-17s4K %s, THP %s, 2M %s, 1G %s\n", "backing",
           fmt_size(st.bytes_by_backing[0], a, sizeof(a)), fmt_size(st.bytes_by_backing[1], b, sizeof(b)),
           fmt_size(st.bytes_by_backing[2], c, sizeof(c)), fmt_size(st.bytes_by_backing[3], d, sizeof(d)));
    printf("%-17slive %s, used %s, segments %s, ", "small objects",
           fmt_size(st.small_live_bytes, a, sizeof(a)), fmt_size(st.small_used_bytes, b, sizeof(b)),
           fmt_size(st.small_segment_bytes, c, sizeof(c)));
    printf("rounding waste %s\n",
           fmt_pct(st.small_used_bytes >= st.small_live_bytes ? st.small_used_bytes - st.small_live_bytes : 0,
                   st.small_used_bytes, d, sizeof(d)));
    printf("%-17sready %s, hits %" PRIu64 ", misses %" PRIu64 " (hit rate %s)\n", "pool",
           fmt_size(st.pool_ready_bytes, a, sizeof(a)), st.pool_hits, st.pool_misses,
           fmt_pct(st.pool_hits, st.pool_hits + st.pool_misses, b, sizeof(b)));
    printf("%-17s%" PRIu64 " (segments that got a lesser backing than preferred)\n", "fallbacks",
           st.backing_fallbacks);
    printf("%-17s%" PRIu64 " refills put off during a copy; %" PRIu64
           " seals that waited over 4 ms in the kernel\n",
           "pool/seal", st.pool_yields, st.seal_waits);
    printf("%-17s", "numa");
    {
        bool any = false;
        for (int i = 0; i < 8; i++) {
            if (!st.node_bytes[i])
                continue;
            printf("%snode %d: %s", any ? ", " : "", i, fmt_size(st.node_bytes[i], a, sizeof(a)));
            any = true;
        }
        printf("%s\n", any ? "" : "no memory bound to a node");
    }
    if (st.trusted_producers)
        printf("%-17strusted: creates written in place, %s in their areas now (a producer "
               "can write its own sealed objects)\n",
               "producers", fmt_size(st.trusted_bytes, a, sizeof(a)));
    else
        printf("%-17sstrict: no client can write a sealed object\n", "producers");
    printf("%-17s%" PRIu64 "\n", "clients", st.clients);
    printf("%-17screates %" PRIu64 ", seals %" PRIu64 ", aborts %" PRIu64 ", gets %" PRIu64 "\n",
           "operations", st.creates, st.seals, st.aborts, st.gets);
    printf("%-17sreleases %" PRIu64 ", deletes %" PRIu64 ", evictions %" PRIu64 "\n", "",
           st.releases, st.deletes, st.evictions);
    printf("%-17s%" PRIu64 " (%" PRIu64 " timed out)\n", "waits", st.waits, st.wait_timeouts);
    printf("%-17s%" PRIu64 " holding %s; %" PRIu64 " get replies held for unread fds\n",
           "parked now", st.parked_requests, fmt_size(st.parked_bytes, a, sizeof(a)),
           st.fd_deferred);
    printf("%-17s%" PRIu64 "\n", "protocol errors", st.protocol_errors);
    printf("%-17s%s", "bookkeeping", fmt_size(st.bookkeeping_bytes, a, sizeof(a)));
    if (st.objects)
        printf(" (%s per object)", fmt_size(st.bookkeeping_bytes / st.objects, b, sizeof(b)));
    printf("\n");
    if (!(st.spill_mode & SS_SPILL_MODE_ON)) {
        printf("%-17soff\n", "spilling");
        return CLI_OK;
    }
    printf("%-17s%s, %s I/O, queue depth %" PRIu64 "\n", "spilling",
           (st.spill_mode & SS_SPILL_MODE_URING) ? "io_uring" : "worker threads",
           (st.spill_mode & SS_SPILL_MODE_DIRECT) ? "O_DIRECT" : "buffered", st.spill_queue_depth);
    printf("%-17s%s, %s read\n", "startup scan",
           (st.spill_mode & SS_SPILL_MODE_SCANNING) ? "running" : "done",
           fmt_size(st.spill_scan_bytes, a, sizeof(a)));
    printf("%-17s%" PRIu64 " objects, %s on disk only; %" PRIu64 " files, %s\n", "spilled",
           st.spilled_objects, fmt_size(st.spilled_bytes, a, sizeof(a)), st.spill_files,
           fmt_size(st.spill_disk_bytes, b, sizeof(b)));
    printf("%-17s%" PRIu64 " objects, %s", "spills", st.spills,
           fmt_size(st.spill_bytes, a, sizeof(a)));
    if (st.spill_ns)
        printf(" at %.2f GB/s", gbps(st.spill_bytes, st.spill_ns));
    printf("\n%-17s%" PRIu64 " objects, %s", "restores", st.restores,
           fmt_size(st.restore_bytes, a, sizeof(a)));
    if (st.restore_ns)
        printf(" at %.2f GB/s", gbps(st.restore_bytes, st.restore_ns));
    printf("\n%-17sspill %" PRIu64 ", restore %" PRIu64 ", lost %" PRIu64
           " (damaged or missing records)\n", "spill errors", st.spill_errors,
           st.restore_errors, st.spill_lost);
    return CLI_OK;
}

static int info_cmp(const void *a, const void *b)
{
    return memcmp(((const ss_obj_info *)a)->id.b, ((const ss_obj_info *)b)->id.b, SS_ID_SIZE);
}

static int cmd_ls(struct cli *cli)
{
    ss_obj_info *all = NULL;
    size_t n = 0, cap = 0;
    uint64_t cursor = 0, total = 0;
    int rc;

    /* Collect first, print after: the output is sorted, and a failure
     * midway leaves no half-written JSON array behind. */
    for (;;) {
        uint64_t before = cursor;

        if (cap - n < CLI_LIST_BATCH) {
            size_t ncap = cap ? cap * 2 : CLI_LIST_BATCH;
            ss_obj_info *na = realloc(all, ncap * sizeof(*na));
            if (!na) {
                free(all);
                msg("ls: out of memory after %zu objects", n);
                return CLI_FAIL;
            }
            all = na;
            cap = ncap;
        }
        rc = ss_list(cli->c, &cursor, all + n, CLI_LIST_BATCH);
        if (rc < 0) {
            free(all);
            return fail_api("ls", rc, NULL);
        }
        if (rc > CLI_LIST_BATCH) { /* a library bug; do not read past the batch */
            free(all);
            msg("ls: the library returned %d entries for a batch of %d", rc, CLI_LIST_BATCH);
            return CLI_FAIL;
        }
        n += (size_t)rc;
        if (cursor == 0)
            break;
        if (rc == 0 && cursor == before) {
            free(all);
            msg("ls: the store's listing does not advance (cursor %" PRIu64 ")", cursor);
            return CLI_FAIL;
        }
    }
    if (n > 1)
        qsort(all, n, sizeof(*all), info_cmp);

    if (cli->json) {
        putchar('[');
        for (size_t i = 0; i < n; i++) {
            const ss_obj_info *o = &all[i];
            char hex[SS_ID_HEX_LEN], bk[sizeof(o->backing) + 1];

            ss__id_hex(&o->id, hex);
            backing_name(o, bk);
            printf("%s\n {\"id\": \"%s\", \"state\": \"%s\", \"size\": %" PRIu64
                   ", \"meta_size\": %" PRIu64 ", \"refs\": %" PRIu32 ", \"backing\": ",
                   i ? "," : "", hex, state_name(o->state), o->size, o->meta_size, o->refs);
            json_cstr(stdout, bk);
            if (o->node >= 0)
                printf(", \"node\": %" PRId32, o->node);
            else
                printf(", \"node\": null");
            printf(", \"lifetime\": %s}",
                   (o->flags & SS_LIFETIME_CREATOR) ? "\"creator\"" : "null");
        }
        printf("%s]\n", n ? "\n" : "");
        free(all);
        return CLI_OK;
    }

    printf("%-40s  %-7s  %10s  %10s  %5s  %-7s  %4s  %s\n", "ID", "STATE", "SIZE", "META",
           "REFS", "BACKING", "NODE", "LIFETIME");
    for (size_t i = 0; i < n; i++) {
        const ss_obj_info *o = &all[i];
        char hex[SS_ID_HEX_LEN], bk[sizeof(o->backing) + 1], sz[16], ms[16], node[16];

        ss__id_hex(&o->id, hex);
        backing_name(o, bk);
        if (o->node >= 0)
            snprintf(node, sizeof(node), "%" PRId32, o->node);
        else
            strcpy(node, "-");
        printf("%-40s  %-7s  %10s  %10s  %5" PRIu32 "  %-7s  %4s  %s\n", hex,
               state_name(o->state), fmt_size(o->size, sz, sizeof(sz)),
               fmt_size(o->meta_size, ms, sizeof(ms)), o->refs, bk, node,
               (o->flags & SS_LIFETIME_CREATOR) ? "creator" : "-");
        total += o->size;
    }
    {
        char sz[16];
        printf("%zu object%s, %s\n", n, n == 1 ? "" : "s", fmt_size(total, sz, sizeof(sz)));
    }
    free(all);
    return CLI_OK;
}

static int random_id(ss_id *id)
{
    size_t got = 0;

    while (got < sizeof(id->b)) {
        ssize_t n = getrandom(id->b + got, sizeof(id->b) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

static const char *put_hint(int err)
{
    switch (-err) {
    case EEXIST: return "an object with this id exists: pick another --id, or rm it first";
    case ENOSPC: return "the store is full: delete objects or give it more capacity";
    case EINVAL: return "the store refused the size or metadata";
    default: return NULL;
    }
}

/* Seal, retrying -EBUSY briefly: it means pages are still pinned by I/O
 * that is finishing (our read() has returned, so it clears quickly). */
static int seal_retry(ss_client *c, const ss_id *id)
{
    int rc;

    for (int tries = 0;; tries++) {
        rc = ss_seal(c, id);
        if (rc != -EBUSY || tries >= 20)
            return rc;
        nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000 * 1000 }, NULL);
    }
}

static int cmd_put(struct cli *cli)
{
    const char *src;
    char what[96 + PATH_MAX];
    char hex[SS_ID_HEX_LEN];
    const char *meta = cli->opt_meta;
    size_t meta_len = meta ? strlen(meta) : 0;
    struct stat sb;
    ss_id id;
    int fd, rc, ret = CLI_FAIL;
    uint64_t size;

    if (!check_npos(cli, 1, 1))
        return CLI_USAGE;
    src = cli->pos[0];
    if (cli->opt_id) {
        if (!parse_id_arg(cli, cli->opt_id, &id))
            return CLI_USAGE;
    } else if ((rc = random_id(&id)) < 0) {
        msg("put: cannot make a random id: %s (give one with --id)", ss_strerror(rc));
        return CLI_FAIL;
    }
    if (meta_len > CLI_META_MAX) {
        msg("put: --meta is %zu bytes, more than the %u allowed", meta_len, CLI_META_MAX);
        return CLI_USAGE;
    }
    ss__id_hex(&id, hex);
    snprintf(what, sizeof(what), "put %s", src);

    if (strcmp(src, "-") == 0)
        fd = STDIN_FILENO;
    else if ((fd = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
        msg("%s: cannot open: %s", what, strerror(errno));
        return CLI_FAIL;
    }
    if (fstat(fd, &sb) < 0) {
        msg("%s: cannot stat: %s", what, strerror(errno));
        goto out_close;
    }
    if (S_ISDIR(sb.st_mode)) {
        msg("%s: is a directory", what);
        goto out_close;
    }
    if ((ret = cli_connect(cli)) != CLI_OK)
        goto out_close;
    ret = CLI_FAIL;

    if (S_ISREG(sb.st_mode) && sb.st_size > (off_t)CLI_PUT_INLINE_MAX) {
        /* Known size: read in place into the object's writable view. */
        void *data;
        ssize_t n;
        char extra;

        size = (uint64_t)sb.st_size;
        rc = ss_create(cli->c, &id, size, meta, meta_len, &data);
        if (rc < 0) {
            ret = fail_api(what, rc, put_hint(rc));
            goto out_close;
        }
        n = read_full(fd, data, size);
        if (n >= 0 && (uint64_t)n == size)
            n = read_full(fd, &extra, 1) == 0 ? (ssize_t)size : -EAGAIN;
        if (n < 0 || (uint64_t)n != size) {
            if (n < 0 && n != -EAGAIN)
                msg("%s: read failed: %s", what, strerror((int)-n));
            else
                msg("%s: the file changed size while being read", what);
            if ((rc = ss_abort(cli->c, &id)) < 0 && err_is_nostore(rc))
                ret = CLI_NOSTORE;
            goto out_close;
        }
        rc = seal_retry(cli->c, &id);
        if (rc < 0) {
            ret = fail_api(what, rc, rc == -EBUSY ? "pages of the object are still pinned" : NULL);
            if (rc == -EBUSY && (rc = ss_abort(cli->c, &id)) < 0)
                msg("%s: abort after a failed seal: %s", what, ss_strerror(rc));
            goto out_close;
        }
        rc = ss_release(cli->c, &id);
        if (rc < 0 && !err_is_nostore(rc)) { /* the object is stored; say so, but it worked */
            msg("%s: release after seal: %s", what, ss_strerror(rc));
        }
    } else {
        /* Small, or of unknown size (pipe, tty, /proc file): buffer it. */
        unsigned char *buf = NULL;
        size_t len = 0;

        rc = read_stream(fd, &buf, &len);
        if (rc < 0) {
            msg("%s: read failed: %s", what, ss_strerror(rc));
            goto out_close;
        }
        size = len;
        rc = ss_put(cli->c, &id, buf, len, meta, meta_len);
        free(buf);
        if (rc < 0) {
            ret = fail_api(what, rc, put_hint(rc));
            goto out_close;
        }
    }

    if (cli->json)
        printf("{\"id\": \"%s\", \"size\": %" PRIu64 "}\n", hex, size);
    else
        printf("%s\n", hex);
    ret = CLI_OK;
out_close:
    if (fd != STDIN_FILENO)
        close(fd);
    return ret;
}

static int cmd_get(struct cli *cli)
{
    char what[64], hex[2 * SS_ID_SIZE + 1];
    long long timeout = 0;
    ss_object obj;
    ss_id id;
    int rc, out = STDOUT_FILENO, ret = CLI_FAIL;

    if (!check_npos(cli, 1, 1))
        return CLI_USAGE;
    if (!parse_id_arg(cli, cli->pos[0], &id))
        return CLI_USAGE;
    if (cli->opt_timeout) {
        if (strcmp(cli->opt_timeout, "inf") == 0 || strcmp(cli->opt_timeout, "forever") == 0)
            timeout = -1;
        else if (parse_ll(cli->opt_timeout, -1, INT64_MAX, &timeout) < 0) {
            msg("get: bad --timeout '%s': milliseconds, or -1 to wait forever", cli->opt_timeout);
            return CLI_USAGE;
        }
    }
    if (cli->opt_output && !*cli->opt_output) {
        msg("get: -o needs a file name");
        return CLI_USAGE;
    }
    ss__id_hex(&id, hex);
    snprintf(what, sizeof(what), "get %s", hex);
    if ((ret = cli_connect(cli)) != CLI_OK)
        return ret;

    rc = ss_get(cli->c, &id, 1, timeout, &obj);
    if (rc < 0)
        return fail_api(what, rc, NULL);
    if (rc == 0 || !obj.data) {
        if (timeout != 0)
            msg("%s: no such object (none was sealed within the timeout; is the id right?)", what);
        else
            msg("%s: no such object (is the id right? to wait for it, use --timeout)", what);
        return CLI_NOTFOUND;
    }

    /* Open the output only now: a failed get leaves an existing file alone. */
    if (cli->opt_output) {
        out = open(cli->opt_output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (out < 0) {
            msg("%s: cannot open %s: %s", what, cli->opt_output, strerror(errno));
            ret = CLI_FAIL;
            goto out_release;
        }
    }
    if (cli->json) {
        printf("{\"id\": \"%s\", \"size\": %" PRIu64 ", \"meta_size\": %" PRIu64 ", \"meta\": ", hex,
               obj.size, obj.meta_size);
        json_str(stdout, obj.meta ? obj.meta : "", obj.meta ? obj.meta_size : 0);
        printf(", \"output\": ");
        if (cli->opt_output)
            json_cstr(stdout, cli->opt_output);
        else
            printf("null");
        printf("}\n");
    }
    if (!cli->json || cli->opt_output) {
        const void *p = cli->opt_show_meta && !cli->json ? obj.meta : obj.data;
        uint64_t len = cli->opt_show_meta && !cli->json ? obj.meta_size : obj.size;

        if (len > SIZE_MAX)
            rc = -EFBIG;
        else
            rc = len && p ? write_full(out, p, (size_t)len) : 0;
        if (rc < 0) {
            msg("%s: writing to %s: %s", what, cli->opt_output ? cli->opt_output : "standard output",
                strerror(-rc));
            ret = CLI_FAIL;
            goto out_close;
        }
    }
    ret = CLI_OK;
out_close:
    if (out != STDOUT_FILENO && close(out) < 0 && ret == CLI_OK) {
        msg("%s: writing to %s: %s", what, cli->opt_output, strerror(errno));
        ret = CLI_FAIL;
    }
out_release:
    (void)ss_release(cli->c, &id);
    return ret;
}

static int cmd_rm(struct cli *cli)
{
    ss_id ids[8];
    bool deleted[8] = { false };
    int ret = CLI_OK;

    if (!check_npos(cli, 1, 8))
        return CLI_USAGE;
    for (int i = 0; i < cli->npos; i++)
        if (!parse_id_arg(cli, cli->pos[i], &ids[i]))
            return CLI_USAGE;
    if ((ret = cli_connect(cli)) != CLI_OK)
        return ret;

    for (int i = 0; i < cli->npos; i++) {
        char what[64], hex[2 * SS_ID_SIZE + 1];
        int rc, r;

        ss__id_hex(&ids[i], hex);
        snprintf(what, sizeof(what), "rm %s", hex);
        rc = ss_delete(cli->c, &ids[i]);
        if (rc == 0) {
            deleted[i] = true;
            continue;
        }
        if (rc == -ENOENT) {
            msg("%s: no such object (is the id right?)", what);
            r = CLI_NOTFOUND;
        } else if (rc == -EBUSY) {
            msg("%s: the object is still being written (not sealed yet)", what);
            r = CLI_FAIL;
        } else {
            r = fail_api(what, rc, NULL);
        }
        if (ret == CLI_OK) /* the first failure decides the status */
            ret = r;
        if (r == CLI_NOSTORE)
            break;
    }
    if (cli->json) {
        bool first = true;

        printf("{\"deleted\": [");
        for (int i = 0; i < cli->npos; i++) {
            char hex[SS_ID_HEX_LEN];
            if (!deleted[i])
                continue;
            ss__id_hex(&ids[i], hex);
            printf("%s\"%s\"", first ? "" : ", ", hex);
            first = false;
        }
        printf("]}\n");
    }
    return ret;
}

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

static void print_event(const struct cli *cli, const ss_event *ev)
{
    char hex[SS_ID_HEX_LEN], tbuf[48], sz[16];
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    ss__id_hex(&ev->id, hex);
    if (cli->json) {
        gmtime_r(&ts.tv_sec, &tm);
        strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
        printf("{\"time\": \"%s.%03ldZ\", \"event\": \"%s\", \"id\": \"%s\", \"size\": %" PRIu64 "}\n",
               tbuf, ts.tv_nsec / 1000000, event_name(ev->type), hex, ev->size);
    } else {
        localtime_r(&ts.tv_sec, &tm);
        strftime(tbuf, sizeof(tbuf), "%H:%M:%S", &tm);
        printf("%s.%03ld  %-7s  %s  %10s\n", tbuf, ts.tv_nsec / 1000000, event_name(ev->type), hex,
               fmt_size(ev->size, sz, sizeof(sz)));
    }
    /* One line per event, now: readers follow the stream live. */
    fflush(stdout);
}

static int cmd_watch(struct cli *cli)
{
    long long count = 0, seen = 0;
    sigset_t block, waitmask;
    struct sigaction sa;
    int fd = -1, rc, ret;

    if (!check_npos(cli, 0, 0))
        return CLI_USAGE;
    if (cli->opt_count && parse_ll(cli->opt_count, 1, LLONG_MAX, &count) < 0) {
        msg("watch: bad --count '%s': a number of events, 1 or more", cli->opt_count);
        return CLI_USAGE;
    }

    /*
     * SIGINT/SIGTERM end the watch cleanly. They stay blocked except inside
     * ppoll(), so a signal can neither slip in between the flag test and the
     * wait nor interrupt a half-printed line. Blocked before connecting, so
     * an embedded store's threads inherit the mask and the signal comes to
     * this thread.
     */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGTERM);

    if ((ret = cli_connect(cli)) != CLI_OK)
        return ret;
    rc = ss_subscribe(cli->c, SS_EVENT_SEALED | SS_EVENT_DELETED, &fd);
    if (rc < 0)
        return fail_api("watch: subscribe", rc, NULL);
    if (count)
        msg("watching seal and delete events (stops after %lld, or on Ctrl-C)", count);
    else
        msg("watching seal and delete events (Ctrl-C to stop)");

    ret = CLI_OK;
    while (!stop_signal && (!count || seen < count)) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        ss_event ev;

        rc = ss_event_next(fd, &ev);
        if (rc > 0) {
            print_event(cli, &ev);
            seen++;
            continue;
        }
        if (rc < 0) {
            if (rc == -ECONNRESET || err_is_nostore(rc))
                msg("watch: the store closed the subscription (it stopped, or this watcher fell "
                    "too far behind): %s", ss_strerror(rc));
            else
                msg("watch: reading events: %s", ss_strerror(rc));
            ret = err_is_nostore(rc) ? CLI_NOSTORE : CLI_FAIL;
            break;
        }
        rc = ppoll(&pfd, 1, NULL, &waitmask);
        if (rc < 0 && errno != EINTR) {
            msg("watch: poll: %s", strerror(errno));
            ret = CLI_FAIL;
            break;
        }
        if (rc > 0 && (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(pfd.revents & POLLIN)) {
            msg("watch: the store closed the subscription");
            ret = CLI_NOSTORE;
            break;
        }
    }
    ss_unsubscribe(fd);
    return ret;
}

/* The machine's check-up (tools/doctor.c); it connects on its own. */
static int cmd_doctor(struct cli *cli)
{
    struct doctor_args a = { .socket = cli->socket, .spill_dir = cli->opt_spill_dir,
                             .json = cli->json };

    if (!check_npos(cli, 0, 0))
        return CLI_USAGE;
    if (cli->embed) {
        msg("doctor: --embed does not apply (doctor looks for a running store)");
        return CLI_USAGE;
    }
    if (a.spill_dir && !*a.spill_dir) {
        msg("doctor: --spill-dir needs a directory");
        return CLI_USAGE;
    }
    return sealstore_doctor(&a);
}

/* ------------------------------------------------------------------ main */

static int run(struct cli *cli)
{
    switch (cli->cmd) {
    case CMD_STAT:
    case CMD_LS: {
        int ret;
        if (!check_npos(cli, 0, 0))
            return CLI_USAGE;
        if ((ret = cli_connect(cli)) != CLI_OK)
            return ret;
        return cli->cmd == CMD_STAT ? cmd_stat(cli) : cmd_ls(cli);
    }
    case CMD_PUT: return cmd_put(cli);
    case CMD_GET: return cmd_get(cli);
    case CMD_RM: return cmd_rm(cli);
    case CMD_WATCH: return cmd_watch(cli);
    case CMD_DOCTOR: return cmd_doctor(cli);
    case CMD_HELP: {
        enum cli_cmd which;
        if (!check_npos(cli, 0, 1))
            return CLI_USAGE;
        if (cli->npos == 0) {
            fputs(usage_text, stdout);
            return CLI_OK;
        }
        which = cmd_lookup(cli->pos[0]);
        if (which == CMD_NONE) {
            msg("help: unknown command '%s' (see sealstore --help)", cli->pos[0]);
            return CLI_USAGE;
        }
        fputs(cmd_help[which], stdout);
        return CLI_OK;
    }
    default:
        return CLI_USAGE;
    }
}

int sealstore_cli_main(int argc, char **argv);
int sealstore_cli_main(int argc, char **argv)
{
    struct cli cli;
    int ret;

    memset(&cli, 0, sizeof(cli));
    cli.cmd = CMD_NONE;
    switch (parse_args(&cli, argc, argv)) {
    case PARSE_ERROR:
        return CLI_USAGE;
    case PARSE_HELP:
        fputs(cli.cmd == CMD_NONE ? usage_text : cmd_help[cli.cmd], stdout);
        ret = CLI_OK;
        goto out_flush;
    case PARSE_VERSION:
        printf("sealstore %s (libsealstore %s)\n", PACKAGE_VERSION, ss_version());
        ret = CLI_OK;
        goto out_flush;
    case PARSE_RUN:
        break;
    }
    if (cli.cmd == CMD_NONE) {
        fputs(usage_text, stderr);
        return CLI_USAGE;
    }
    if (cli.socket) {
        if (!*cli.socket || strlen(cli.socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            msg("--socket: '%.64s%s' is not a usable socket path (1 to %zu bytes)", cli.socket,
                strlen(cli.socket) > 64 ? "..." : "",
                sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
            return CLI_USAGE;
        }
    }
    ret = run(&cli);
    ss_disconnect(cli.c);
out_flush:
    /* Output that never made it (a full disk, a closed pipe) is a failure. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (ret == CLI_OK) {
            msg("writing to standard output: %s", strerror(errno));
            ret = CLI_FAIL;
        }
    }
    return ret;
}

#ifndef SEALSTORE_CLI_NO_MAIN
int main(int argc, char **argv)
{
    return sealstore_cli_main(argc, argv);
}
#endif
