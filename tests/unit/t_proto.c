/* SPDX-License-Identifier: MIT */
/*
 * Wire protocol checks (src/lib/proto.c): every check the decoder makes,
 * one case at a time, valid messages of every type, a deterministic
 * mutation loop, and a replay of the fuzz corpus (tests/fuzz/corpus)
 * through the libFuzzer entry point itself.
 *
 * `t_proto --write-corpus DIR` writes the seed corpus (valid messages of
 * every type and interesting invalid ones) in the fuzz input format.
 */
#include "proto.h"
#include "segment.h"
#include "t_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SS_FUZZ_NO_MAIN
#include "../fuzz/fuzz_proto.c"

/* ------------------------------------------------------------ builders */

typedef struct msg {
    _Alignas(16) unsigned char b[SS_PROTO_MAX_MSG + 64];
    size_t len;
    unsigned nfds;
} msg;

static msg M; /* the message under test (too big for the stack) */

static void m_start(msg *m, uint16_t type, uint32_t flags, int32_t status, uint32_t req_id)
{
    ss__msg_hdr h;

    ss__proto_hdr(&h, type, req_id, 0, status, flags);
    memset(m->b, 0, sizeof(m->b));
    memcpy(m->b, &h, sizeof(h));
    m->len = sizeof(h);
    m->nfds = 0;
}

static void m_put(msg *m, const void *p, size_t n)
{
    if (n)
        memcpy(m->b + m->len, p, n);
    m->len += n;
}

static void m_fill(msg *m, int byte, size_t n)
{
    memset(m->b + m->len, byte, n);
    m->len += n;
}

/* set hdr.len from the bytes put */
static void m_end(msg *m)
{
    uint32_t l = (uint32_t)m->len;

    memcpy(m->b + offsetof(ss__msg_hdr, len), &l, sizeof(l));
}

/* patch a field at byte offset `off` of the message */
#define M_SET(m, off, type, val)                                              \
    do {                                                                      \
        type v_ = (type)(val);                                                \
        memcpy((m)->b + (off), &v_, sizeof(v_));                              \
    } while (0)

#define H sizeof(ss__msg_hdr)

static ss_id mkid(int n)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    id.b[0] = (unsigned char)n;
    id.b[19] = 0xa5;
    return id;
}

static int req(const msg *m)
{
    return ss__proto_check_request(m->b, m->len, m->nfds);
}

static int rep(const msg *m)
{
    return ss__proto_check_reply(m->b, m->len, m->nfds);
}

/* --- requests */

static void mk_req_hello(msg *m)
{
    ss__req_hello r = { .pid = 1234 };
    m_start(m, SS_MSG_HELLO, 0, 0, 1);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

static void mk_req_create(msg *m, uint32_t meta_size)
{
    ss__req_create r = { .id = mkid(1), .node = -1, .size = 1 << 20, .meta_size = meta_size };
    m_start(m, SS_MSG_CREATE, 0, 0, 2);
    m_put(m, &r, sizeof(r));
    m_fill(m, 'm', meta_size);
    m_end(m);
}

static void mk_req_seal(msg *m, uint64_t payload)
{
    ss__req_seal r = { .id = mkid(1), .payload_size = payload };
    m_start(m, SS_MSG_SEAL, 0, 0, 3);
    m_put(m, &r, sizeof(r));
    m_fill(m, 'p', (size_t)payload);
    m_end(m);
}

static void mk_req_id(msg *m, uint16_t type)
{
    ss__req_id r = { .id = mkid(2) };
    m_start(m, type, 0, 0, 4);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

static void mk_req_put(msg *m, uint32_t meta_size, uint64_t size)
{
    ss__req_put r = { .id = mkid(3), .node = 0, .size = size, .meta_size = meta_size };
    m_start(m, SS_MSG_PUT, 0, 0, 5);
    m_put(m, &r, sizeof(r));
    m_fill(m, 'm', meta_size);
    m_fill(m, 'd', (size_t)size);
    m_end(m);
}

/* A PUT_MANY of n records, record i with meta_size 4 * (i % 2) and size
 * 8 * i, their tail in order. */
static void mk_req_put_many(msg *m, uint32_t n)
{
    ss__req_put_many r = { .n = n };
    m_start(m, SS_MSG_PUT_MANY, 0, 0, 5);
    m_put(m, &r, sizeof(r));
    for (uint32_t i = 0; i < n; i++) {
        ss__req_put e = { .id = mkid((int)i), .node = -1, .size = 8 * i, .meta_size = 4 * (i % 2) };
        m_put(m, &e, sizeof(e));
    }
    for (uint32_t i = 0; i < n; i++) {
        m_fill(m, 'm', 4 * (i % 2));
        m_fill(m, 'd', 8 * i);
    }
    m_end(m);
}

/* Offset of field f of record i of a PUT_MANY. */
#define PM_REC(i, f) (H + sizeof(ss__req_put_many) + (size_t)(i) * sizeof(ss__req_put) + \
                      offsetof(ss__req_put, f))

/* A PUTV of niov buffers of 4096 * (i + 1) bytes each, meta_size meta. */
static void mk_req_putv(msg *m, uint32_t niov, uint32_t meta_size)
{
    ss__req_putv r = { .put = { .id = mkid(4), .node = -1, .meta_size = meta_size },
                       .niov = niov };
    for (uint32_t i = 0; i < niov; i++)
        r.put.size += 4096ull * (i + 1);
    m_start(m, SS_MSG_PUTV, 0, 0, 5);
    m_put(m, &r, sizeof(r));
    for (uint32_t i = 0; i < niov; i++) {
        ss__putv_iov v = { .base = 0x10000ull * (i + 1), .len = 4096ull * (i + 1) };
        m_put(m, &v, sizeof(v));
    }
    m_fill(m, 'm', meta_size);
    m_end(m);
}

/* Offset of field f of buffer i of a PUTV. */
#define PV_IOV(i, f) (H + sizeof(ss__req_putv) + (size_t)(i) * sizeof(ss__putv_iov) + \
                      offsetof(ss__putv_iov, f))

static void mk_req_get(msg *m, uint32_t n, int64_t timeout)
{
    ss__req_get r = { .n = n, .timeout_ms = timeout };
    m_start(m, SS_MSG_GET, 0, 0, 6);
    m_put(m, &r, sizeof(r));
    for (uint32_t i = 0; i < n; i++) {
        ss_id id = mkid((int)i);
        m_put(m, &id, sizeof(id));
    }
    m_end(m);
}

static void mk_req_release(msg *m, uint32_t n)
{
    ss__req_release r = { .n = n };
    m_start(m, SS_MSG_RELEASE, 0, 0, 0);
    m_put(m, &r, sizeof(r));
    for (uint32_t i = 0; i < n; i++) {
        ss_id id = mkid((int)i);
        m_put(m, &id, sizeof(id));
    }
    m_end(m);
}

