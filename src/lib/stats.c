/* SPDX-License-Identifier: MIT */
/*
 * Stats: process-wide counters of the memory layer (mimalloc src/stats.c).
 *
 * Every field comes from the SS_STATS X-macro in stats.h, so the struct and
 * the JSON dump cannot drift apart. Updates are relaxed atomics: each field
 * is exact on its own, but a reader may see one field updated and its
 * neighbour not yet (a segment's bytes before its count). That is fine for
 * monitoring; nothing makes decisions from a cross-field snapshot.
 *
 * peak is raised with a CAS loop after cur moves, so it may briefly lag cur
 * but never misses a maximum: whichever thread pushed cur highest also
 * tries to store that value, and a CAS only ever raises peak.
 */
#include "internal.h"
#include "stats.h"

#include <inttypes.h>

ss__stats ss__g_stats;

void ss__count_add(ss__count *c, int64_t delta)
{
    int64_t cur = atomic_fetch_add_explicit(&c->cur, delta, memory_order_relaxed) + delta;
    int64_t peak = atomic_load_explicit(&c->peak, memory_order_relaxed);

    while (cur > peak &&
           !atomic_compare_exchange_weak_explicit(&c->peak, &peak, cur,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    if (delta > 0)
        atomic_fetch_add_explicit(&c->total, (uint64_t)delta, memory_order_relaxed);
}

static ss__count *backing_count(int backing)
{
    switch (backing) {
    case SS_BACKING_4K: return &ss__g_stats.seg_bytes_4k;
    case SS_BACKING_THP: return &ss__g_stats.seg_bytes_thp;
    case SS_BACKING_2M: return &ss__g_stats.seg_bytes_2m;
    case SS_BACKING_1G: return &ss__g_stats.seg_bytes_1g;
    }
    return NULL;
}

void ss__stats_segment(const ss__seg *seg, int sign)
{
    int64_t bytes;
    ss__count *bc;

    if (!seg || sign == 0)
        return;
    bytes = (int64_t)seg->size * (sign > 0 ? 1 : -1);
    bc = backing_count(seg->backing);
    SS_ASSERT(bc != NULL);
    if (bc)
        ss__count_add(bc, bytes);
    ss__count_add(&ss__g_stats.segments, sign > 0 ? 1 : -1);
    if (sign > 0)
        ss__counter_add(&ss__g_stats.seg_created, 1);
    /* negative nodes are SS_NODE_ANY / SS_NODE_INTERLEAVE: not one node's */
    if (seg->node >= 0 && seg->node < SS_MAX_NODES)
        atomic_fetch_add_explicit(&ss__g_stats.node_bytes[seg->node], bytes,
                                  memory_order_relaxed);
}

void ss__stats_json(FILE *f)
{
    const char *sep = "";

    if (!f)
        return;
    fputc('{', f);
#define SS_J_COUNT(n)                                                          \
    fprintf(f, "%s\"" #n "\":{\"cur\":%" PRId64 ",\"peak\":%" PRId64           \
               ",\"total\":%" PRIu64 "}",                                      \
            sep, atomic_load_explicit(&ss__g_stats.n.cur, memory_order_relaxed),  \
            atomic_load_explicit(&ss__g_stats.n.peak, memory_order_relaxed),   \
            atomic_load_explicit(&ss__g_stats.n.total, memory_order_relaxed)); \
    sep = ",";
#define SS_J_COUNTER(n)                                                        \
    fprintf(f, "%s\"" #n "\":%" PRIu64, sep,                                   \
            atomic_load_explicit(&ss__g_stats.n, memory_order_relaxed));       \
    sep = ",";
    SS_STATS(SS_J_COUNT, SS_J_COUNTER)
#undef SS_J_COUNT
#undef SS_J_COUNTER
    fprintf(f, "%s\"node_bytes\":[", sep);
    for (int i = 0; i < SS_MAX_NODES; i++)
        fprintf(f, "%s%" PRId64, i ? "," : "",
                atomic_load_explicit(&ss__g_stats.node_bytes[i], memory_order_relaxed));
    fputs("]}", f); /* no newline: callers may embed the object */
}
