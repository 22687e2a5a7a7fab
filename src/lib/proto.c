/* SPDX-License-Identifier: MIT */
/*
 * Wire protocol checks (proto.h). This is the only code that reads raw
 * bytes from a peer, and it is fuzzed (tests/fuzz/fuzz_proto.c).
 *
 * Rules that keep it safe on any input:
 *  - every read is bounds-checked against `len` first, and goes through
 *    memcpy into a local struct: the buffer may have any alignment;
 *  - lengths are compared in size_t after checking each count against its
 *    SS_PROTO_MAX_*, so no product or sum can overflow;
 *  - no assert, no allocation, no logging: a bad message is a return value.
 */
#include "proto.h"
#include "segment.h"

#include <string.h>

_Static_assert(sizeof(ss__msg_hdr) == 24, "ss__msg_hdr layout");
_Static_assert(sizeof(ss__segref) == 40, "ss__segref layout");
_Static_assert(sizeof(ss__get_entry) == 88, "ss__get_entry layout");
_Static_assert(sizeof(ss__req_create) == 40, "ss__req_create layout");
_Static_assert(sizeof(ss__req_put) == 40, "ss__req_put layout");
_Static_assert(sizeof(ss__req_put_many) == 8 && sizeof(ss__rep_put_many) == 8,
               "PUT_MANY layout");
_Static_assert(SS_MSG_EVENT == 13 && SS_MSG_PUT_MANY == 14 && SS_MSG_PUTV == 15,
               "message numbers never change");
_Static_assert(SS_PROTO_VERSION == 7, "protocol version (doc/protocol.md, tests/abi)");
_Static_assert(sizeof(ss__req_putv) == 48 && sizeof(ss__putv_iov) == 16, "PUTV layout");
_Static_assert(SS_MSG_INDEX == 16, "message numbers never change");
_Static_assert(sizeof(ss__req_index) == 8 && sizeof(ss__rep_index) == 16, "INDEX layout");
_Static_assert(SS_MSG_PINS == 17 && SS_MSG_UNPIN == 18, "message numbers never change");
_Static_assert(sizeof(ss__req_pins) == 8 && sizeof(ss__rep_pins) == 8, "PINS layout");
_Static_assert(sizeof(ss__msg_hdr) + sizeof(ss__rep_put_many) + SS_PROTO_MAX_BATCH * sizeof(int32_t) <= SS_PROTO_MAX_REPLY,
               "a PUT_MANY reply fits a client's receive buffer");
_Static_assert(sizeof(ss__req_seal) == 32, "ss__req_seal layout");
_Static_assert(sizeof(ss__req_id) == 24, "ss__req_id layout");
_Static_assert(sizeof(ss__list_entry) == 48, "ss__list_entry layout");
_Static_assert(sizeof(ss__msg_event) == 40, "ss__msg_event layout");
_Static_assert(SS_PROTO_MAX_FDS <= 253, "SCM_MAX_FD");
/* fixed in every version (proto.h): how another version is refused */
_Static_assert(offsetof(ss__msg_hdr, magic) == 0 && offsetof(ss__msg_hdr, version) == 4 &&
                   offsetof(ss__msg_hdr, type) == 6 && offsetof(ss__msg_hdr, req_id) == 8 &&
                   offsetof(ss__msg_hdr, len) == 12 && offsetof(ss__msg_hdr, status) == 16 &&
                   offsetof(ss__msg_hdr, flags) == 20,
               "ss__msg_hdr layout is the same in every version");
_Static_assert(SS_MSG_HELLO == 1 && SS_MSGF_REPLY == 0x1u, "fixed in every version");
_Static_assert(SS_PROTO_MAX_REPLY < SS_PROTO_MAX_MSG, "replies fit a message");

#define HDR sizeof(ss__msg_hdr)

void ss__proto_hdr(ss__msg_hdr *h, uint16_t type, uint32_t req_id, uint32_t len,
                   int32_t status, uint32_t flags)
{
    h->magic = SS_PROTO_MAGIC;
    h->version = SS_PROTO_VERSION;
    h->type = type;
    h->req_id = req_id;
    h->len = len;
    h->status = status;
    h->flags = flags;
}

bool ss__proto_status_is_error(int32_t status)
{
    if (status >= 0 || status == INT32_MIN)
        return false;
    if (-status <= SS_MAX_ERRNO)
        return true;
    return -status >= SS_E_BASE && -status < SS_E_LAST;
}

