/* SPDX-License-Identifier: MIT */
/*
 * cold_probe: what a pause before an operation costs the operation. Times
 * a 1 MiB memcpy and a 1 MiB process_vm_readv of this process (the copy a
 * PUTV makes) between faulted buffers, each after an idle pause of 0, 5
 * and 50 ms (the bench's pool wait was 50 ms of 5 ms polls), the median of
 * 30; then the same with the pause spent spinning, to tell CPU idle states
 * from caches and TLBs gone cold. Not part of make check or the suite: a
 * diagnostic behind the put figures (bench-store.c, struct put_arg).
 *
 *   gcc -O2 -o /tmp/cold_probe bench/cold_probe.c && /tmp/cold_probe
 *
 * Measured on the 2-vCPU VM (medians, 1 MiB, two runs under different
 * loads): memcpy 52-64 us right after the previous one, 75-85 us after
 * 5 ms, 174-271 us after 50 ms whether asleep or spinning (3.9-6 GB/s:
 * 0.4-0.63x the streaming memcpy baseline of 9.5 GB/s); process_vm_readv
 * 86-120 us hot, 176-211 us after 5 ms, 321-568 us after 50 ms. A 1 MiB
 * put timed after a 50 ms pause therefore cannot reach 0.6x memcpy
 * whatever the store does: its one copy alone runs below that.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SIZE (1u << 20)
#define REPS 30

static uint64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void pause_ms(int ms, int spin)
{
    if (!spin) {
        usleep((useconds_t)ms * 1000);
        return;
    }
    for (uint64_t end = now_ns() + (uint64_t)ms * 1000000ull; now_ns() < end;)
        ;
}

int main(void)
{
    static const int gaps[] = { 0, 5, 50 };
    char *src = malloc(SIZE);
    char *dst = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (!src || dst == MAP_FAILED)
        return 1;
    memset(src, 3, SIZE);
    memset(dst, 1, SIZE);
    for (int spin = 0; spin < 2; spin++) {
        for (size_t g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++) {
            uint64_t mc[REPS], pv[REPS];

            for (int i = 0; i < REPS; i++) {
                struct iovec l = { dst, SIZE }, r = { src, SIZE };
                uint64_t t0;

                pause_ms(gaps[g], spin);
                t0 = now_ns();
                memcpy(dst, src, SIZE);
                mc[i] = now_ns() - t0;
                __asm__ volatile("" ::"r"(dst) : "memory");
                pause_ms(gaps[g], spin);
                t0 = now_ns();
                if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) != (ssize_t)SIZE)
                    return 2;
                pv[i] = now_ns() - t0;
            }
            qsort(mc, REPS, sizeof(mc[0]), cmp);
            qsort(pv, REPS, sizeof(pv[0]), cmp);
            printf("pause %2d ms %-8s: memcpy %6.1f us (%5.2f GB/s), process_vm_readv %6.1f us\n",
                   gaps[g], spin ? "spinning" : "asleep", mc[REPS / 2] / 1e3,
                   SIZE / (mc[REPS / 2] / 1e9) / 1e9, pv[REPS / 2] / 1e3);
        }
    }
    return 0;
}
