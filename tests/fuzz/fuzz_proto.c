/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the wire protocol decoder (src/lib/proto.c): every
 * input goes through ss__proto_check_request() and ss__proto_check_reply(),
 * and, split by ss__proto_split_request(), each part through the former.
 *
 * Input format: byte 0 is the number of fds said to come with the
 * message (taken modulo SS_PROTO_MAX_FDS + 2, so "too many" is reachable);
 * the rest is the message. The message is copied into a buffer of exactly
 * its size, so ASan flags any read past `len`.
 *
 * Properties checked besides "no crash": both checkers are deterministic;
 * they return a valid type or -SS_E_PROTO / -SS_E_VERSION; anything they
 * accept has hdr.len equal to the received length and the type they report.
 *
 * Run with libFuzzer (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DSS_LIBFUZZER \
 *     -I include -I src/lib -I BUILDDIR tests/fuzz/fuzz_proto.c src/lib/proto.c \
 *     -o fuzz_proto
 *   ./fuzz_proto -max_len=70000 -max_total_time=300 NEWDIR tests/fuzz/corpus
 * Without -DSS_LIBFUZZER this builds as a plain program that replays files
 * or directories given as arguments (default: tests/fuzz/corpus below
 * $SS_SRCDIR). make check replays the corpus through tests/unit/t_proto.c,
 * which includes this file with SS_FUZZ_NO_MAIN.
 */
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_proto: property violated: %s\n", what);
    abort();
}

static void fuzz_check_result(int rc, const unsigned char *msg, size_t len)
{
    ss__msg_hdr h;

    if (rc == -SS_E_PROTO || rc == -SS_E_VERSION)
        return;
    if (rc <= 0 || rc >= SS_MSG__COUNT)
        fuzz_fail("result is neither a type nor -SS_E_PROTO/-SS_E_VERSION");
    if (len < sizeof(h))
        fuzz_fail("accepted a message shorter than its header");
    memcpy(&h, msg, sizeof(h));
    if (h.len != len || h.type != rc || h.magic != SS_PROTO_MAGIC ||
        h.version != SS_PROTO_VERSION)
        fuzz_fail("accepted a message whose header disagrees");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *msg;
    unsigned nfds;
    size_t len;
    int a, b;

    if (size < 1)
        return 0;
    nfds = data[0] % (SS_PROTO_MAX_FDS + 2);
    len = size - 1;
    msg = malloc(len ? len : 1);
    if (!msg)
        return 0;
    memcpy(msg, data + 1, len);

    a = ss__proto_check_request(msg, len, nfds);
    b = ss__proto_check_request(msg, len, nfds);
    if (a != b)
        fuzz_fail("check_request not deterministic");
    fuzz_check_result(a, msg, len);
    if (a > 0 && nfds != 0)
        fuzz_fail("a request with fds was accepted");

    a = ss__proto_check_reply(msg, len, nfds);
    b = ss__proto_check_reply(msg, len, nfds);
    if (a != b)
        fuzz_fail("check_reply not deterministic");
    fuzz_check_result(a, msg, len);

    /* a RELEASE leading a datagram: the store checks both parts apart,
     * the second from an aligned copy */
    {
        size_t first = ss__proto_split_request(msg, len);

        if (first > len || (first < len && first < sizeof(ss__msg_hdr)))
            fuzz_fail("split outside the datagram");
        if (first < len) {
            unsigned char *rest = malloc(len - first);

            if (rest) {
                memcpy(rest, msg + first, len - first);
                fuzz_check_result(ss__proto_check_request(msg, first, nfds), msg, first);
                fuzz_check_result(ss__proto_check_request(rest, len - first, nfds), rest,
                                  len - first);
                free(rest);
            }
        }
    }

    free(msg);
    return 0;
}

#if !defined(SS_LIBFUZZER)
#include <dirent.h>
#include <sys/stat.h>

/* Replay one file through the target. 0, or -1 if it cannot be read. */
static int fuzz_replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;

    if (!f)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

/* Replay a file, or every regular file of a directory. Returns how many
 * inputs ran, or -1 on an unreadable path. */
static long fuzz_replay_path(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    long count = 0;

    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode))
        return fuzz_replay_file(path) == 0 ? 1 : -1;
    d = opendir(path);
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char p[4096 + 512];

        if (e->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(p, sizeof(p), "%.4095s/%s", path, e->d_name) >= sizeof(p))
            continue;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (fuzz_replay_file(p) != 0) {
            closedir(d);
            return -1;
        }
        count++;
    }
    closedir(d);
    return count;
}

#if !defined(SS_FUZZ_NO_MAIN)
int main(int argc, char **argv)
{
    char def[4096];
    const char *src = getenv("SS_SRCDIR");

    if (argc < 2) {
        snprintf(def, sizeof(def), "%s/tests/fuzz/corpus", src ? src : ".");
        long n = fuzz_replay_path(def);
        if (n < 0) {
            fprintf(stderr, "cannot read %s\n", def);
            return 1;
        }
        printf("replayed %ld inputs from %s\n", n, def);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        long n = fuzz_replay_path(argv[i]);
        if (n < 0) {
            fprintf(stderr, "cannot read %s\n", argv[i]);
            return 1;
        }
        printf("replayed %ld inputs from %s\n", n, argv[i]);
    }
    return 0;
}
#endif /* SS_FUZZ_NO_MAIN */
#endif /* SS_LIBFUZZER */