/* Header common to both directions: magic, version, type range, declared
 * length equal to the received one, within SS_PROTO_MAX_MSG. */
static int check_hdr(const void *buf, size_t len, ss__msg_hdr *h)
{
    if (!buf || len < HDR || len > SS_PROTO_MAX_MSG)
        return -SS_E_PROTO;
    memcpy(h, buf, HDR);
    if (h->magic != SS_PROTO_MAGIC)
        return -SS_E_PROTO;
    if (h->version != SS_PROTO_VERSION)
        return -SS_E_VERSION;
    if (!ss__proto_type_ok(h->type))
        return -SS_E_PROTO;
    if (h->len != len)
        return -SS_E_PROTO;
    return 0;
}


/* ------------------------------------------------------------ requests */

/* A PUT's body (alone or as a PUT_MANY record): flags, meta and size
 * bounds; adds its tail to *tail. */
static bool put_record_ok(const ss__req_put *r, size_t *tail)
{
    if ((r->flags & ~SS_CREATEF_CREATOR) != 0 || r->meta_size > SS_PROTO_MAX_META ||
        r->size > SS_PROTO_MAX_INLINE)
        return false;
    *tail += (size_t)r->meta_size + (size_t)r->size;
    return true;
}

/* PUT_MANY: n in range, every record sane, the tail exactly their sum
 * (n <= SS_PROTO_MAX_BATCH records of at most 128 KiB each: no overflow). */
static bool put_many_ok(const unsigned char *p, size_t body)
{
    ss__req_put_many r;
    size_t tail = 0;

    if (body < sizeof(r))
        return false;
    memcpy(&r, p, sizeof(r));
    if (r.n < 1 || r.n > SS_PROTO_MAX_BATCH || r.reserved != 0 ||
        body < sizeof(r) + (size_t)r.n * sizeof(ss__req_put))
        return false;
    p += sizeof(r);
    for (uint32_t i = 0; i < r.n; i++) {
        ss__req_put e;

        memcpy(&e, p + (size_t)i * sizeof(e), sizeof(e));
        if (!put_record_ok(&e, &tail))
            return false;
    }
    return body == sizeof(r) + (size_t)r.n * sizeof(ss__req_put) + tail;
}

/* PUTV: a PUT's body with any size, then niov iovecs summing to that
 * size (none empty) and the meta. */
static bool putv_ok(const unsigned char *p, size_t body)
{
    ss__req_putv r;
    uint64_t sum = 0;

    if (body < sizeof(r))
        return false;
    memcpy(&r, p, sizeof(r));
    if ((r.put.flags & ~SS_CREATEF_CREATOR) != 0 || r.put.meta_size > SS_PROTO_MAX_META ||
        r.put.size > SS_PROTO_MAX_SEG || r.niov < 1 || r.niov > SS_PROTO_MAX_IOV ||
        r.reserved != 0 ||
        body != sizeof(r) + (size_t)r.niov * sizeof(ss__putv_iov) + r.put.meta_size)
        return false;
    p += sizeof(r);
    for (uint32_t i = 0; i < r.niov; i++) {
        ss__putv_iov v;

        memcpy(&v, p + (size_t)i * sizeof(v), sizeof(v));
        if (v.len == 0 || v.len > SS_PROTO_MAX_SEG || v.base > UINT64_MAX - v.len)
            return false;
        sum += v.len; /* <= 1024 * 2^40: no overflow */
    }
    return sum == r.put.size;
}

size_t ss__proto_split_request(const void *buf, size_t len)
{
    ss__msg_hdr h;

    if (len <= HDR)
        return len;
    memcpy(&h, buf, HDR);
    if (h.magic != SS_PROTO_MAGIC || h.version != SS_PROTO_VERSION ||
        h.type != SS_MSG_RELEASE || h.len < HDR || h.len >= len)
        return len;
    return h.len;
}

