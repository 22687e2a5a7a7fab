/* SPDX-License-Identifier: MIT */
/*
 * stage_probe: create + memset + seal + release (+ delete, so the store
 * never fills) through an embedded store at 64 KiB (a small object: the
 * inline path), 64 KiB + 1 (the smallest staged size), 1 MiB and 64 MiB,
 * beside a memcpy of 256 MiB in the same run; prints GB/s, objects/s and
 * the ratio to memcpy. Not part of make check or the suite: a diagnostic
 * behind the copy-on-seal figures. Compare SEALSTORE_STAGE_MAX=0 (every
 * create written in place in its own segment) with the default (staged).
 *
 *   gcc -O2 -o /tmp/stage_probe bench/stage_probe.c -Iinclude -Lbuild/src/lib/.libs -lsealstore
 *   SEALSTORE_HUGEPAGES=off SEALSTORE_POOL_SIZE=0 SEALSTORE_STAGE_MAX=0 \
 *       LD_LIBRARY_PATH=build/src/lib/.libs /tmp/stage_probe /tmp/s.sock
 *   SEALSTORE_HUGEPAGES=off SEALSTORE_POOL_SIZE=0 \
 *       LD_LIBRARY_PATH=build/src/lib/.libs /tmp/stage_probe /tmp/s.sock
 */
#define _GNU_SOURCE
#include "sealstore.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Best of 5 passes of a 256 MiB memcpy between warm buffers: GB/s. */
static double memcpy_gbs(void)
{
    size_t n = 256u << 20;
    char *a = malloc(n), *b = malloc(n);
    double best = 0;

    if (!a || !b)
        exit(1);
    memset(a, 1, n);
    memset(b, 2, n);
    for (int i = 0; i < 5; i++) {
        double t0 = now();
        memcpy(b, a, n);
        double g = (double)n / (now() - t0) / 1e9;
        if (g > best)
            best = g;
    }
    free(a);
    free(b);
    return best;
}

int main(int argc, char **argv)
{
    static const struct {
        size_t size;
        int ops;
    } runs[] = { { 64u << 10, 4000 }, { (64u << 10) + 1, 4000 }, { 1u << 20, 1000 },
                 { 64u << 20, 24 } };
    ss_client *c;

    if (argc < 2 || ss_connect(argv[1], SS_CONNECT_EMBED, &c))
        return 1;
    double mc = memcpy_gbs();
    printf("memcpy 256 MiB: %.2f GB/s\n", mc);
    for (size_t r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
        double best = 0;

        for (int pass = 0; pass < 3; pass++) {
            double t0 = now();
            for (int i = 0; i < runs[r].ops; i++) {
                ss_id id;
                void *p;

                memset(&id, 0, sizeof(id));
                snprintf((char *)id.b, sizeof(id.b), "sp%zu-%d-%d", r, pass, i);
                if (ss_create(c, &id, runs[r].size, NULL, 0, &p))
                    return 2;
                memset(p, i & 0xff, runs[r].size);
                if (ss_seal(c, &id) || ss_release(c, &id) || ss_delete(c, &id))
                    return 3;
            }
            double s = now() - t0;
            if (runs[r].ops / s > best)
                best = runs[r].ops / s;
        }
        double gbs = best * (double)runs[r].size / 1e9;
        printf("%10zu B: %9.0f /s  %6.2f GB/s  %.3fx memcpy\n", runs[r].size, best, gbs, gbs / mc);
    }
    ss_disconnect(c);
    return 0;
}
