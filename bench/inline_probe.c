/* SPDX-License-Identifier: MIT */
/*
 * inline_probe: ss_put p50 at 1 KiB..64 KiB, to choose SEALSTORE_SMALL_MAX
 * (the inline limit). Run it with the limit at its cap and far below it:
 *
 *   gcc -O2 -o /tmp/inline_probe bench/inline_probe.c -Iinclude -Lbuild/src/lib/.libs -lsealstore
 *   for m in 64K 1K; do SEALSTORE_SMALL_MAX=$m LD_LIBRARY_PATH=build/src/lib/.libs \
 *       taskset -c 0 /tmp/inline_probe /tmp/i-$m.sock max=$m; done
 *
 * Result recorded beside SS_DEFAULT_SMALL_MAX in src/lib/options.h.
 */
#define _GNU_SOURCE
#include "sealstore.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv)
{
    ss_client *c; static char buf[1 << 20]; ss_id id; int N = 2000; double t[2000];
    if (ss_connect(argv[1], SS_CONNECT_EMBED, &c)) return 1;
    memset(buf, 7, sizeof buf);
    size_t sizes[] = {1024, 4096, 16384, 32768, 49152, 65536};
    for (size_t k = 0; k < 6; k++) {
        for (int i = 0; i < N + 200; i++) {
            memset(&id, 0, sizeof id); snprintf((char *)id.b, 20, "%zu-%d", sizes[k], i);
            double t0 = now();
            if (ss_put(c, &id, buf, sizes[k], NULL, 0)) return 2;
            if (i >= 200) t[i - 200] = now() - t0;
            if (ss_delete(c, &id)) return 3;
        }
        qsort(t, N, sizeof t[0], cmp);
        printf("%s size %6zu: put p50 %.1f us\n", argv[2], sizes[k], t[N / 2] * 1e6);
    }
    ss_disconnect(c);
    return 0;
}