static void mk_req_list(msg *m, uint32_t max)
{
    ss__req_list r = { .cursor = 7, .max = max };
    m_start(m, SS_MSG_LIST, 0, 0, 7);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

static void mk_req_stats(msg *m)
{
    m_start(m, SS_MSG_STATS, 0, 0, 8);
    m_end(m);
}

static void mk_req_subscribe(msg *m, uint32_t mask)
{
    ss__req_subscribe r = { .mask = mask };
    m_start(m, SS_MSG_SUBSCRIBE, 0, 0, 9);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

static void mk_req_index(msg *m, uint32_t first)
{
    ss__req_index r = { .first = first };
    m_start(m, SS_MSG_INDEX, 0, 0, 10);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

/* PINS or UNPIN (they share a body) with reserved word 1 set to r1. */
static void mk_req_pins(msg *m, uint16_t type, uint32_t r1)
{
    ss__req_pins r = { { 0, r1 } };
    m_start(m, type, 0, 0, 12);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

/* --- replies */

static void mk_rep_pins(msg *m, uint32_t nslots)
{
    ss__rep_pins r = { .nslots = nslots };
    m_start(m, SS_MSG_PINS, SS_MSGF_REPLY, 0, 12);
    m_put(m, &r, sizeof(r));
    m_end(m);
    m->nfds = 1;
}

static void mk_rep_status(msg *m, uint16_t type, int32_t status)
{
    m_start(m, type, SS_MSGF_REPLY, status, 11);
    m_end(m);
}

/* A PUT_MANY reply of n statuses: 0 but every third -EEXIST. */
static void mk_rep_put_many(msg *m, uint32_t n)
{
    ss__rep_put_many r = { .n = n };
    int32_t stored = 0;
    m_start(m, SS_MSG_PUT_MANY, SS_MSGF_REPLY, 0, 5);
    m_put(m, &r, sizeof(r));
    for (uint32_t i = 0; i < n; i++) {
        int32_t st = i % 3 == 2 ? -EEXIST : 0;
        stored += st == 0;
        m_put(m, &st, sizeof(st));
    }
    M_SET(m, offsetof(ss__msg_hdr, status), int32_t, stored);
    m_end(m);
}

/* An INDEX reply: n chunk fds from first of nchunks, plus the buckets'. */
static void mk_rep_index(msg *m, uint32_t nchunks, uint32_t first, uint32_t n)
{
    ss__rep_index r = { .nchunks = nchunks, .first = first, .n = n };
    m_start(m, SS_MSG_INDEX, SS_MSGF_REPLY, 0, 10);
    m_put(m, &r, sizeof(r));
    m_end(m);
    m->nfds = 1 + n;
}

static void mk_rep_hello(msg *m)
{
    ss__rep_hello r = { .store_id = 0x1234, .client_id = 3, .small_max = 65536,
                        .capacity = 1 << 30, .max_msg = SS_PROTO_MAX_MSG };
    m_start(m, SS_MSG_HELLO, SS_MSGF_REPLY, 0, 1);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

static void mk_rep_create_small(msg *m)
{
    ss__rep_create r = { .data = { .seg_id = 5, .seg_size = 4 << 20, .offset = 128, .size = 100,
                                   .fd_index = SS_FD_NONE, .kind = SS_SEG_SMALL } };
    m_start(m, SS_MSG_CREATE, SS_MSGF_REPLY, 0, 2);
    m_put(m, &r, sizeof(r));
    m_end(m);
}

static void mk_rep_create_object(msg *m)
{
    ss__rep_create r = { .data = { .seg_id = 9, .seg_size = 2 << 20, .offset = 0,
                                   .size = (2 << 20) - 5, .fd_index = 0,
                                   .kind = SS_SEG_OBJECT } };
    m_start(m, SS_MSG_CREATE, SS_MSGF_REPLY, 0, 2);
    m_put(m, &r, sizeof(r));
    m_end(m);
    m->nfds = 2;
}

/* Version 6: a staging area for a copy-on-seal create, its read-write
 * fd with the reply (the first time). */
static void mk_rep_create_stage(msg *m)
{
    ss__rep_create r = { .data = { .seg_id = SS_SEG_ID_STAGE | 3, .seg_size = 2 << 20,
                                   .offset = 0, .size = (1 << 20) + 3, .fd_index = 0,
                                   .kind = SS_SEG_STAGE } };
    m_start(m, SS_MSG_CREATE, SS_MSGF_REPLY, 0, 2);
    m_put(m, &r, sizeof(r));
    m_end(m);
    m->nfds = 1;
}

/* GET reply: entry 0 OBJECT with its fd (index 0) and meta in a SMALL
 * segment (fd index 1); entry 1 not found; entry 2 SMALL in the same small
 * segment, no fd (named at index 1 already); entry 3 zero-size, no
 * segment; entry 4 an already-held segment (SS_FD_NONE). */
static ss__get_entry G[5];

static void mk_rep_get_entries(void)
{
    memset(G, 0, sizeof(G));
    G[0].data = (ss__segref){ 100, 1 << 20, 0, 1000000, 0, SS_SEG_OBJECT };
    G[0].meta = (ss__segref){ 7, 4 << 20, 64, 10, 1, SS_SEG_SMALL };
    G[0].uid = 1000; /* any uid of a found entry goes */
    G[1].status = -ENOENT;
    G[1].data.fd_index = 77; /* ignored: not found */
    G[2].data = (ss__segref){ 7, 4 << 20, 4096, 64, SS_FD_NONE, SS_SEG_SMALL };
    G[3].data = (ss__segref){ 0, 0, 0, 0, SS_FD_NONE, SS_SEG_SMALL };
    G[3].meta.fd_index = 99; /* size 0: ignored */
    G[4].data = (ss__segref){ 3, 8192, 0, 5000, SS_FD_NONE, SS_SEG_OBJECT };
    G[4].uid = SS_UID_UNKNOWN;
}

static void mk_rep_get_from(msg *m, const ss__get_entry *e, uint32_t n, uint32_t nfds)
{
    ss__rep_get r = { .n = n, .nfds = nfds };
    m_start(m, SS_MSG_GET, SS_MSGF_REPLY, 0, 6);
    m_put(m, &r, sizeof(r));
    m_put(m, e, n * sizeof(*e));
    m_end(m);
    m->nfds = nfds;
}

static void mk_rep_get(msg *m)
{
    mk_rep_get_entries();
    mk_rep_get_from(m, G, 5, 2);
}

static void mk_rep_list(msg *m, uint32_t n)
{
    ss__rep_list r = { .next_cursor = 42, .n = n };
    m_start(m, SS_MSG_LIST, SS_MSGF_REPLY, 0, 7);
    m_put(m, &r, sizeof(r));
    for (uint32_t i = 0; i < n; i++) {
        ss__list_entry e = { .id = mkid((int)i), .state = i % 2 ? SS_OBJ_CREATED : SS_OBJ_SEALED,
                             .size = 100 * i, .meta_size = 3, .backing = (uint8_t)(i % 4),
                             .flags = (uint8_t)(i % 4), .node = -1, .refs = i,
                             .uid = 1000 + i };
        m_put(m, &e, sizeof(e));
    }
    m_end(m);
}

static void mk_rep_stats(msg *m)
{
    ss_stats s;

    memset(&s, 0, sizeof(s));
    s.size = sizeof(s);
    s.version = SS_STATS_VERSION;
    s.capacity = 1 << 30;
    s.objects = 3;
    m_start(m, SS_MSG_STATS, SS_MSGF_REPLY, 0, 8);
    m_put(m, &s, sizeof(s));
    m_end(m);
}

static void mk_event(msg *m, uint32_t type)
{
    ss__msg_event e = { .type = type, .id = mkid(9), .size = 12345 };
    m_start(m, SS_MSG_EVENT, SS_MSGF_REPLY, 0, 0);
    m_put(m, &e, sizeof(e));
    m_end(m);
}

/* ----------------------------------------------------------- requests */

static void test_requests_valid(void **state)
{
    (void)state;
    mk_req_hello(&M);
    assert_int_equal(req(&M), SS_MSG_HELLO);
    mk_req_create(&M, 0);
    assert_int_equal(req(&M), SS_MSG_CREATE);
    mk_req_create(&M, SS_PROTO_MAX_META);
    assert_int_equal(req(&M), SS_MSG_CREATE);
    mk_req_seal(&M, 0);
    assert_int_equal(req(&M), SS_MSG_SEAL);
    mk_req_seal(&M, SS_PROTO_MAX_INLINE);
    assert_int_equal(req(&M), SS_MSG_SEAL);
    mk_req_seal(&M, 0);
    M_SET(&M, H + offsetof(ss__req_seal, flags), uint32_t, SS_SEALF_RELEASE);
    assert_int_equal(req(&M), SS_MSG_SEAL);
    mk_req_create(&M, 0);
    M_SET(&M, H + offsetof(ss__req_create, flags), uint32_t, SS_CREATEF_CREATOR);
    assert_int_equal(req(&M), SS_MSG_CREATE);
    mk_req_put(&M, 0, 10);
    M_SET(&M, H + offsetof(ss__req_put, flags), uint32_t, SS_CREATEF_CREATOR);
    assert_int_equal(req(&M), SS_MSG_PUT);
    mk_req_id(&M, SS_MSG_ABORT);
    assert_int_equal(req(&M), SS_MSG_ABORT);
    mk_req_id(&M, SS_MSG_CONTAINS);
    assert_int_equal(req(&M), SS_MSG_CONTAINS);
    mk_req_id(&M, SS_MSG_DELETE);
    assert_int_equal(req(&M), SS_MSG_DELETE);
    mk_req_put(&M, 0, 0);
    assert_int_equal(req(&M), SS_MSG_PUT);
    mk_req_put(&M, SS_PROTO_MAX_META, SS_PROTO_MAX_INLINE);
    assert_int_equal(req(&M), SS_MSG_PUT);
    mk_req_get(&M, 1, -1);
    assert_int_equal(req(&M), SS_MSG_GET);
    mk_req_get(&M, SS_PROTO_MAX_IDS, 0);
    assert_int_equal(req(&M), SS_MSG_GET);
    mk_req_release(&M, 1);
    assert_int_equal(req(&M), SS_MSG_RELEASE);
    mk_req_release(&M, SS_PROTO_MAX_IDS);
    assert_int_equal(req(&M), SS_MSG_RELEASE);
    mk_req_list(&M, 1);
    assert_int_equal(req(&M), SS_MSG_LIST);
    mk_req_list(&M, SS_PROTO_MAX_LIST);
    assert_int_equal(req(&M), SS_MSG_LIST);
    mk_req_stats(&M);
    assert_int_equal(req(&M), SS_MSG_STATS);
    mk_req_subscribe(&M, SS_EVENT_SEALED | SS_EVENT_DELETED);
    assert_int_equal(req(&M), SS_MSG_SUBSCRIBE);
    mk_req_index(&M, 0);
    assert_int_equal(req(&M), SS_MSG_INDEX);
    mk_req_index(&M, SS_PROTO_INDEX_MAX_CHUNKS - 1);
    assert_int_equal(req(&M), SS_MSG_INDEX);
    mk_req_put_many(&M, 1);
    assert_int_equal(req(&M), SS_MSG_PUT_MANY);
    mk_req_put_many(&M, SS_PROTO_MAX_BATCH);
    assert_int_equal(req(&M), SS_MSG_PUT_MANY);
    M_SET(&M, PM_REC(5, flags), uint32_t, SS_CREATEF_CREATOR);
    assert_int_equal(req(&M), SS_MSG_PUT_MANY);
}

/* PUTV: counts, lengths, their sum, meta, flags, reserved. */
static void test_putv_checks(void **state)
{
    (void)state;
    mk_req_putv(&M, 1, 0);
    assert_int_equal(req(&M), SS_MSG_PUTV);
    mk_req_putv(&M, SS_PROTO_MAX_IOV, 100);
    assert_int_equal(req(&M), SS_MSG_PUTV);
    /* niov 0, over the maximum, more than the body holds */
    mk_req_putv(&M, 3, 0);
    M_SET(&M, H + offsetof(ss__req_putv, niov), uint32_t, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 3, 0);
    M_SET(&M, H + offsetof(ss__req_putv, niov), uint32_t, SS_PROTO_MAX_IOV + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 3, 0);
    M_SET(&M, H + offsetof(ss__req_putv, niov), uint32_t, 4);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* lengths: a zero one, one that makes the sum differ, an overflow */
    mk_req_putv(&M, 3, 0);
    M_SET(&M, PV_IOV(1, len), uint64_t, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 3, 0);
    M_SET(&M, PV_IOV(2, len), uint64_t, 4096 * 3 + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 2, 0);
    M_SET(&M, PV_IOV(0, len), uint64_t, UINT64_MAX - 4095);
    M_SET(&M, PV_IOV(1, len), uint64_t, 4096 * 3);
    M_SET(&M, H + offsetof(ss__req_putv, put.size), uint64_t, 4096 * 3 - 4096 + 4096);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* a buffer that wraps the address space */
    mk_req_putv(&M, 1, 0);
    M_SET(&M, PV_IOV(0, base), uint64_t, UINT64_MAX - 100);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* size over 1 TiB, meta over 64 KiB, unknown flags, reserved */
    mk_req_putv(&M, 1, 0);
    M_SET(&M, H + offsetof(ss__req_putv, put.size), uint64_t, SS_PROTO_MAX_SEG + 1);
    M_SET(&M, PV_IOV(0, len), uint64_t, SS_PROTO_MAX_SEG + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 1, 0);
    M_SET(&M, H + offsetof(ss__req_putv, put.meta_size), uint32_t, SS_PROTO_MAX_META + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 1, 0);
    M_SET(&M, H + offsetof(ss__req_putv, put.flags), uint32_t, 2);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 1, 0);
    M_SET(&M, H + offsetof(ss__req_putv, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* the meta shorter or longer than declared */
    mk_req_putv(&M, 2, 10);
    M.len -= 1;
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_putv(&M, 2, 10);
    M.len += 1;
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* a reply is the header alone */
    mk_rep_status(&M, SS_MSG_PUTV, 0);
    assert_int_equal(rep(&M), SS_MSG_PUTV);
    mk_rep_status(&M, SS_MSG_PUTV, -EFAULT);
    assert_int_equal(rep(&M), SS_MSG_PUTV);
}

/* INDEX (version 6): the request's first chunk and reserved word; the
 * reply's counts against each other and against the fds it carries. */
static void test_index_checks(void **state)
{
    (void)state;
    mk_req_index(&M, SS_PROTO_INDEX_MAX_CHUNKS); /* no such chunk */
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_index(&M, 0);
    M_SET(&M, H + offsetof(ss__req_index, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_index(&M, 0);
    m_fill(&M, 0, 4);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_index(&M, 0);
    M.nfds = 1; /* a request never carries an fd */
    assert_int_equal(req(&M), -SS_E_PROTO);

    mk_rep_index(&M, 1, 0, 1);
    assert_int_equal(rep(&M), SS_MSG_INDEX);
    mk_rep_index(&M, 3, 3, 0); /* the bucket memfd alone */
    assert_int_equal(rep(&M), SS_MSG_INDEX);
    mk_rep_index(&M, 1000, 10, SS_PROTO_MAX_FDS - 1);
    assert_int_equal(rep(&M), SS_MSG_INDEX);
    mk_rep_index(&M, SS_PROTO_INDEX_MAX_CHUNKS, 0, 2);
    assert_int_equal(rep(&M), SS_MSG_INDEX);
    mk_rep_index(&M, 1000, 10, SS_PROTO_MAX_FDS); /* one fd too many */
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, 0, 0, 0); /* an index has a chunk */
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, SS_PROTO_INDEX_MAX_CHUNKS + 1, 0, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, 3, 4, 0); /* first past nchunks */
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, 3, 2, 2); /* past the last chunk */
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, 3, 0, 2);
    M.nfds = 2; /* fds and n disagree */
    assert_int_equal(rep(&M), -SS_E_PROTO);
    M.nfds = 4;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, 3, 0, 2);
    M_SET(&M, H + offsetof(ss__rep_index, reserved), uint32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, 3, 0, 2);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 1); /* status 0 only */
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_index(&M, 3, 0, 2);
    m_fill(&M, 0, 8);
    m_end(&M);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_INDEX, -EAGAIN); /* refused: header alone */
    assert_int_equal(rep(&M), SS_MSG_INDEX);
    /* PINS: one fd, nslots > 0; UNPIN: never answered */
    mk_rep_pins(&M, 1016);
    assert_int_equal(rep(&M), SS_MSG_PINS);
    mk_rep_pins(&M, 1016);
    M.nfds = 0;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_pins(&M, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_PINS, -EBUSY);
    assert_int_equal(rep(&M), SS_MSG_PINS);
    mk_rep_status(&M, SS_MSG_UNPIN, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_req_pins(&M, SS_MSG_PINS, 0);
    assert_int_equal(req(&M), SS_MSG_PINS);
    mk_req_pins(&M, SS_MSG_UNPIN, 0);
    assert_int_equal(req(&M), SS_MSG_UNPIN);
    mk_req_pins(&M, SS_MSG_UNPIN, 1); /* reserved words are 0 */
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* 19 names no message in this version */
    mk_rep_status(&M, 19, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_req_stats(&M);
    M_SET(&M, offsetof(ss__msg_hdr, type), uint16_t, 19);
    assert_int_equal(req(&M), -SS_E_PROTO);
}

/* PUT_MANY: every count, size and the sum against the length. */
static void test_put_many_checks(void **state)
{
    static const uint32_t zero = 0;
    (void)state;
    /* n: 0, over the maximum, more records than the body holds */
    mk_req_put_many(&M, 3);
    M_SET(&M, H + offsetof(ss__req_put_many, n), uint32_t, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, H + offsetof(ss__req_put_many, n), uint32_t, SS_PROTO_MAX_BATCH + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, H + offsetof(ss__req_put_many, n), uint32_t, 4);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, H + offsetof(ss__req_put_many, n), uint32_t, UINT32_MAX);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* fewer records than n declares: the body ends inside the records */
    m_start(&M, SS_MSG_PUT_MANY, 0, 0, 5);
    M_SET(&M, H, uint32_t, 2);
    M.len += sizeof(ss__req_put_many) + sizeof(ss__req_put);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* no body, half a body */
    m_start(&M, SS_MSG_PUT_MANY, 0, 0, 5);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    m_put(&M, &zero, sizeof(zero));
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* reserved */
    mk_req_put_many(&M, 3);
    M_SET(&M, H + offsetof(ss__req_put_many, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* a record's flags, meta bound, size bound */
    mk_req_put_many(&M, 3);
    M_SET(&M, PM_REC(1, flags), uint32_t, SS_CREATEF_CREATOR << 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, PM_REC(2, meta_size), uint32_t, SS_PROTO_MAX_META + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, PM_REC(2, size), uint64_t, SS_PROTO_MAX_INLINE + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, PM_REC(2, size), uint64_t, (uint64_t)-8); /* would wrap the sum */
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* the tail: one byte short or long of the sum, or shifted between
     * records (their sum past the message: overlapping lengths) */
    mk_req_put_many(&M, 3);
    M.len--;
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    m_fill(&M, 0, 1);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, PM_REC(1, size), uint64_t, 16);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put_many(&M, 3);
    M_SET(&M, PM_REC(1, size), uint64_t, 0);
    M_SET(&M, PM_REC(2, size), uint64_t, 24); /* same sum: valid */
    assert_int_equal(req(&M), SS_MSG_PUT_MANY);
    /* no fd, no status */
    mk_req_put_many(&M, 3);
    M.nfds = 1;
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* replies */
    mk_rep_put_many(&M, 1);
    assert_int_equal(rep(&M), SS_MSG_PUT_MANY);
    mk_rep_put_many(&M, SS_PROTO_MAX_BATCH);
    assert_int_equal(rep(&M), SS_MSG_PUT_MANY);
    assert_true(M.len <= SS_PROTO_MAX_REPLY);
    mk_rep_put_many(&M, 6); /* the count of 0s must be the status */
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 5);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_put_many(&M, 6); /* a status that is no error */
    M_SET(&M, H + sizeof(ss__rep_put_many) + 2 * sizeof(int32_t), int32_t, 7);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_put_many(&M, 6);
    M_SET(&M, H + offsetof(ss__rep_put_many, n), uint32_t, 7);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_put_many(&M, 6);
    M_SET(&M, H + offsetof(ss__rep_put_many, n), uint32_t, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_put_many(&M, 6);
    M_SET(&M, H + offsetof(ss__rep_put_many, reserved), uint32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_put_many(&M, 6);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_PUT_MANY, -SS_E_PROTO); /* an error: header alone */
    assert_int_equal(rep(&M), SS_MSG_PUT_MANY);
}

static void test_header_checks(void **state)
{
    (void)state;
    /* too short, NULL, too long */
    mk_req_hello(&M);
    assert_int_equal(ss__proto_check_request(M.b, 0, 0), -SS_E_PROTO);
    assert_int_equal(ss__proto_check_request(M.b, H - 1, 0), -SS_E_PROTO);
    assert_int_equal(ss__proto_check_request(NULL, 0, 0), -SS_E_PROTO);
    assert_int_equal(ss__proto_check_reply(NULL, 0, 0), -SS_E_PROTO);
    mk_req_put(&M, SS_PROTO_MAX_META, SS_PROTO_MAX_INLINE);
    M_SET(&M, offsetof(ss__msg_hdr, len), uint32_t, SS_PROTO_MAX_MSG + 1);
    assert_int_equal(ss__proto_check_request(M.b, SS_PROTO_MAX_MSG + 1, 0), -SS_E_PROTO);

    /* magic / version */
    mk_req_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, magic), uint32_t, 0x31505354u);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, version), uint16_t, SS_PROTO_VERSION + 1);
    assert_int_equal(req(&M), -SS_E_VERSION);
    mk_rep_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, version), uint16_t, 0);
    assert_int_equal(rep(&M), -SS_E_VERSION);

    /* type out of range, EVENT is not a request */
    mk_req_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, type), uint16_t, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    M_SET(&M, offsetof(ss__msg_hdr, type), uint16_t, SS_MSG__COUNT);
    assert_int_equal(req(&M), -SS_E_PROTO);
    M_SET(&M, offsetof(ss__msg_hdr, type), uint16_t, 0xffff);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_event(&M, SS_EVENT_SEALED);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* declared length must equal the received one */
    mk_req_hello(&M);
    assert_int_equal(ss__proto_check_request(M.b, M.len - 1, 0), -SS_E_PROTO);
    assert_int_equal(ss__proto_check_request(M.b, M.len + 1, 0), -SS_E_PROTO);
    M_SET(&M, offsetof(ss__msg_hdr, len), uint32_t, M.len + 1);
    assert_int_equal(ss__proto_check_request(M.b, M.len + 1, 0), -SS_E_PROTO);

    /* requests: no fds, no status, no flags */
    mk_req_hello(&M);
    M.nfds = 1;
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, -1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY);
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* a request is not a reply and vice versa */
    mk_req_hello(&M);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_hello(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
}