int ss__proto_check_request(const void *buf, size_t len, unsigned nfds)
{
    const unsigned char *p = buf;
    ss__msg_hdr h;
    size_t body = len - HDR; /* valid once check_hdr passed */
    int rc = check_hdr(buf, len, &h);

    if (rc < 0)
        return rc;
    /* the store never accepts an fd; a request has no status, no flags */
    if (nfds != 0 || h.status != 0 || h.flags != 0)
        return -SS_E_PROTO;
    p += HDR;

    switch (h.type) {
    case SS_MSG_HELLO: {
        ss__req_hello r;
        if (body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.flags != 0 || r.reserved != 0)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_CREATE: {
        ss__req_create r;
        if (body < sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if ((r.flags & ~SS_CREATEF_CREATOR) != 0 || r.meta_size > SS_PROTO_MAX_META ||
            body != sizeof(r) + (size_t)r.meta_size)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_SEAL: {
        ss__req_seal r;
        if (body < sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if ((r.flags & ~SS_SEALF_RELEASE) != 0 || r.payload_size > SS_PROTO_MAX_INLINE ||
            body != sizeof(r) + (size_t)r.payload_size)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_ABORT:
    case SS_MSG_CONTAINS:
    case SS_MSG_DELETE: {
        ss__req_id r;
        if (body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.reserved != 0)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_PUT: {
        ss__req_put r;
        if (body < sizeof(r))
            return -SS_E_PROTO;
        size_t tail = 0;
        memcpy(&r, p, sizeof(r));
        if (!put_record_ok(&r, &tail) || body != sizeof(r) + tail)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_PUT_MANY:
        if (!put_many_ok(p, body))
            return -SS_E_PROTO;
        break;
    case SS_MSG_PUTV:
        if (!putv_ok(p, body))
            return -SS_E_PROTO;
        break;
    case SS_MSG_GET: {
        ss__req_get r;
        if (body < sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.n < 1 || r.n > SS_PROTO_MAX_IDS || r.reserved != 0 || r.timeout_ms < -1 ||
            body != sizeof(r) + (size_t)r.n * sizeof(ss_id))
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_RELEASE: {
        ss__req_release r;
        if (body < sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.n < 1 || r.n > SS_PROTO_MAX_IDS || r.reserved != 0 ||
            body != sizeof(r) + (size_t)r.n * sizeof(ss_id))
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_LIST: {
        ss__req_list r;
        if (body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.max < 1 || r.max > SS_PROTO_MAX_LIST || r.reserved != 0)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_STATS:
        if (body != 0)
            return -SS_E_PROTO;
        break;
    case SS_MSG_INDEX: {
        ss__req_index r;
        if (body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.reserved != 0 || r.first >= SS_PROTO_INDEX_MAX_CHUNKS)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_PINS:
    case SS_MSG_UNPIN: {
        ss__req_pins r;
        if (body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.reserved[0] != 0 || r.reserved[1] != 0)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_SUBSCRIBE: {
        ss__req_subscribe r;
        if (body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.mask == 0 || (r.mask & ~(SS_EVENT_SEALED | SS_EVENT_DELETED)) ||
            r.reserved != 0)
            return -SS_E_PROTO;
        break;
    }
    default: /* SS_MSG_EVENT: store -> client only */
        return -SS_E_PROTO;
    }
    return h.type;
}

/* -------------------------------------------------------------- replies */

/* What the segrefs of one reply say about its fds. */
typedef struct fdmap {
    unsigned nfds;
    uint64_t seg[SS_PROTO_MAX_FDS];  /* seg_id named at each index */
    bool used[SS_PROTO_MAX_FDS];
} fdmap;

/* A segref that points at bytes: kind known, bytes inside the segment,
 * segment size sane, fd index (if any) consistent with the others. */
static int check_segref(const ss__segref *r, fdmap *m, bool allow_none)
{
    if (r->kind != SS_SEG_OBJECT && r->kind != SS_SEG_SMALL && r->kind != SS_SEG_ARENA)
        return -SS_E_PROTO;
    if (allow_none && r->size == 0 && r->seg_size == 0)
        return r->fd_index == SS_FD_NONE ? 0 : -SS_E_PROTO;
    if (r->seg_size == 0 || r->seg_size > SS_PROTO_MAX_SEG || r->offset > r->seg_size ||
        r->size > r->seg_size - r->offset)
        return -SS_E_PROTO;
    if (r->fd_index == SS_FD_NONE)
        return 0;
    if (r->fd_index >= m->nfds)
        return -SS_E_PROTO;
    if (m->used[r->fd_index] && m->seg[r->fd_index] != r->seg_id)
        return -SS_E_PROTO;
    m->used[r->fd_index] = true;
    m->seg[r->fd_index] = r->seg_id;
    return 0;
}

static int check_all_fds_named(const fdmap *m)
{
    for (unsigned i = 0; i < m->nfds; i++)
        if (!m->used[i])
            return -SS_E_PROTO;
    return 0;
}

static int check_get_reply(const unsigned char *p, size_t body, int32_t status, unsigned nfds)
{
    ss__rep_get r;
    fdmap m;

    if (body < sizeof(r))
        return -SS_E_PROTO;
    memcpy(&r, p, sizeof(r));
    if (r.n < 1 || r.n > SS_PROTO_MAX_IDS || r.nfds != nfds ||
        body != sizeof(r) + (size_t)r.n * sizeof(ss__get_entry) ||
        (uint32_t)status > r.n)
        return -SS_E_PROTO;
    m.nfds = nfds;
    memset(m.used, 0, sizeof(m.used));
    p += sizeof(r);
    for (uint32_t i = 0; i < r.n; i++) {
        ss__get_entry e;

        memcpy(&e, p + (size_t)i * sizeof(e), sizeof(e));
        if (e.status == -ENOENT) {
            if (e.uid != 0)
                return -SS_E_PROTO;
            continue;
        }
        if (e.status != 0)
            return -SS_E_PROTO;
        if (check_segref(&e.data, &m, true) < 0)
            return -SS_E_PROTO;
        if (e.meta.size > SS_PROTO_MAX_META)
            return -SS_E_PROTO;
        if (e.meta.size > 0 && check_segref(&e.meta, &m, false) < 0)
            return -SS_E_PROTO;
    }
    return check_all_fds_named(&m);
}

/* n statuses, each 0 or an error; the header's status counts the 0s. */
static int check_put_many_reply(const unsigned char *p, size_t body, int32_t status)
{
    ss__rep_put_many r;
    int32_t stored = 0;

    if (body < sizeof(r))
        return -SS_E_PROTO;
    memcpy(&r, p, sizeof(r));
    if (r.n < 1 || r.n > SS_PROTO_MAX_BATCH || r.reserved != 0 ||
        body != sizeof(r) + (size_t)r.n * sizeof(int32_t))
        return -SS_E_PROTO;
    p += sizeof(r);
    for (uint32_t i = 0; i < r.n; i++) {
        int32_t st;

        memcpy(&st, p + (size_t)i * sizeof(st), sizeof(st));
        if (st == 0)
            stored++;
        else if (!ss__proto_status_is_error(st))
            return -SS_E_PROTO;
    }
    return stored == status ? 0 : -SS_E_PROTO;
}

static int check_create_reply(const unsigned char *p, size_t body, unsigned nfds)
{
    ss__rep_create r;

    if (body != sizeof(r))
        return -SS_E_PROTO;
    memcpy(&r, p, sizeof(r));
    if (r.data.kind == SS_SEG_SMALL) {
        /* the creator buffers locally: no segment to map */
        if (r.data.fd_index != SS_FD_NONE || nfds != 0 || r.data.size > SS_PROTO_MAX_INLINE)
            return -SS_E_PROTO;
        return 0;
    }
    if (r.data.kind == SS_SEG_STAGE) {
        /* version 6: a staging area, its read-write fd the first time
         * (alone), else none; the object's bytes at offset 0, 64-byte
         * aligned (a page: the area is its own memfd), inside the area */
        bool fd = r.data.fd_index != SS_FD_NONE;
        if ((fd ? r.data.fd_index != 0 || nfds != 1 : nfds != 0) ||
            (r.data.seg_id & SS_SEG_ID_STAGE) == 0 || r.data.seg_size == 0 ||
            r.data.seg_size > SS_PROTO_MAX_SEG || r.data.offset != 0 ||
            r.data.size > r.data.seg_size)
            return -SS_E_PROTO;
        return 0;
    }
    if (r.data.kind != SS_SEG_OBJECT)
        return -SS_E_PROTO;
    /* read-only fd at fd_index, read-write fd right after it: exactly two */
    if (nfds != 2 || r.data.fd_index != 0 || r.data.seg_size == 0 ||
        r.data.seg_size > SS_PROTO_MAX_SEG || r.data.offset > r.data.seg_size ||
        r.data.size > r.data.seg_size - r.data.offset)
        return -SS_E_PROTO;
    return 0;
}

static int check_list_reply(const unsigned char *p, size_t body, int32_t status)
{
    ss__rep_list r;

    if (body < sizeof(r))
        return -SS_E_PROTO;
    memcpy(&r, p, sizeof(r));
    if (r.n > SS_PROTO_MAX_LIST || r.reserved != 0 || (uint32_t)status > r.n ||
        body != sizeof(r) + (size_t)r.n * sizeof(ss__list_entry))
        return -SS_E_PROTO;
    p += sizeof(r);
    for (uint32_t i = 0; i < r.n; i++) {
        ss__list_entry e;

        memcpy(&e, p + (size_t)i * sizeof(e), sizeof(e));
        if ((e.state != SS_OBJ_CREATED && e.state != SS_OBJ_SEALED) ||
            e.backing >= SS_BACKING__COUNT || (e.flags & ~(SS_LISTF_SPILLED | SS_LISTF_CREATOR)) ||
            e.meta_size > SS_PROTO_MAX_META)
            return -SS_E_PROTO;
    }
    return 0;
}

int ss__proto_check_reply(const void *buf, size_t len, unsigned nfds)
{
    const unsigned char *p = buf;
    ss__msg_hdr h;
    size_t body = len - HDR;
    int rc = check_hdr(buf, len, &h);

    if (rc < 0)
        return rc;
    if ((h.flags & ~SS_MSGF_ABORTED) != SS_MSGF_REPLY || nfds > SS_PROTO_MAX_FDS)
        return -SS_E_PROTO;
    /* "aborted" only ever explains a failed SEAL */
    if ((h.flags & SS_MSGF_ABORTED) && (h.type != SS_MSG_SEAL || h.status >= 0))
        return -SS_E_PROTO;
    p += HDR;

    if (h.type == SS_MSG_EVENT) {
        ss__msg_event e;

        if (h.req_id != 0 || h.status != 0 || nfds != 0 || body != sizeof(e))
            return -SS_E_PROTO;
        memcpy(&e, p, sizeof(e));
        if ((e.type != SS_EVENT_SEALED && e.type != SS_EVENT_DELETED) || e.reserved != 0 ||
            e.reserved2 != 0)
            return -SS_E_PROTO;
        return h.type;
    }
    if (h.type == SS_MSG_RELEASE || h.type == SS_MSG_UNPIN) /* never answered */
        return -SS_E_PROTO;
    if (h.status < 0) {
        /* an error reply is the header alone */
        if (!ss__proto_status_is_error(h.status) || body != 0 || nfds != 0)
            return -SS_E_PROTO;
        return h.type;
    }

    switch (h.type) {
    case SS_MSG_HELLO: {
        ss__rep_hello r;
        if (h.status != 0 || nfds != 0 || body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.reserved != 0 || r.small_max > SS_PROTO_MAX_INLINE || r.max_msg < 4096)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_CREATE:
        if (h.status != 0 || check_create_reply(p, body, nfds) < 0)
            return -SS_E_PROTO;
        break;
    case SS_MSG_GET:
        if (check_get_reply(p, body, h.status, nfds) < 0)
            return -SS_E_PROTO;
        break;
    case SS_MSG_LIST:
        if (nfds != 0 || check_list_reply(p, body, h.status) < 0)
            return -SS_E_PROTO;
        break;
    case SS_MSG_STATS: {
        ss_stats s;
        if (h.status != 0 || nfds != 0 || body != sizeof(s))
            return -SS_E_PROTO;
        memcpy(&s, p, sizeof(s));
        if (s.size != sizeof(s) || s.version != SS_STATS_VERSION)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_PUT_MANY:
        if (nfds != 0 || check_put_many_reply(p, body, h.status) < 0)
            return -SS_E_PROTO;
        break;
    case SS_MSG_CONTAINS:
        if (h.status > 1 || nfds != 0 || body != 0)
            return -SS_E_PROTO;
        break;
    case SS_MSG_INDEX: {
        ss__rep_index r;
        if (h.status != 0 || body != sizeof(r))
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.reserved != 0 || r.nchunks < 1 || r.nchunks > SS_PROTO_INDEX_MAX_CHUNKS ||
            r.first > r.nchunks || r.n > r.nchunks - r.first || r.n > SS_PROTO_MAX_FDS - 1 ||
            nfds != 1 + r.n)
            return -SS_E_PROTO;
        break;
    }
    case SS_MSG_PINS: {
        ss__rep_pins r;
        if (h.status != 0 || body != sizeof(r) || nfds != 1)
            return -SS_E_PROTO;
        memcpy(&r, p, sizeof(r));
        if (r.reserved != 0 || r.nslots < 1 || r.nslots > 65536)
            return -SS_E_PROTO;
        break;
    }
    default: /* SEAL, ABORT, PUT, PUTV, DELETE, SUBSCRIBE: status only */
        if (h.status != 0 || nfds != 0 || body != 0)
            return -SS_E_PROTO;
        break;
    }
    return h.type;
}
