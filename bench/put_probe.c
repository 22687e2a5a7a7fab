/* SPDX-License-Identifier: MIT */
/*
 * put_probe: time each phase of a 64 MiB put (ss_create, writing *data,
 * ss_seal, ss_release) through an embedded store, 6 times. Not part of
 * make check or the suite: a diagnostic behind the put figures.
 *
 *   gcc -O2 -o /tmp/put_probe bench/put_probe.c -Iinclude -Lbuild/src/lib/.libs -lsealstore
 *   SEALSTORE_POOL_SIZE=256M LD_LIBRARY_PATH=build/src/lib/.libs /tmp/put_probe /tmp/p.sock warm
 *   SEALSTORE_POOL_SIZE=0    LD_LIBRARY_PATH=build/src/lib/.libs /tmp/put_probe /tmp/p.sock cold
 *
 * (reserve hugepages first, e.g. echo 600 > /proc/sys/vm/nr_hugepages, to
 * measure 2 MiB pages; give them back after).
 */
#define _GNU_SOURCE
#include "sealstore.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv)
{
    ss_client *c; size_t sz = 64u << 20; char *src = malloc(sz); memset(src, 3, sz);
    if (ss_connect(argv[1], SS_CONNECT_EMBED, &c)) return 1;
    usleep(1500000); /* let the pool fill */
    for (int i = 0; i < 6; i++) {
        ss_id id; memset(&id, 0, sizeof id); snprintf((char *)id.b, 20, "p%d", i);
        void *p; double t0 = now();
        if (ss_create(c, &id, sz, NULL, 0, &p)) return 2;
        double t1 = now(); memcpy(p, src, sz);
        double t2 = now(); if (ss_seal(c, &id)) return 3;
        double t3 = now(); ss_release(c, &id);
        double t4 = now(); if (ss_delete(c, &id)) return 4;
        printf("%s create %.2f ms  memcpy %.2f ms (%.1f GB/s)  seal %.2f ms  release %.2f ms  total %.1f GB/s\n", argv[2],
               (t1-t0)*1e3, (t2-t1)*1e3, sz/(t2-t1)/1e9, (t3-t2)*1e3, (t4-t3)*1e3, sz/(t4-t0)/1e9);
        usleep(300000);
    }
    ss_disconnect(c);
    return 0;
}
