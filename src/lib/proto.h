/* SPDX-License-Identifier: MIT */
/*
 * Wire protocol between the client library and the store. doc/protocol.md
 * describes it in prose; change the two together.
 *
 * Transport: a Unix SOCK_SEQPACKET socket, so every message arrives whole or
 * not at all; fds travel with SCM_RIGHTS on replies only (the store never
 * accepts an fd from a client: a request carrying one is malformed).
 *
 * Every message is a fixed header followed by a fixed body per type, then a
 * variable tail whose length the body states. All integers are in host
 * byte order (node-local protocol), every field naturally aligned, and the
 * layout is an ABI pinned by the static asserts in proto.c and by
 * tests/unit/t_proto.c (bump SS_PROTO_VERSION on any change).
 *
 * A datagram carries one message, with one exception: a RELEASE may be
 * followed in the same datagram by one more request (the library sends a
 * small object's deferred release with its next request this way, so the
 * store wakes once and reads once for both). ss__proto_split_request finds
 * the boundary; each part is then checked on its own.
 *
 * Requests carry a client-chosen req_id; a reply echoes it, so one
 * connection can have many requests in flight from several threads.
 * Replies to one connection are sent in the order the store completes them,
 * not the order requests were sent (a GET may wait).
 *
 * Validation (ss__proto_check_*): the decoder is the only code that looks
 * at raw client bytes. It checks magic, version, type, that the received
 * length equals hdr.len, that the length equals the body plus the tail the
 * body declares, every count against its SS_PROTO_MAX_*, and reserved
 * fields are zero. Anything else is -SS_E_PROTO: the store answers with an
 * error reply when it can identify the request, else closes the
 * connection. It never asserts on client bytes. The decoder is fuzzed
 * (tests/fuzz/fuzz_proto.c) and its corpus replays in make check.
 */
#ifndef SEALSTORE_SRC_LIB_PROTO_H
#define SEALSTORE_SRC_LIB_PROTO_H

#include "internal.h"