/* every reserved / flags field of every request body */
static void test_request_reserved(void **state)
{
    (void)state;
    mk_req_hello(&M);
    M_SET(&M, H + offsetof(ss__req_hello, flags), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_hello(&M);
    M_SET(&M, H + offsetof(ss__req_hello, reserved), uint64_t, 1ull << 63);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_create(&M, 0);
    M_SET(&M, H + offsetof(ss__req_create, flags), uint32_t, SS_CREATEF_CREATOR << 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_seal(&M, 0);
    M_SET(&M, H + offsetof(ss__req_seal, flags), uint32_t, SS_SEALF_RELEASE << 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_id(&M, SS_MSG_DELETE);
    M_SET(&M, H + offsetof(ss__req_id, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put(&M, 0, 10);
    M_SET(&M, H + offsetof(ss__req_put, flags), uint32_t, SS_CREATEF_CREATOR << 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_get(&M, 2, 0);
    M_SET(&M, H + offsetof(ss__req_get, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_release(&M, 2);
    M_SET(&M, H + offsetof(ss__req_release, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_list(&M, 4);
    M_SET(&M, H + offsetof(ss__req_list, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_subscribe(&M, SS_EVENT_SEALED);
    M_SET(&M, H + offsetof(ss__req_subscribe, reserved), uint32_t, 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
}

/* counts against SS_PROTO_MAX_*, bodies and tails */
static void test_request_counts(void **state)
{
    (void)state;
    /* fixed bodies: one byte more or less */
    mk_req_hello(&M);
    M.len--;
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_hello(&M);
    m_fill(&M, 0, 1);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_stats(&M);
    m_fill(&M, 0, 8);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_id(&M, SS_MSG_CONTAINS);
    m_fill(&M, 0, 4);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_list(&M, 1);
    M.len -= 4;
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* CREATE: meta bound and tail */
    mk_req_create(&M, SS_PROTO_MAX_META + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_create(&M, 10);
    M.len--;
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_create(&M, 10);
    m_fill(&M, 0, 1);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_create(&M, 0);
    M.len = H + 8; /* body cut */
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_create(&M, 0);
    M_SET(&M, H + offsetof(ss__req_create, meta_size), uint32_t, UINT32_MAX);
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* SEAL payload */
    mk_req_seal(&M, SS_PROTO_MAX_INLINE + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_seal(&M, 5);
    M_SET(&M, H + offsetof(ss__req_seal, payload_size), uint64_t, UINT64_MAX);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_seal(&M, 5);
    M.len--;
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* PUT meta + data */
    mk_req_put(&M, SS_PROTO_MAX_META + 1, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put(&M, 0, SS_PROTO_MAX_INLINE + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put(&M, 3, 4);
    M_SET(&M, H + offsetof(ss__req_put, size), uint64_t, (uint64_t)-3); /* sum wraps */
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_put(&M, 3, 4);
    M_SET(&M, H + offsetof(ss__req_put, meta_size), uint32_t, 4);
    M_SET(&M, H + offsetof(ss__req_put, size), uint64_t, 3); /* same total: allowed */
    assert_int_equal(req(&M), SS_MSG_PUT);
    M_SET(&M, H + offsetof(ss__req_put, size), uint64_t, 4);
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* GET / RELEASE n, GET timeout */
    mk_req_get(&M, 0, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_get(&M, SS_PROTO_MAX_IDS + 1, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_get(&M, 2, -2);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_get(&M, 2, INT64_MIN);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_get(&M, 2, INT64_MAX);
    assert_int_equal(req(&M), SS_MSG_GET);
    mk_req_get(&M, 3, 0);
    M_SET(&M, H + offsetof(ss__req_get, n), uint32_t, 2);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_get(&M, 3, 0);
    M_SET(&M, H + offsetof(ss__req_get, n), uint32_t, UINT32_MAX);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_release(&M, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_release(&M, SS_PROTO_MAX_IDS + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_release(&M, 3);
    M.len -= sizeof(ss_id);
    m_end(&M);
    assert_int_equal(req(&M), -SS_E_PROTO);

    /* LIST max, SUBSCRIBE mask */
    mk_req_list(&M, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_list(&M, SS_PROTO_MAX_LIST + 1);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_subscribe(&M, 0);
    assert_int_equal(req(&M), -SS_E_PROTO);
    mk_req_subscribe(&M, 1u << 2);
    assert_int_equal(req(&M), -SS_E_PROTO);
}

/* ------------------------------------------------------------ replies */

static void test_replies_valid(void **state)
{
    static const uint16_t bare[] = { SS_MSG_SEAL, SS_MSG_ABORT, SS_MSG_PUT, SS_MSG_DELETE,
                                     SS_MSG_SUBSCRIBE };
    (void)state;
    mk_rep_hello(&M);
    assert_int_equal(rep(&M), SS_MSG_HELLO);
    mk_rep_create_small(&M);
    assert_int_equal(rep(&M), SS_MSG_CREATE);
    mk_rep_create_object(&M);
    assert_int_equal(rep(&M), SS_MSG_CREATE);
    mk_rep_create_stage(&M);
    assert_int_equal(rep(&M), SS_MSG_CREATE);
    mk_rep_create_stage(&M); /* an area the client has: no fd */
    M_SET(&M, H + offsetof(ss__segref, fd_index), uint32_t, SS_FD_NONE);
    M.nfds = 0;
    assert_int_equal(rep(&M), SS_MSG_CREATE);
    mk_rep_get(&M);
    assert_int_equal(rep(&M), SS_MSG_GET);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 4); /* count found */
    assert_int_equal(rep(&M), SS_MSG_GET);
    mk_rep_list(&M, 0);
    assert_int_equal(rep(&M), SS_MSG_LIST);
    mk_rep_list(&M, SS_PROTO_MAX_LIST);
    assert_int_equal(rep(&M), SS_MSG_LIST);
    assert_true(M.len <= SS_PROTO_MAX_REPLY);
    mk_rep_stats(&M);
    assert_int_equal(rep(&M), SS_MSG_STATS);
    for (size_t i = 0; i < SS_ARRAY_SIZE(bare); i++) {
        mk_rep_status(&M, bare[i], 0);
        assert_int_equal(rep(&M), bare[i]);
    }
    mk_rep_status(&M, SS_MSG_CONTAINS, 1);
    assert_int_equal(rep(&M), SS_MSG_CONTAINS);
    mk_rep_status(&M, SS_MSG_CONTAINS, 0);
    assert_int_equal(rep(&M), SS_MSG_CONTAINS);
    mk_event(&M, SS_EVENT_SEALED);
    assert_int_equal(rep(&M), SS_MSG_EVENT);
    mk_event(&M, SS_EVENT_DELETED);
    assert_int_equal(rep(&M), SS_MSG_EVENT);
    /* error replies: header alone, for any answered type */
    mk_rep_status(&M, SS_MSG_CREATE, -EEXIST);
    assert_int_equal(rep(&M), SS_MSG_CREATE);
    mk_rep_status(&M, SS_MSG_GET, -EINVAL);
    assert_int_equal(rep(&M), SS_MSG_GET);
    mk_rep_status(&M, SS_MSG_HELLO, -SS_E_VERSION);
    assert_int_equal(rep(&M), SS_MSG_HELLO);
    mk_rep_status(&M, SS_MSG_SEAL, -SS_E_PROTO);
    assert_int_equal(rep(&M), SS_MSG_SEAL);
}

static void test_reply_header_and_errors(void **state)
{
    (void)state;
    mk_rep_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | 4);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* SS_MSGF_ABORTED: on a failed SEAL's reply only, beside REPLY */
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_SEAL, -ENOSPC);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED);
    assert_int_equal(rep(&M), SS_MSG_SEAL);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_ABORTED);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED | 4);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_SEAL, 0);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_ABORT, -ENOENT);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_PUT, -ENOSPC);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* a request never carries it */
    mk_req_seal(&M, 0);
    M_SET(&M, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_ABORTED);
    assert_int_equal(req(&M), -SS_E_PROTO);
    /* RELEASE is never answered */
    mk_rep_status(&M, SS_MSG_RELEASE, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* an error reply is the header alone, with no fd, and a known code */
    mk_rep_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, -EIO);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_CREATE, -EEXIST);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_CREATE, -5000);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_CREATE, INT32_MIN);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_CREATE, -SS_E_LAST);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_CREATE, -(SS_E_LAST - 1));
    assert_int_equal(rep(&M), SS_MSG_CREATE);
    /* status-only replies: exact status, no body, no fd */
    mk_rep_status(&M, SS_MSG_SEAL, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_CONTAINS, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_DELETE, 0);
    m_fill(&M, 0, 4);
    m_end(&M);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_PUT, 0);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_status(&M, SS_MSG_SEAL, 0);
    M.nfds = SS_PROTO_MAX_FDS + 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);

    assert_true(ss__proto_status_is_error(-ENOENT));
    assert_true(ss__proto_status_is_error(-SS_MAX_ERRNO));
    assert_false(ss__proto_status_is_error(-SS_MAX_ERRNO - 1));
    assert_true(ss__proto_status_is_error(-SS_E_BASE));
    assert_false(ss__proto_status_is_error(0));
    assert_false(ss__proto_status_is_error(5));
    assert_false(ss__proto_status_is_error(INT32_MIN));
}

static void test_reply_hello_stats_event(void **state)
{
    (void)state;
    mk_rep_hello(&M);
    M_SET(&M, H + offsetof(ss__rep_hello, reserved), uint32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_hello(&M);
    M_SET(&M, H + offsetof(ss__rep_hello, small_max), uint32_t, SS_PROTO_MAX_INLINE + 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_hello(&M);
    M_SET(&M, H + offsetof(ss__rep_hello, max_msg), uint32_t, 100);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_hello(&M);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_hello(&M);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);

    mk_rep_stats(&M);
    M_SET(&M, H + offsetof(ss_stats, size), uint32_t, sizeof(ss_stats) - 8);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_stats(&M);
    M_SET(&M, H + offsetof(ss_stats, version), uint32_t, SS_STATS_VERSION + 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_stats(&M);
    M.len -= 8;
    m_end(&M);
    assert_int_equal(rep(&M), -SS_E_PROTO);

    mk_event(&M, SS_EVENT_SEALED | SS_EVENT_DELETED);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_event(&M, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_event(&M, SS_EVENT_SEALED);
    M_SET(&M, offsetof(ss__msg_hdr, req_id), uint32_t, 3);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_event(&M, SS_EVENT_SEALED);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, -1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_event(&M, SS_EVENT_SEALED);
    M_SET(&M, H + offsetof(ss__msg_event, reserved), uint32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_event(&M, SS_EVENT_SEALED);
    M_SET(&M, H + offsetof(ss__msg_event, reserved2), uint32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_event(&M, SS_EVENT_SEALED);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
}

static void test_reply_create(void **state)
{
    const size_t D = H + offsetof(ss__rep_create, data);
    (void)state;
    mk_rep_create_small(&M);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_small(&M);
    M_SET(&M, D + offsetof(ss__segref, fd_index), uint32_t, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_small(&M);
    M_SET(&M, D + offsetof(ss__segref, kind), uint32_t, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* STAGE: one fd at index 0 or none; a stage id; offset 0; inside */
    mk_rep_create_stage(&M);
    M.nfds = 2;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_stage(&M);
    M.nfds = 0;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_stage(&M);
    M_SET(&M, D + offsetof(ss__segref, fd_index), uint32_t, SS_FD_NONE);
    assert_int_equal(rep(&M), -SS_E_PROTO); /* an fd came, none named */
    mk_rep_create_stage(&M);
    M_SET(&M, D + offsetof(ss__segref, seg_id), uint64_t, 3);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_stage(&M);
    M_SET(&M, D + offsetof(ss__segref, offset), uint64_t, 64);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_stage(&M);
    M_SET(&M, D + offsetof(ss__segref, size), uint64_t, (2 << 20) + 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_stage(&M);
    M_SET(&M, D + offsetof(ss__segref, seg_size), uint64_t, 0);
    M_SET(&M, D + offsetof(ss__segref, size), uint64_t, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_stage(&M);
    M_SET(&M, D + offsetof(ss__segref, kind), uint32_t, 4);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M.nfds = 3;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M_SET(&M, D + offsetof(ss__segref, fd_index), uint32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M_SET(&M, D + offsetof(ss__segref, fd_index), uint32_t, SS_FD_NONE);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M_SET(&M, D + offsetof(ss__segref, offset), uint64_t, 6); /* offset + size > seg */
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M_SET(&M, D + offsetof(ss__segref, offset), uint64_t, UINT64_MAX);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M_SET(&M, D + offsetof(ss__segref, seg_size), uint64_t, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M_SET(&M, D + offsetof(ss__segref, seg_size), uint64_t, SS_PROTO_MAX_SEG * 2);
    M_SET(&M, D + offsetof(ss__segref, size), uint64_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_create_object(&M);
    M.len -= 1;
    m_end(&M);
    assert_int_equal(rep(&M), -SS_E_PROTO);
}

static void test_reply_get(void **state)
{
    ss__get_entry e[5];
    (void)state;

    /* the rep_get nfds field must match what came */
    mk_rep_get(&M);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_get(&M);
    M_SET(&M, H + offsetof(ss__rep_get, nfds), uint32_t, 3);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* count found in status: at most n */
    mk_rep_get(&M);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 6);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* n and the body */
    mk_rep_get(&M);
    M_SET(&M, H + offsetof(ss__rep_get, n), uint32_t, 4);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_get_entries();
    mk_rep_get_from(&M, G, 0, 0);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_get(&M);
    M.len -= 1;
    m_end(&M);
    assert_int_equal(rep(&M), -SS_E_PROTO);

    /* an fd index past nfds; an fd no segref names; one index, two segs */
    mk_rep_get_entries();
    memcpy(e, G, sizeof(e));
    e[0].data.fd_index = 2;
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    mk_rep_get_from(&M, e, 5, 3);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[2].data.fd_index = 0; /* names seg 100's fd for seg 7 */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[2].data.fd_index = 1; /* the same fd for the same seg: fine */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), SS_MSG_GET);

    /* entry fields */
    memcpy(e, G, sizeof(e));
    e[1].uid = 1; /* a missing object has no creator */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[1].status = -EIO;
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[1].status = 1;
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[4].data.kind = 3; /* no such kind */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[4].data.offset = 8192 - 4999; /* one byte past the segment */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[4].data.offset = UINT64_MAX;
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[4].data.size = UINT64_MAX;
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[3].data.fd_index = 0; /* a zero-size object naming no segment has no fd */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[3].data.size = 1; /* bytes without a segment */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[0].meta.size = SS_PROTO_MAX_META + 1;
    e[0].meta.seg_size = 1ull << 30;
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    memcpy(e, G, sizeof(e));
    e[0].meta.offset = (4 << 20) - 9; /* meta crosses the end */
    mk_rep_get_from(&M, e, 5, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* an object segment without meta, all 64 entries, fds two per entry */
    {
        static ss__get_entry big[SS_PROTO_MAX_IDS];
        memset(big, 0, sizeof(big));
        for (unsigned i = 0; i < SS_PROTO_MAX_IDS; i++) {
            big[i].data = (ss__segref){ 1000 + i, 4096, 0, 4096, 2 * i, SS_SEG_OBJECT };
            big[i].meta = (ss__segref){ 2000 + i, 4096, 0, 1, 2 * i + 1, SS_SEG_SMALL };
        }
        mk_rep_get_from(&M, big, SS_PROTO_MAX_IDS, 2 * SS_PROTO_MAX_IDS);
        assert_int_equal(rep(&M), SS_MSG_GET);
        assert_true(M.len <= SS_PROTO_MAX_REPLY);
    }
}

static void test_reply_list(void **state)
{
    const size_t E = H + sizeof(ss__rep_list);
    (void)state;
    mk_rep_list(&M, 3);
    M_SET(&M, H + offsetof(ss__rep_list, reserved), uint32_t, 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_list(&M, 3);
    M_SET(&M, H + offsetof(ss__rep_list, n), uint32_t, 2);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_list(&M, SS_PROTO_MAX_LIST + 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_list(&M, 3);
    M_SET(&M, E + sizeof(ss__list_entry) + offsetof(ss__list_entry, state), uint32_t, 3);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_list(&M, 3);
    M_SET(&M, E + offsetof(ss__list_entry, backing), uint8_t, SS_BACKING__COUNT);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_list(&M, 3);
    M_SET(&M, E + offsetof(ss__list_entry, flags), uint8_t, SS_LISTF_CREATOR << 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_list(&M, 3);
    M_SET(&M, E + 2 * sizeof(ss__list_entry) + offsetof(ss__list_entry, uid), uint32_t,
          SS_UID_UNKNOWN);
    assert_int_equal(rep(&M), SS_MSG_LIST);
    mk_rep_list(&M, 3);
    M_SET(&M, E + offsetof(ss__list_entry, meta_size), uint32_t, SS_PROTO_MAX_META + 1);
    assert_int_equal(rep(&M), -SS_E_PROTO);
    mk_rep_list(&M, 3);
    M.nfds = 1;
    assert_int_equal(rep(&M), -SS_E_PROTO);
    /* the count may be echoed in status, never more than n */
    mk_rep_list(&M, 3);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 3);
    assert_int_equal(rep(&M), SS_MSG_LIST);
    M_SET(&M, offsetof(ss__msg_hdr, status), int32_t, 4);
    assert_int_equal(rep(&M), -SS_E_PROTO);
}

/* The checkers take any alignment and never read past len: run every
 * valid message at an odd address, cut at every length. */
static void test_alignment_and_truncation(void **state)
{
    static unsigned char odd[SS_PROTO_MAX_MSG + 1];
    void (*mk[])(msg *) = { mk_req_hello, mk_req_stats, mk_rep_hello, mk_rep_create_small,
                            mk_rep_create_object, mk_rep_get, mk_rep_stats };
    (void)state;
    for (size_t k = 0; k < SS_ARRAY_SIZE(mk); k++) {
        int want;

        mk[k](&M);
        want = rep(&M) > 0 ? rep(&M) : req(&M);
        assert_true(want > 0);
        memcpy(odd + 1, M.b, M.len);
        assert_int_equal(rep(&M) > 0 ? ss__proto_check_reply(odd + 1, M.len, M.nfds)
                                     : ss__proto_check_request(odd + 1, M.len, M.nfds),
                         want);
        for (size_t cut = 0; cut < M.len; cut++) {
            /* an exact-size heap copy: ASan catches any overread */
            unsigned char *p = malloc(cut ? cut : 1);
            assert_non_null(p);
            memcpy(p, M.b, cut);
            assert_true(ss__proto_check_request(p, cut, M.nfds) < 0);
            assert_true(ss__proto_check_reply(p, cut, M.nfds) < 0);
            free(p);
        }
    }
}

/* A deterministic mutation loop over valid messages (the in-tree cousin
 * of the libFuzzer run): flips, overwrites of fields with edge values,
 * truncations. Properties are checked inside the fuzz entry. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A RELEASE may lead a datagram, followed by one more request: the split
 * is found from the RELEASE's header alone, and nothing else splits. */
static void test_split_release_prefix(void **state)
{
    static msg A, B;
    unsigned char *d = malloc(2 * sizeof(A.b));
    size_t rel, get;

    (void)state;
    assert_non_null(d);
    mk_req_release(&A, 2);
    mk_req_get(&B, 3, 0);
    rel = A.len;
    get = B.len;
    memcpy(d, A.b, rel);
    memcpy(d + rel, B.b, get);
    assert_int_equal(ss__proto_split_request(d, rel + get), rel);
    assert_int_equal(ss__proto_check_request(d, rel, 0), SS_MSG_RELEASE);
    /* the second part, copied to an aligned buffer as the store does */
    memcpy(B.b, d + rel, get);
    assert_int_equal(ss__proto_check_request(B.b, get, 0), SS_MSG_GET);
    /* the whole datagram is not one message */
    assert_true(ss__proto_check_request(d, rel + get, 0) < 0);
    /* a lone message does not split */
    assert_int_equal(ss__proto_split_request(d, rel), rel);
    mk_req_get(&B, 3, 0);
    assert_int_equal(ss__proto_split_request(B.b, B.len), B.len);
    /* only a RELEASE leads: a GET followed by bytes is one (bad) message */
    memcpy(d, B.b, B.len);
    memcpy(d + B.len, A.b, rel);
    assert_int_equal(ss__proto_split_request(d, B.len + rel), B.len + rel);
    /* a leading RELEASE whose len is below a header, or covers it all, or
     * has another magic or version, does not split */
    memcpy(d, A.b, rel);
    M_SET(&A, offsetof(ss__msg_hdr, len), uint32_t, 8);
    memcpy(d, A.b, rel);
    assert_int_equal(ss__proto_split_request(d, rel + get), rel + get);
    M_SET(&A, offsetof(ss__msg_hdr, len), uint32_t, (uint32_t)(rel + get));
    memcpy(d, A.b, rel);
    assert_int_equal(ss__proto_split_request(d, rel + get), rel + get);
    mk_req_release(&A, 2);
    M_SET(&A, offsetof(ss__msg_hdr, version), uint16_t, SS_PROTO_VERSION + 1);
    memcpy(d, A.b, rel);
    assert_int_equal(ss__proto_split_request(d, rel + get), rel + get);
    /* too short for a header */
    assert_int_equal(ss__proto_split_request(d, 10), 10);
    free(d);
}

static void test_mutations(void **state)
{
    void (*mk[])(msg *) = { mk_req_hello, mk_req_stats, mk_rep_hello, mk_rep_create_small,
                            mk_rep_create_object, mk_rep_get, mk_rep_stats };
    static const uint64_t edge[] = { 0, 1, 0x7f, 0xff, 0xffff, 0xffffffffu, SS_FD_NONE,
                                     SS_PROTO_MAX_IDS + 1, UINT64_MAX, 1ull << 63 };
    static unsigned char in[SS_PROTO_MAX_REPLY + 2];
    (void)state;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len;
        int muts = 1 + (int)(next_rand() % 4);

        mk[next_rand() % SS_ARRAY_SIZE(mk)](&M);
        len = M.len;
        for (int k = 0; k < muts && len > 0; k++) {
            size_t at = (size_t)(next_rand() % len);
            switch (next_rand() % 4) {
            case 0:
                M.b[at] ^= (unsigned char)(1u << (next_rand() % 8));
                break;
            case 1: {
                uint64_t v = edge[next_rand() % SS_ARRAY_SIZE(edge)];
                size_t w = (size_t)1 << (next_rand() % 4);
                if (at + w <= len)
                    memcpy(M.b + at, &v, w);
                break;
            }
            case 2:
                len = at;
                break;
            default:
                M.nfds = (unsigned)(next_rand() % 4);
            }
        }
        in[0] = (unsigned char)M.nfds;
        memcpy(in + 1, M.b, len);
        LLVMFuzzerTestOneInput(in, len + 1);
    }
}

/* ------------------------------------------------------------- corpus */

struct seed {
    const char *name;
    void (*mk)(msg *);
    void (*patch)(msg *);
};

static void mk_req_create_meta(msg *m) { mk_req_create(m, 100); }
static void mk_req_seal_small(msg *m) { mk_req_seal(m, 64); }
static void mk_req_abort(msg *m) { mk_req_id(m, SS_MSG_ABORT); }
static void mk_req_contains(msg *m) { mk_req_id(m, SS_MSG_CONTAINS); }
static void mk_req_delete(msg *m) { mk_req_id(m, SS_MSG_DELETE); }
static void mk_req_put_small(msg *m) { mk_req_put(m, 16, 64); }
static void mk_req_get3(msg *m) { mk_req_get(m, 3, 100); }
static void mk_req_put_many4(msg *m) { mk_req_put_many(m, 4); }
static void mk_rep_put_many4(msg *m) { mk_rep_put_many(m, 4); }
static void p_pm_n0(msg *m) { M_SET(m, H + offsetof(ss__req_put_many, n), uint32_t, 0); }
static void p_pm_n5(msg *m) { M_SET(m, H + offsetof(ss__req_put_many, n), uint32_t, 5); }
static void p_pm_wrap(msg *m) { M_SET(m, PM_REC(3, size), uint64_t, (uint64_t)-24); }
static void p_pm_shift(msg *m) { M_SET(m, PM_REC(1, size), uint64_t, 100); }
static void p_pm_creator(msg *m) { M_SET(m, PM_REC(2, flags), uint32_t, SS_CREATEF_CREATOR); }
static void p_pm_count(msg *m) { M_SET(m, offsetof(ss__msg_hdr, status), int32_t, 4); }
static void mk_req_putv3(msg *m) { mk_req_putv(m, 3, 8); }
static void p_pv_sum(msg *m) { M_SET(m, PV_IOV(2, len), uint64_t, 1); }
static void p_pv_zero(msg *m) { M_SET(m, PV_IOV(0, len), uint64_t, 0); }
static void mk_req_release2(msg *m) { mk_req_release(m, 2); }
static void mk_req_list8(msg *m) { mk_req_list(m, 8); }
static void mk_req_sub(msg *m) { mk_req_subscribe(m, SS_EVENT_SEALED); }
static void mk_req_index0(msg *m) { mk_req_index(m, 0); }
static void mk_rep_index3(msg *m) { mk_rep_index(m, 3, 0, 3); }
static void mk_req_pins0(msg *m) { mk_req_pins(m, SS_MSG_PINS, 0); }
static void mk_req_unpin0(msg *m) { mk_req_pins(m, SS_MSG_UNPIN, 0); }
static void mk_rep_pins1016(msg *m) { mk_rep_pins(m, 1016); }
static void p_index_fds(msg *m) { m->nfds = 3; }
static void p_index_first(msg *m) { M_SET(m, H + offsetof(ss__rep_index, first), uint32_t, 4); }
static void mk_rep_seal(msg *m) { mk_rep_status(m, SS_MSG_SEAL, 0); }
static void mk_rep_abort(msg *m) { mk_rep_status(m, SS_MSG_ABORT, 0); }
static void mk_rep_put(msg *m) { mk_rep_status(m, SS_MSG_PUT, 0); }
static void mk_rep_delete(msg *m) { mk_rep_status(m, SS_MSG_DELETE, 0); }
static void mk_rep_sub(msg *m) { mk_rep_status(m, SS_MSG_SUBSCRIBE, 0); }
static void mk_rep_contains(msg *m) { mk_rep_status(m, SS_MSG_CONTAINS, 1); }
static void mk_rep_err(msg *m) { mk_rep_status(m, SS_MSG_CREATE, -ENOSPC); }
static void mk_rep_seal_aborted(msg *m)
{
    mk_rep_status(m, SS_MSG_SEAL, -ENOSPC);
    M_SET(m, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED);
}
static void mk_rep_list3(msg *m) { mk_rep_list(m, 3); }
static void mk_ev_sealed(msg *m) { mk_event(m, SS_EVENT_SEALED); }
static void mk_ev_deleted(msg *m) { mk_event(m, SS_EVENT_DELETED); }

/* A RELEASE leading a GET in one datagram (proto.h). */
static void mk_split_release_get(msg *m)
{
    static msg g;

    mk_req_get(&g, 3, 0);
    mk_req_release(m, 2);
    memcpy(m->b + m->len, g.b, g.len);
    m->len += g.len;
}

static void p_magic(msg *m) { M_SET(m, 0, uint32_t, 0x31505354u); }
static void p_version(msg *m) { M_SET(m, offsetof(ss__msg_hdr, version), uint16_t, SS_PROTO_VERSION + 1); }
static void p_type0(msg *m) { M_SET(m, offsetof(ss__msg_hdr, type), uint16_t, 0); }
static void p_type99(msg *m) { M_SET(m, offsetof(ss__msg_hdr, type), uint16_t, 99); }
static void p_len(msg *m) { M_SET(m, offsetof(ss__msg_hdr, len), uint32_t, m->len + 8); }
static void p_trunc(msg *m) { m->len -= 3; }
static void p_fd(msg *m) { m->nfds = 1; }
static void p_meta_huge(msg *m) { M_SET(m, H + offsetof(ss__req_create, meta_size), uint32_t, 0x10001); }
static void p_get_n0(msg *m) { M_SET(m, H + offsetof(ss__req_get, n), uint32_t, 0); }
static void p_get_n65(msg *m) { M_SET(m, H + offsetof(ss__req_get, n), uint32_t, 65); }
static void p_get_timeout(msg *m) { M_SET(m, H + offsetof(ss__req_get, timeout_ms), int64_t, -2); }
static void p_put_wrap(msg *m) { M_SET(m, H + offsetof(ss__req_put, size), uint64_t, (uint64_t)-16); }
static void p_reserved(msg *m) { M_SET(m, H + offsetof(ss__req_id, reserved), uint32_t, 1); }
static void p_getfd_range(msg *m)
{
    size_t e0 = H + sizeof(ss__rep_get);
    M_SET(m, e0 + offsetof(ss__get_entry, data) + offsetof(ss__segref, fd_index), uint32_t, 5);
}
static void p_getfd_unnamed(msg *m)
{
    m->nfds = 3;
    M_SET(m, H + offsetof(ss__rep_get, nfds), uint32_t, 3);
}
static void p_get_overflow(msg *m)
{
    size_t e4 = H + sizeof(ss__rep_get) + 4 * sizeof(ss__get_entry);
    M_SET(m, e4 + offsetof(ss__get_entry, data) + offsetof(ss__segref, offset), uint64_t,
          UINT64_MAX - 10);
}
static void p_create_fds(msg *m) { m->nfds = 1; }
static void p_create_stage_fds(msg *m) { m->nfds = 2; }
static void p_list_state(msg *m)
{
    M_SET(m, H + sizeof(ss__rep_list) + offsetof(ss__list_entry, state), uint32_t, 9);
}
static void p_err_body(msg *m)
{
    M_SET(m, offsetof(ss__msg_hdr, status), int32_t, -EINVAL);
}
static void p_noreply(msg *m) { M_SET(m, offsetof(ss__msg_hdr, flags), uint32_t, 0); }
static void p_aborted(msg *m)
{
    M_SET(m, offsetof(ss__msg_hdr, flags), uint32_t, SS_MSGF_REPLY | SS_MSGF_ABORTED);
}
static void p_seal_release(msg *m) { M_SET(m, H + offsetof(ss__req_seal, flags), uint32_t, SS_SEALF_RELEASE); }
static void p_create_creator(msg *m)
{
    M_SET(m, H + offsetof(ss__req_create, flags), uint32_t, SS_CREATEF_CREATOR);
}
static void p_put_creator(msg *m)
{
    M_SET(m, H + offsetof(ss__req_put, flags), uint32_t, SS_CREATEF_CREATOR);
}
static void p_create_flags(msg *m)
{
    M_SET(m, H + offsetof(ss__req_create, flags), uint32_t, SS_CREATEF_CREATOR << 1);
}

static const struct seed seeds[] = {
    { "req-hello", mk_req_hello, NULL },
    { "req-create", mk_req_create_meta, NULL },
    { "req-seal", mk_req_seal_small, NULL },
    { "req-seal-release", mk_req_seal_small, p_seal_release },
    { "req-abort", mk_req_abort, NULL },
    { "req-contains", mk_req_contains, NULL },
    { "req-delete", mk_req_delete, NULL },
    { "req-create-creator", mk_req_create_meta, p_create_creator },
    { "req-put", mk_req_put_small, NULL },
    { "req-put-creator", mk_req_put_small, p_put_creator },
    { "req-get", mk_req_get3, NULL },
    { "req-release", mk_req_release2, NULL },
    { "req-list", mk_req_list8, NULL },
    { "req-stats", mk_req_stats, NULL },
    { "req-subscribe", mk_req_sub, NULL },
    { "req-index", mk_req_index0, NULL },
    { "req-pins", mk_req_pins0, NULL },
    { "req-unpin", mk_req_unpin0, NULL },
    { "req-put-many", mk_req_put_many4, NULL },
    { "req-put-many-creator", mk_req_put_many4, p_pm_creator },
    { "req-putv", mk_req_putv3, NULL },
    { "split-release-get", mk_split_release_get, NULL },
    { "rep-hello", mk_rep_hello, NULL },
    { "rep-create-small", mk_rep_create_small, NULL },
    { "rep-create-object", mk_rep_create_object, NULL },
    { "rep-create-stage", mk_rep_create_stage, NULL },
    { "bad-create-stage-fds", mk_rep_create_stage, p_create_stage_fds },
    { "rep-seal", mk_rep_seal, NULL },
    { "rep-abort", mk_rep_abort, NULL },
    { "rep-put", mk_rep_put, NULL },
    { "rep-get", mk_rep_get, NULL },
    { "rep-contains", mk_rep_contains, NULL },
    { "rep-delete", mk_rep_delete, NULL },
    { "rep-list", mk_rep_list3, NULL },
    { "rep-stats", mk_rep_stats, NULL },
    { "rep-subscribe", mk_rep_sub, NULL },
    { "rep-index", mk_rep_index3, NULL },
    { "rep-pins", mk_rep_pins1016, NULL },
    { "rep-put-many", mk_rep_put_many4, NULL },
    { "rep-error", mk_rep_err, NULL },
    { "rep-seal-aborted", mk_rep_seal_aborted, NULL },
    { "event-sealed", mk_ev_sealed, NULL },
    { "event-deleted", mk_ev_deleted, NULL },
    { "bad-magic", mk_req_hello, p_magic },
    { "bad-version", mk_req_hello, p_version },
    { "bad-type0", mk_req_stats, p_type0 },
    { "bad-type99", mk_rep_hello, p_type99 },
    { "bad-len", mk_req_create_meta, p_len },
    { "bad-truncated", mk_req_get3, p_trunc },
    { "bad-req-fd", mk_req_hello, p_fd },
    { "bad-meta-huge", mk_req_create_meta, p_meta_huge },
    { "bad-get-n0", mk_req_get3, p_get_n0 },
    { "bad-get-n65", mk_req_get3, p_get_n65 },
    { "bad-get-timeout", mk_req_get3, p_get_timeout },
    { "bad-put-wrap", mk_req_put_small, p_put_wrap },
    { "bad-reserved", mk_req_delete, p_reserved },
    { "bad-getfd-range", mk_rep_get, p_getfd_range },
    { "bad-getfd-unnamed", mk_rep_get, p_getfd_unnamed },
    { "bad-get-overflow", mk_rep_get, p_get_overflow },
    { "bad-create-fds", mk_rep_create_small, p_create_fds },
    { "bad-list-state", mk_rep_list3, p_list_state },
    { "bad-error-body", mk_rep_hello, p_err_body },
    { "bad-reply-flag", mk_rep_stats, p_noreply },
    { "bad-create-flags", mk_req_create_meta, p_create_flags },
    { "bad-aborted-ok", mk_rep_seal, p_aborted },
    { "bad-put-many-n0", mk_req_put_many4, p_pm_n0 },
    { "bad-put-many-n5", mk_req_put_many4, p_pm_n5 },
    { "bad-put-many-wrap", mk_req_put_many4, p_pm_wrap },
    { "bad-put-many-shift", mk_req_put_many4, p_pm_shift },
    { "bad-put-many-count", mk_rep_put_many4, p_pm_count },
    { "bad-putv-sum", mk_req_putv3, p_pv_sum },
    { "bad-putv-zero", mk_req_putv3, p_pv_zero },
    { "bad-index-fds", mk_rep_index3, p_index_fds },
    { "bad-index-first", mk_rep_index3, p_index_first },
};

/* Input format of fuzz_proto.c: [nfds byte][message]. */
static int write_seed(const char *dir, const struct seed *s)
{
    char path[4096];
    FILE *f;

    s->mk(&M);
    if (s->patch)
        s->patch(&M);
    snprintf(path, sizeof(path), "%s/%s", dir, s->name);
    f = fopen(path, "wb");
    if (!f)
        return -1;
    fputc((int)M.nfds, f);
    fwrite(M.b, 1, M.len, f);
    return fclose(f);
}

/* Every seed says what its name says: valid ones pass, bad ones fail. */
static void test_seeds_classified(void **state)
{
    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(seeds); i++) {
        const struct seed *s = &seeds[i];
        bool valid = strncmp(s->name, "bad-", 4) != 0;
        int r;

        s->mk(&M);
        if (s->patch)
            s->patch(&M);
        if (strncmp(s->name, "split-", 6) == 0) {
            /* two requests: each part valid, the whole not one message */
            size_t first = ss__proto_split_request(M.b, M.len);
            static msg P;

            assert_true(first < M.len);
            assert_true(req(&M) < 0);
            memcpy(P.b, M.b + first, M.len - first);
            P.len = M.len - first;
            M.len = first;
            if (req(&M) <= 0 || req(&P) <= 0)
                fail_msg("seed %s: a part is rejected", s->name);
            continue;
        }
        r = strncmp(s->name, "req-", 4) == 0 ? req(&M) : rep(&M);
        if (valid && r <= 0)
            fail_msg("seed %s rejected: %d", s->name, r);
        if (!valid && (req(&M) > 0 || rep(&M) > 0))
            fail_msg("seed %s accepted", s->name);
    }
}

static void test_corpus_replay(void **state)
{
    char dir[4096];
    const char *src = getenv("SS_SRCDIR");
    long n;
    (void)state;

    snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus", src ? src : ".");
    n = fuzz_replay_path(dir);
    if (n < 0)
        fail_msg("cannot read the corpus at %s (set SS_SRCDIR)", dir);
    /* the committed seeds at least; libFuzzer finds may add more */
    assert_true(n >= (long)SS_ARRAY_SIZE(seeds));
    print_message("replayed %ld corpus inputs\n", n);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_valid),
        cmocka_unit_test(test_header_checks),
        cmocka_unit_test(test_request_reserved),
        cmocka_unit_test(test_request_counts),
        cmocka_unit_test(test_put_many_checks),
        cmocka_unit_test(test_putv_checks),
        cmocka_unit_test(test_index_checks),
        cmocka_unit_test(test_replies_valid),
        cmocka_unit_test(test_reply_header_and_errors),
        cmocka_unit_test(test_reply_hello_stats_event),
        cmocka_unit_test(test_reply_create),
        cmocka_unit_test(test_reply_get),
        cmocka_unit_test(test_reply_list),
        cmocka_unit_test(test_alignment_and_truncation),
        cmocka_unit_test(test_split_release_prefix),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_seeds_classified),
        cmocka_unit_test(test_corpus_replay),
    };

    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) {
        mkdir(argv[2], 0755);
        for (size_t i = 0; i < SS_ARRAY_SIZE(seeds); i++)
            if (write_seed(argv[2], &seeds[i]) != 0) {
                perror(seeds[i].name);
                return 1;
            }
        printf("wrote %zu seeds to %s\n", SS_ARRAY_SIZE(seeds), argv[2]);
        return 0;
    }
    return t_run(tests, NULL, NULL);
}