#define SS_PROTO_MAGIC 0x31505353u /* "SSP1" in memory order */
#define SS_PROTO_VERSION 7u /* 2: a RELEASE may lead a datagram;
                             * 3: GET and LIST entries carry the creator's uid;
                             * SEAL may drop the creator's reference;
                             * 4: a failed SEAL says whether the store aborted
                             * (SS_MSGF_ABORTED); a HELLO of another version
                             * gets -SS_E_VERSION before the close; CREATE/PUT
                             * flag SS_CREATEF_CREATOR, LIST entries' flags
                             * byte (SS_LISTF_*);
                             * 5: PUT_MANY (a batch of small puts);
                             * 6: PUTV (the store reads a put's bytes from
                             * the caller's memory), ARENA segments, INDEX
                             * (the shared index's memfds), STAGE areas in
                             * CREATE replies (copy-on-seal);
                             * 7: index format 2 (uids), PINS (a pin area
                             * for gets served from the index), UNPIN */

/* Largest message either side sends: header + body + 64 KiB meta + the
 * largest inline payload (SEALSTORE_SMALL_MAX is capped at 64 KiB) with
 * room to spare. Sockets get SO_SNDBUF/SO_RCVBUF of at least twice this. */
#define SS_PROTO_MAX_MSG (192u * 1024u)
#define SS_PROTO_MAX_META (64u * 1024u)
#define SS_PROTO_MAX_INLINE (64u * 1024u) /* cap of SEALSTORE_SMALL_MAX */
#define SS_PROTO_MAX_IDS 64u  /* ids per GET/RELEASE/CONTAINS; the library splits */
#define SS_PROTO_MAX_FDS 128u /* fds per reply: two per GET entry; < SCM_MAX_FD (253) */
#define SS_PROTO_MAX_LIST 256u /* entries per LIST reply */
#define SS_PROTO_MAX_BATCH 128u /* records per PUT_MANY; the library splits */
#define SS_PROTO_MAX_IOV 1024u  /* buffers per PUTV (IOV_MAX) */

enum ss__msg_type {
    SS_MSG_HELLO = 1,  /* first request on a connection */
    SS_MSG_CREATE,
    SS_MSG_SEAL,
    SS_MSG_ABORT,
    SS_MSG_PUT,        /* small objects: create + copy + seal + release */
    SS_MSG_GET,
    SS_MSG_RELEASE,    /* no reply */
    SS_MSG_CONTAINS,
    SS_MSG_DELETE,
    SS_MSG_LIST,
    SS_MSG_STATS,
    SS_MSG_SUBSCRIBE,  /* turns the connection into an event stream */
    SS_MSG_EVENT,      /* store -> subscriber, unsolicited (req_id 0) */
    SS_MSG_PUT_MANY,   /* version 5: n small PUTs in one message */
    SS_MSG_PUTV,       /* version 6: a put the store reads from the caller */
    SS_MSG_INDEX,      /* version 6: the shared index's memfds */
    SS_MSG_PINS,       /* version 7: this connection's pin area */
    SS_MSG_UNPIN,      /* version 7: a pin on a leaving object went; no reply */
    SS_MSG__COUNT
};

/* A number some message of this version has. */
static inline bool ss__proto_type_ok(uint32_t type)
{
    return type >= SS_MSG_HELLO && type < SS_MSG__COUNT;
}

/* Header flags */
#define SS_MSGF_REPLY 0x1u /* set on every store -> client message */
/* On a failed SEAL's reply only: the store aborted the object (its seal
 * failed for any reason but -EBUSY; the status keeps the cause), so the
 * creator's reference is gone with it. Without it a failed SEAL left the
 * object created: the creator may retry or abort. */
#define SS_MSGF_ABORTED 0x2u

/*
 * The header's layout is the same in every protocol version: a version
 * change never moves, resizes or renumbers a header field, SS_MSG_HELLO
 * stays 1 and SS_MSGF_REPLY stays 0x1. So a peer of any version reads a
 * header-only reply, and that is how the store refuses a HELLO of another
 * version: a header-only reply in its own version, status -SS_E_VERSION,
 * then it closes the connection (the client's check sees the other
 * version and returns -SS_E_VERSION).
 */
typedef struct ss__msg_hdr {
    uint32_t magic;   /* SS_PROTO_MAGIC */
    uint16_t version; /* SS_PROTO_VERSION */
    uint16_t type;    /* enum ss__msg_type */
    uint32_t req_id;  /* chosen by the client, echoed in the reply */
    uint32_t len;     /* whole message, header included */
    int32_t status;   /* replies: >= 0 or -errno / -SS_E_*; requests: 0 */
    uint32_t flags;   /* SS_MSGF_* */
} ss__msg_hdr;        /* 24 bytes */

/* A reference to bytes inside a segment, as a reply gives it. */
typedef struct ss__segref {
    uint64_t seg_id;   /* store-wide, never reused while the store lives */
    uint64_t seg_size; /* bytes to map (whole segment) */
    uint64_t offset;   /* of the bytes inside the segment */
    uint64_t size;     /* of the bytes */
    uint32_t fd_index; /* index into this reply's SCM_RIGHTS array, or SS_FD_NONE */
    uint32_t kind;     /* enum ss__seg_kind */
} ss__segref;          /* 40 bytes */
#define SS_FD_NONE 0xffffffffu /* the client already has this segment's fd */
/* Version 6: a CREATE reply of kind SS_SEG_STAGE names a staging area,
 * the creator's scratch the store copies the object from at SEAL; its
 * seg_id has this bit over a serial the store never reuses. */
#define SS_SEG_ID_STAGE (1ull << 61)

/* ---- HELLO: {pid, flags} -> {client_id, limits}; reply carries no fd */
typedef struct ss__req_hello {
    uint32_t pid;       /* informational; the store trusts SO_PEERCRED */
    uint32_t flags;     /* 0 */
    uint64_t reserved;  /* 0 */
} ss__req_hello;
typedef struct ss__rep_hello {
    uint64_t store_id;    /* random per store instance */
    uint32_t client_id;
    uint32_t small_max;   /* largest object sent inline (PUT/SEAL payload) */
    uint64_t capacity;    /* bytes */
    uint32_t max_msg;     /* SS_PROTO_MAX_MSG of the store */
    uint32_t reserved;
} ss__rep_hello;

/* ---- CREATE: {id, size, meta} -> {data segref} (+ fds: OBJECT: rw, ro) */
typedef struct ss__req_create {
    ss_id id;
    int32_t node;       /* NUMA node of the creating CPU, -1 unknown (untrusted) */
    uint64_t size;
    uint32_t meta_size; /* tail: meta bytes */
    uint32_t flags;     /* SS_CREATEF_* */
} ss__req_create;
/* CREATE and PUT flags. CREATOR: the object's lifetime is bound to this
 * connection: when it ends (close, crash), the store deletes the object as
 * a DELETE would (unchained at once, memory freed at the last release, a
 * disk copy removed durably); its spill records say so, and the startup
 * scan of a spill directory deletes such records instead of restoring
 * them (their creator is gone by definition). */
#define SS_CREATEF_CREATOR 0x1u
typedef struct ss__rep_create {
    ss__segref data;    /* SMALL: the client buffers locally and sends the
                           payload with SEAL (no fd); OBJECT: fd_index of the
                           read-only fd, the read-write fd follows it at
                           fd_index + 1; STAGE (version 6): a staging area
                           of this connection (seg_id with SS_SEG_ID_STAGE),
                           its read-write fd at fd_index 0 the first time,
                           SS_FD_NONE after; the client writes the object's
                           bytes at offset 0 and SEALs with no payload: the
                           store copies them into its own memory (an ARENA
                           object) then */
} ss__rep_create;

/* ---- SEAL: {id, flags, payload_size} + payload (SMALL only) -> status */
typedef struct ss__req_seal {
    ss_id id;
    uint32_t flags;        /* SS_SEALF_* */
    uint64_t payload_size; /* SMALL: == the created size; OBJECT, STAGE: 0 */
} ss__req_seal;
/* Once sealed, drop the creator's reference on this very object (before
 * the reply is sent), as if RELEASE had named it: a put's hold ends
 * without a RELEASE, which names only an id and could mean an older
 * object with the same id that the client still holds. Nothing is
 * dropped when the seal fails, unless the failure aborted the object
 * (SS_MSGF_ABORTED on the reply), which drops every reference. */
#define SS_SEALF_RELEASE 0x1u

/* ---- ABORT / DELETE / CONTAINS(1 id): {id} -> status (CONTAINS: 1 or 0) */
typedef struct ss__req_id {
    ss_id id;
    uint32_t reserved;
} ss__req_id;

/* ---- PUT (SMALL only): {id, size, meta_size} + meta + data -> status */
typedef struct ss__req_put {
    ss_id id;
    int32_t node;
    uint64_t size;
    uint32_t meta_size;
    uint32_t flags;     /* SS_CREATEF_* */
} ss__req_put;

/* ---- PUT_MANY (SMALL only, version 5): {n} + records[n] + tail ->
 * {n} + statuses[n]. Each record is a PUT's body (ss__req_put); the tail
 * is, for each record in order, its meta_size meta bytes then its size
 * data bytes, nothing between. The decoder checks every record (flags,
 * meta_size, size) and that the tail is exactly the sum. The store runs
 * each record as a PUT, in order, and answers once: status i is 0
 * (stored) or -errno (-EEXIST, -ENOSPC at once: a batch never parks,
 * -EINVAL over its small_max, -ENOMEM); the header's status is how many
 * were stored. */
typedef struct ss__req_put_many {
    uint32_t n;         /* 1..SS_PROTO_MAX_BATCH */
    uint32_t reserved;  /* 0 */
} ss__req_put_many;
typedef struct ss__rep_put_many {
    uint32_t n;         /* the request's n */
    uint32_t reserved;  /* 0 */
} ss__rep_put_many;     /* then int32_t statuses[n] */

/* ---- PUTV (version 6): {put, niov} + iov[niov] + meta -> status.
 * A put of any size whose bytes stay in the caller's memory: iov[] are
 * addresses in the sending process (the one SO_PEERCRED names), put.size
 * their total; the store makes the object (an ARENA one), reads the
 * bytes with process_vm_readv while the caller waits for the reply, and
 * seals it with no reference left, as a PUT does. The decoder checks
 * niov (1..SS_PROTO_MAX_IOV), that no length is 0, that the lengths sum
 * to put.size without overflow, flags and meta_size. Statuses: 0; -EFAULT
 * (a buffer is not readable memory of the caller: nothing stored); -EPERM
 * (the store may not read this caller's memory, e.g. another uid, a
 * non-dumpable process, or no pidfd of it: nothing stored, the caller
 * puts another way); the errors of a PUT (-EEXIST, -ENOSPC, ...). */
typedef struct ss__req_putv {
    ss__req_put put;    /* as a PUT's body; put.size may be any size */
    uint32_t niov;      /* 1..SS_PROTO_MAX_IOV */
    uint32_t reserved;  /* 0 */
} ss__req_putv;
typedef struct ss__putv_iov {
    uint64_t base;      /* address in the caller */
    uint64_t len;       /* > 0 */
} ss__putv_iov;

/* ---- GET: {n, timeout} + ids[n] -> {n} + entries[n] (+ fds) */
typedef struct ss__req_get {
    uint32_t n;          /* 1..SS_PROTO_MAX_IDS */
    uint32_t reserved;
    int64_t timeout_ms;  /* -1 forever, 0 no wait */
} ss__req_get;
typedef struct ss__get_entry {
    int32_t status;      /* 0 found, -ENOENT not found (no reference taken) */
    uint32_t uid;        /* found: the creator's uid (SO_PEERCRED at its
                            connect) or SS_UID_UNKNOWN; not found: 0 */
    ss__segref data;
    ss__segref meta;     /* size 0: no meta */
} ss__get_entry;         /* 88 bytes */
typedef struct ss__rep_get {
    uint32_t n;
    uint32_t nfds;
} ss__rep_get;

/* ---- RELEASE: {n} + ids[n]; no reply. Each id drops one reference. */
typedef struct ss__req_release {
    uint32_t n;
    uint32_t reserved;
} ss__req_release;

/* ---- LIST: {cursor, max} -> {next_cursor, n} + entries[n] */
typedef struct ss__req_list {
    uint64_t cursor;   /* 0 to start */
    uint32_t max;      /* 1..SS_PROTO_MAX_LIST */
    uint32_t reserved;
} ss__req_list;
typedef struct ss__list_entry {
    ss_id id;
    uint32_t state;    /* enum ss_obj_state (sealstore.h) */
    uint64_t size;
    uint32_t meta_size;
    uint8_t backing;   /* enum ss__backing */
    uint8_t flags;     /* SS_LISTF_* */
    int16_t node;
    uint32_t refs;
    uint32_t uid;      /* creator's uid or SS_UID_UNKNOWN, as in GET entries */
} ss__list_entry;
#define SS_LISTF_SPILLED 0x1u  /* on disk only */
#define SS_LISTF_CREATOR 0x2u  /* bound to its creator (SS_CREATEF_CREATOR) */
typedef struct ss__rep_list {
    uint64_t next_cursor; /* 0: done */
    uint32_t n;
    uint32_t reserved;
} ss__rep_list;

/* ---- INDEX (version 6): {first} -> {nchunks, first, n} + fds: the
 * store's shared index (store_int.h, doc/protocol.md), read-only: fd 0 is
 * the current bucket memfd, fds 1..n the chunk memfds first..first+n-1 of
 * the nchunks the index has now (n <= SS_PROTO_MAX_FDS - 1: a client with
 * fewer chunks than nchunks asks again from first + n). A first at or past
 * nchunks gets n = 0 (the bucket memfd alone). The client maps them
 * read-only and looks sealed objects up itself (ss_contains). */
typedef struct ss__req_index {
    uint32_t first;    /* first chunk wanted */
    uint32_t reserved; /* 0 */
} ss__req_index;
typedef struct ss__rep_index {
    uint32_t nchunks;  /* chunks the index has, 1..SS_INDEX_MAX_CHUNKS */
    uint32_t first;    /* the request's first, at most nchunks */
    uint32_t n;        /* chunk fds in this reply: first + n <= nchunks */
    uint32_t reserved; /* 0 */
} ss__rep_index;
#define SS_PROTO_INDEX_MAX_CHUNKS 65536u /* SS_INDEX_MAX_CHUNKS (store_int.h) */

/* ---- PINS (version 7): {0, 0} -> {nslots, 0} + 1 fd: this connection's
 * pin area (store_int.h, doc/protocol.md), a memfd sealed SHRINK|GROW|SEAL
 * the client maps read-write: it pins objects it takes from the index
 * there. One per connection (a second PINS gets -EBUSY); -EAGAIN: the
 * fd budget, ask later.
 * ---- UNPIN (version 7): {0, 0}, no reply: the client cleared a pin on an
 * object it saw leaving; the store looks at the objects pins keep again. */
typedef struct ss__req_pins {
    uint32_t reserved[2]; /* 0 */
} ss__req_pins;
typedef struct ss__rep_pins {
    uint32_t nslots;      /* slots after the area's 64-byte header */
    uint32_t reserved;    /* 0 */
} ss__rep_pins;

/* ---- STATS: {} -> ss_stats (sealstore.h) as the body */

/* ---- SUBSCRIBE: {mask} -> status; then EVENT messages on this connection */
typedef struct ss__req_subscribe {
    uint32_t mask;     /* SS_EVENT_* bits (sealstore.h) */
    uint32_t reserved;
} ss__req_subscribe;
typedef struct ss__msg_event {
    uint32_t type;     /* SS_EVENT_SEALED / SS_EVENT_DELETED */
    uint32_t reserved;
    ss_id id;
    uint32_t reserved2;
    uint64_t size;
} ss__msg_event;

/*
 * Reply rules the checkers enforce (both sides rely on them):
 *  - a reply echoes the request's type and req_id, has flags ==
 *    SS_MSGF_REPLY; an EVENT has req_id 0, status 0;
 *  - an error reply (status < 0: a -errno in -1..-4095 or a -SS_E_* code)
 *    is the header alone and carries no fd;
 *  - success: HELLO, CREATE, GET, LIST, STATS, PUT_MANY, INDEX, PINS carry their body
 *    (status 0; GET and LIST may put their count, 0..n, in status;
 *    PUT_MANY's status is the number of its statuses that are 0, each of
 *    the others a plausible error); SEAL, ABORT, PUT, PUTV,
 *    DELETE, SUBSCRIBE are the header alone with status 0; CONTAINS is
 *    the header alone with status 0 or 1; RELEASE and UNPIN have no
 *    reply; INDEX has status 0 and exactly 1 + n fds; PINS status 0 and
 *    exactly 1 fd;
 *  - a GET entry with status -ENOENT has uid 0 and its segrefs ignored; a meta
 *    segref of size 0 is ignored; a data segref with size 0 may name no
 *    segment (seg_size 0, fd_index SS_FD_NONE: a zero-size object);
 *  - every fd index a segref names is < nfds, every fd received is named
 *    by some segref, and segrefs naming one index name one seg_id.
 */

/* Largest reply a client can receive (a LIST reply of SS_PROTO_MAX_LIST
 * entries); a client's receive buffer is a little bigger, so that a
 * longer message shows as truncated. */
#define SS_PROTO_LIST_REPLY_MAX \
    (sizeof(ss__msg_hdr) + sizeof(ss__rep_list) + SS_PROTO_MAX_LIST * sizeof(ss__list_entry))
#define SS_PROTO_GET_REPLY_MAX \
    (sizeof(ss__msg_hdr) + sizeof(ss__rep_get) + SS_PROTO_MAX_IDS * sizeof(ss__get_entry))
#define SS_PROTO_MAX_REPLY \
    (SS_PROTO_LIST_REPLY_MAX > SS_PROTO_GET_REPLY_MAX ? SS_PROTO_LIST_REPLY_MAX \
                                                      : SS_PROTO_GET_REPLY_MAX)

/* Largest object a segment reference may describe: anything bigger is an
 * absurd size (the memory layer refuses segments over 1 TiB). */
#define SS_PROTO_MAX_SEG (1ull << 40)

/* Is `status` a plausible negative status: -errno or -SS_E_*? */
bool ss__proto_status_is_error(int32_t status);

/*
 * Check a received request: hdr fields, type, lengths, counts, reserved
 * fields, tails. `buf` holds `len` received bytes, `nfds` how many fds came
 * with it (requests must carry none). Returns the type (> 0) or -SS_E_PROTO
 * (-SS_E_VERSION for a good magic with another version).
 */
int ss__proto_check_request(const void *buf, size_t len, unsigned nfds);

/*
 * Where the first message of a received datagram ends: hdr.len when the
 * datagram starts with a header of this version naming a RELEASE whose
 * hdr.len is at least a header and shorter than `len` (a RELEASE followed
 * by one more request), else `len` (one message, checked whole). It only
 * reads the header; both parts still go through ss__proto_check_request.
 */
size_t ss__proto_split_request(const void *buf, size_t len);
/* Same for a reply, by the client: also checks nfds against what the body
 * references. */
int ss__proto_check_reply(const void *buf, size_t len, unsigned nfds);

/* Fill a header. */
void ss__proto_hdr(ss__msg_hdr *h, uint16_t type, uint32_t req_id, uint32_t len,
                   int32_t status, uint32_t flags);

#endif /* SEALSTORE_SRC_LIB_PROTO_H */
