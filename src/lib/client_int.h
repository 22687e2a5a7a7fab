/* SPDX-License-Identifier: MIT */
/*
 * Client handle internals (client.c, client_obj.c). Nothing here crosses
 * a process boundary: it is the library's private bookkeeping for one
 * connection.
 *
 * Concurrency (one mutex per handle, `lock`):
 *  - Requests carry req_ids. A caller registers a slot (its req_id, a
 *    reply buffer, a condvar) under the lock, sends without it, then
 *    waits. Whichever waiting thread finds the "reader" role free takes
 *    it, receives WITHOUT the lock, and under the lock hands each reply to
 *    its slot (copying it into the slot's buffer) until its own arrives;
 *    leaving, it passes the role to another waiting slot (leader/follower).
 *    A single-threaded caller therefore pays one send + one receive per
 *    call and no wake-up. No I/O that can block is ever done with the lock
 *    held, so a reader needing the lock never waits on a blocked sender.
 *  - Holds and segments below are touched only under the lock.
 *
 * GET replies are applied by the thread that receives them, in the order
 * they arrive:
 *  - The store's view of our segments changes with each reply it sends,
 *    in the order it sends them: it sends a segment's fd with the first
 *    reply naming it since we last held no reference to it, and later
 *    replies name it with SS_FD_NONE. Replies to different threads' GETs
 *    arrive in any order relative to the requests (a GET that waits is
 *    answered after later ones), and their owners wake in any order after
 *    that. So the segment cache must follow the socket, not the owners.
 *  - Only the reader receives, one message at a time, and it dispatches
 *    each reply (cl_dispatch) under the lock before it receives the next.
 *    For a GET reply, dispatch itself applies it (ss__cl_get_apply, with
 *    the request's ids and result arrays, ss__cl_getreq, which the owner
 *    left in its slot): segments inserted from the fds it carries (or the
 *    fds closed when the segment is still ours) and mapped, their refs and
 *    the holds taken, the views written to the owner's out[]; leftover fds
 *    closed; the GET taken out of gets_in_flight and deferred segments
 *    swept. Only then is the slot marked done and its owner woken: the
 *    owner reads its result (ss__cl_getreq.rc) and drops the references
 *    again if the batch failed. Other threads may take the lock between
 *    two dispatches, but every reply is applied before any later one is
 *    received, so an SS_FD_NONE always finds the segment an earlier fd
 *    made (or one the rule below kept).
 *  - The getreq and out[] live on the owner's stack: it cannot leave
 *    before its slot is done (or the connection is killed, which marks
 *    every slot done under the lock; no reply is dispatched to a done
 *    slot).
 *  - A reply that cannot be applied (malformed, or no memory for a
 *    segment or hold) kills the connection: the store's idea of what we
 *    hold and ours would differ from then on.
 *
 * Segment cache invariants (what keeps a view valid until its release):
 *  - a segment entry stays mapped while refs > 0 or unsent > 0;
 *  - the danger: the store names a segment with SS_FD_NONE while it holds
 *    a reference of ours on an object in it. Once it has read the RELEASE
 *    of our last one, it forgets that we have the segment, and any reply
 *    it builds from then on carries a new fd. A GET reply it built before
 *    may still be on its way (or, for a GET that waited, be built at any
 *    time before the store reads the RELEASE), naming the segment with
 *    SS_FD_NONE: the segment must stay until every such reply is applied;
 *  - the store reads a connection's requests in the order they entered
 *    the socket, RELEASE first within a datagram, and sends replies in the
 *    order it builds them (an outbox queues them when the socket is full);
 *    we apply replies in arrival order. So once a reply is applied whose
 *    request entered the socket after the RELEASE, every reply the store
 *    built before reading that RELEASE has been applied too;
 *  - request numbers: each request is numbered (slot.seq = ++req_seq)
 *    under the lock before its send starts. An OBJECT segment whose refs
 *    and unsent reach 0 is settled under the lock after its RELEASE's send
 *    returned: it is unmapped at once when no GET is in flight
 *    (gets_in_flight == 0: a GET sent from now on reaches the store after
 *    the RELEASE), else it goes on the deferred list with wait_seq =
 *    req_seq. A request numbered above wait_seq got its number after the
 *    RELEASE was in the socket, so its datagram entered the socket after
 *    the RELEASE. replied_seq is the highest number whose reply (of any
 *    type) has been dispatched; a sweep (after each dispatched reply and
 *    each ended GET) unmaps a deferred segment once replied_seq > wait_seq
 *    or no GET is in flight. A GET parked at the store for a long time
 *    (timeout -1) therefore pins nothing released after it: the next reply
 *    to any later request frees it. Until then a GET reply naming the
 *    segment (with or without an fd) revives it (refs > 0: it leaves the
 *    list at the next sweep); settling it again renews wait_seq;
 *  - a request whose send failed gets no reply, so it frees nothing; a
 *    RELEASE whose send failed is never counted as read: small-object ids
 *    go back to pend (cl_repend), and an OBJECT segment's ends the
 *    connection (ss__cl_finish_drop);
 *  - kept segments (SEALSTORE_MAP_CACHE): an OBJECT segment that settles
 *    unused while mapped read-only may stay mapped instead, on the kept
 *    list (an LRU of at most SS_CL_KEEP_MAX segments and keep_bytes bytes;
 *    wait_seq set as for deferring), so that a later get of its object
 *    maps nothing. The store has forgotten that we have it once it read
 *    the RELEASE, so its next reply naming the segment carries a new fd,
 *    which segref_take closes (the mapping is reused: seg ids are never
 *    reused, and a sealed segment's bytes never change, so the mapping
 *    shows exactly that object's bytes for as long as it lives). A reply
 *    naming it (with an fd or without: built before the RELEASE was read)
 *    takes it off the list before taking a reference (ss__cl_seg_use).
 *    Leaving the list unused (the bound, or ss__cl_forget when this handle
 *    learns the object is gone: its own delete, a GET entry not finding
 *    it or naming another segment for its id, contains answering 0) is a
 *    settle with the wait_seq it entered with: unmapped at once when no
 *    GET is in flight or a reply to a later request was dispatched, else
 *    deferred. Kept and deferred are exclusive. Everything here is under
 *    the handle's lock. Memory: a kept mapping keeps its memfd alive in
 *    the kernel; while the object lives the store counts it anyway, after
 *    another client deletes it (or the store spills or evicts it) this
 *    handle learns nothing until it asks: at most keep_bytes per handle
 *    are then held beyond the store's capacity, until the bound, the
 *    handle's next look at that id or its disconnect drops them. A
 *    segment larger than keep_bytes (a large object's, a large arena) is
 *    kept too when the shared index says an object a get found in it
 *    (probe) is sealed there now, so the store holds that memory anyway:
 *    such "live" kept segments count against capacity / 8 instead, and
 *    are checked again on every get that asks the store (a gone probe
 *    drops them). So a repeated get of a 1 GiB object maps nothing and is
 *    served from the index; after another client deleted it, at most
 *    capacity / 8 per handle is held until that handle's next get that
 *    asks the store, its disconnect or the bound;
 *  - SMALL segments stay mapped for the connection's lifetime, and so do
 *    STAGE areas (copy-on-seal creates): a staging area is this
 *    connection's scratch, which the store created, sealed SHRINK|GROW
 *    and lent us with a CREATE reply (its O_RDWR fd the first time). We
 *    map it read-write (MADV_DONTFORK under the fork guard, as an OBJECT
 *    creator's mapping) and write the object at its offset 0; the SEAL
 *    carries no bytes: the store copies the area into the object's arena
 *    place and publishes that. The area holds one creation at a time: the
 *    store lends it again only after it read the release of that object's
 *    last reference of ours, so the creator's *data (the area) stays
 *    valid, and equal to the sealed bytes, until its release. From the
 *    seal the library makes those pages PROT_READ, as for a small
 *    creation's private buffer, and the next create the area is lent for
 *    makes them writable again (create_staged; ro_len says how many). In
 *    trusted-producer mode the area holds the object itself until it is
 *    freed, so it is lent again only then. A get of the object returns
 *    the arena's view (trusted: its own read-only mapping of the area's
 *    memfd), never the creator's mapping of the area;
 *  - an entry holds an fd only while it is not mapped (a failed mmap is
 *    retried on the next use).
 *
 * Fork: a pthread_atfork child handler bumps a generation (inherited
 * handles answer -ENOTCONN without touching their lock or socket); every
 * writable shared mapping is made under a process-wide rwlock that fork
 * takes exclusively, so MADV_DONTFORK is always set before a fork can copy
 * the mapping (a writable copy in a child would make the seal EBUSY).
 */
#ifndef SEALSTORE_SRC_LIB_CLIENT_INT_H
#define SEALSTORE_SRC_LIB_CLIENT_INT_H

#include "internal.h"
#include "proto.h"
#include "segment.h"

#include <pthread.h>
#include <sys/uio.h>
#include <sys/un.h>

struct ss__store;

/* One segment this client maps (or holds an fd of). */
typedef struct ss__cl_seg {
    struct ss__cl_seg *next;  /* hash chain */
    struct ss__cl_seg *dnext; /* deferred list */
    uint64_t seg_id;
    uint64_t size;            /* mapping length: the whole segment */
    unsigned char *addr;      /* NULL while not mapped */
    int fd;                   /* read-only fd kept only while not mapped (STAGE: the
                                 area's fd, until a map of it succeeds), else -1 */
    uint8_t kind;             /* enum ss__seg_kind */
    bool deferred;            /* on the deferred list */
    bool writable;            /* the creator's RW mapping (MADV_DONTFORK), until seal */
    uint64_t ro_len;          /* STAGE: bytes from 0 made PROT_READ at a seal, to
                                 make writable when the area is lent again */
    void *park;               /* STAGE of 2 MiB or more: the reserved range right
                                 after addr its page tables move to at a seal
                                 (ss__cl_map_area), NULL: none */
    bool parked;              /* STAGE: they are there now (addr is read-only
                                 and empty) */
    bool nopark;              /* STAGE: moving them failed once: mprotect */
    uint32_t refs;            /* object references of this client using it */
    uint32_t unsent;          /* references dropped whose RELEASE is not sent yet */
    uint64_t wait_seq;        /* deferred or kept: req_seq when settled; freed once a
                                 reply to a request numbered above it is dispatched */
    bool kept;                /* unused, mapped, on the kept list (LRU) */
    struct ss__cl_seg *kprev, *knext; /* kept list, most recently used first */
    ss_id oid;                /* OBJECT: the one object in it (a kept one is dropped
                                 when the handle learns that object is gone) */
    ss_id probe;              /* an object a get found in it (has_probe): while the
                                 index says that object is sealed there, the store
                                 holds the segment anyway */
    bool has_probe;
    bool live;                /* kept beyond keep_bytes because probe was alive
                                 (counted in live_bytes, not kept_bytes) */
} ss__cl_seg;

/* The store's shared index as this handle maps it (client_index.c has the
 * protocol; everything here under the handle's lock). */
typedef struct ss__cl_index {
    const void **chunks;      /* read-only mappings of chunks 0..nchunks-1 */
    size_t cap;
    uint32_t nchunks;
    const void *buckets;      /* the newest bucket memfd we were given */
    size_t bucket_len;
    bool broken;              /* memfds failed the checks: never used again */
    uint64_t retry_ns;        /* an INDEX was refused: not asked again before */
} ss__cl_index;

/* This handle's pin area (PINS; the protocol is in store_int.h, "Pin
 * areas", and client_index.c): slots it writes to pin objects it took from
 * the index. Everything here under the handle's lock. */
typedef struct ss__cl_pins {
    void *map;                /* read-write mapping (MADV_DONTFORK), NULL: none */
    uint64_t *slots;          /* nslots slots after the 64-byte header */
    uint32_t *hw;             /* the header's hw word */
    uint32_t nslots, high;    /* slots; slots ever used (hw as we wrote it) */
    uint32_t *free;           /* stack of free slot numbers below high */
    uint32_t nfree;
    bool broken;              /* refused for good (or failed the checks) */
    uint64_t retry_ns;        /* refused with -EAGAIN: not asked again before */
} ss__cl_pins;

/* Kept segments a handle has at most (besides SEALSTORE_MAP_CACHE bytes). */
#define SS_CL_KEEP_MAX 16

enum ss__cl_state { SS_CL_UNSEALED = 1, SS_CL_SEALING, SS_CL_SEALED };

/*
 * References this client holds on one object. Several holds may share an
 * id (an object deleted while held and created again; a creator's private
 * small buffer beside a view from get). A view from get is identified by
 * (id, segment, offset); refs counts the references on it.
 *
 * Release order. A RELEASE names an id only: the store drops a reference
 * on the object with that id this client has held longest (its reference
 * records are ordered by their first reference, as holds are by seq). So a
 * hold's reference is sent only while it is the oldest sealed hold of its
 * id (ss__cl_release_hold); one the caller gives up on a younger hold
 * (ss_release_object, or a failed get's undo) is counted in owed, and
 * sent once every older hold of the id is gone. The oldest sealed hold of
 * an id therefore never has owed references, and ss_release(id) drops
 * its reference (new holds are the youngest; a creation sealed later is
 * older than nothing it could share an id with: while it was unsealed, no
 * get could return an object with its id).
 *
 * Local references (a get served by the client), only with
 * SEALSTORE_LOCAL_GETS on (local_gets, read at connect; off by default,
 * because such a get cannot see another client's delete, which the public
 * contract of ss_get promises by default). A get of an id this
 * client holds, through a sealed view a GET reply named (got), whose
 * caller still has a reference on it (refs > owed) and that is not known
 * deleted (!stale), takes a local reference instead of asking the store:
 * local++ on the youngest such hold, the same view returned (data and meta
 * mapped: the hold's store reference keeps them so). The store never
 * hears of it. A caller's references on one hold are interchangeable, so
 * giving one up (ss_release, ss_release_object, a failed get's undo)
 * takes a local one first when there is one (ss__cl_release_hold): no
 * message, no release-order question, as no store reference moves. Only
 * when local is 0 does a store reference go (sent, pended or owed as
 * above). So local > 0 implies refs > owed: the hold, its segments and
 * mappings stay while any local reference does, and the last reference
 * the caller gives up is a store reference, sent as before. Who writes:
 * local, got, uid and stale are read and written only under the handle's
 * lock, like the rest of the hold (ss_get's local pass, the GET reply's
 * apply, the release paths, ss_delete).
 *
 * What the store learns: the first reference (the GET that made the hold)
 * and the last release; a get racing with another thread's GET of the
 * same id may still take a second store reference (both went to the
 * store before either reply was applied): that is correct, only not
 * minimal. A local get cannot know that another client deleted the
 * object since (and created a new one with that id): like a get that
 * raced with the delete, it returns the object this client still holds.
 * What this client learns marks holds stale, and they are not served
 * locally again: its own ss_delete of the id (any answer but a
 * connection error: 0, -ENOENT, -EBUSY all say the held object is no
 * longer the id's sealed object), a GET entry naming another view for the
 * id, or not finding it, and ss_contains answering 0.
 */
typedef struct ss__cl_hold {
    struct ss__cl_hold *next; /* hash chain */
    ss_id id;
    uint64_t seq;             /* age: release drops the oldest sealed hold */
    uint32_t refs;            /* store references, owed included: the view stays
                                 mapped until they go */
    uint32_t owed;            /* released by the caller, not sent yet (release order) */
    uint32_t local;           /* caller references the store does not know of (local
                                 references, below); local > 0 implies refs > owed */
    uint32_t pins;            /* caller references backed by a pin (pin_slot) instead
                                 of store references: then refs, owed, local are 0 */
    uint32_t pin_slot, pin_e, pin_gen; /* the slot, and the entry and generation
                                 it names (SS_PIN_KEY) */
    uint32_t uid;             /* the creator's uid, as the store's GET reply gave it */
    bool got;                 /* a GET reply named this view: uid is known */
    bool stale;               /* the object is known deleted: never served locally */
    uint8_t state;            /* enum ss__cl_state */
    uint8_t kind;             /* creator: enum ss__seg_kind */
    bool creator;
    bool priv;                /* creator of a SMALL object: private buffer */
    uint8_t slab;             /* priv: 1 + the index of the slab buf is in
                                 (ss_client.slabs), 0: a mapping of its own */
    bool remapped;            /* creator OBJECT: RO mapping already in place */
    ss__cl_seg *seg;          /* data segment, NULL: private or zero-size */
    ss__cl_seg *mseg;         /* meta segment, NULL: no meta */
    uint64_t off, size;       /* data inside seg */
    uint64_t moff, msize;     /* meta inside mseg */
    void *buf;                /* priv: page-aligned anonymous buffer */
    size_t buf_len;
    int rw_fd, ro_fd;         /* creator OBJECT until seal, else -1 */
} ss__cl_hold;

/*
 * Slabs of small creations' private buffers. A small creation writes a
 * private buffer that the library makes PROT_READ when the SEAL is sent
 * (ss_create(3): *data is read-only after the seal). Every mprotect flushes
 * the TLB of each CPU running this process, which costs an interprocessor
 * interrupt when another thread (a busy-polling store or reader) runs
 * elsewhere: 20-30 us on a VM, more than a 64 KiB create's own work. So
 * buffers are cut, page-aligned, from a slab by a bump pointer, and a
 * released buffer is not made writable again: when the slab is used up and
 * none of its buffers is held any more, one mprotect makes the whole used
 * part writable and the pointer starts over. That is one mprotect per
 * creation (its seal) plus one per slab, not two per creation.
 *   live      buffers of the slab that holds still own (taken, not returned)
 *   used      bytes cut since the slab was last made writable; [base, used)
 *             may hold read-only pages, [used, len) is writable
 * Two slabs per handle, so a creation held for long (its view until its
 * release) does not stop the next ones: a new buffer comes from the
 * current slab, else from whichever slab has no live buffer (reset), else
 * from a mapping of its own (unmapped at its release). Lock held for all.
 */
#define SS_CL_SLABS 2
#define SS_CL_SLAB_BYTES (16u * SS_PROTO_MAX_INLINE) /* 1 MiB: 16 of the largest */

typedef struct ss__cl_slab {
    char *base;               /* NULL: not mapped yet */
    size_t used;
    uint32_t live;
} ss__cl_slab;

/* Pending small-object releases a handle can keep (ss_client.pend). */
#define SS_CL_PEND_MAX (2 * SS_PROTO_MAX_IDS)

/* Largest reply plus slack; SEQPACKET flags a longer one MSG_TRUNC. */
#define SS_CL_RXBUF (SS_PROTO_MAX_REPLY + 64)

/* A request waiting for its reply. Lives on the caller's stack. */
typedef struct ss__cl_slot {
    struct ss__cl_slot *next, *prev;
    uint32_t req_id;
    uint16_t type;
    bool done;                /* reply delivered (or err set) */
    bool waiting;             /* blocked on cond */
    int err;                  /* connection-level failure, else 0 */
    struct ss__cl_getreq *get; /* GET: applied at dispatch, else NULL */
    bool get_pending;         /* GET not applied yet: counted in gets_in_flight */
    uint64_t seq;             /* request number, given before the send (segment cache) */
    uint64_t work_ns;         /* the store's expected work before it answers (a copy):
                                 its reader spins through it (ss__spin_copy_ns) */
    pthread_cond_t cond;
    size_t len;
    unsigned nfds;
    int fds[SS_PROTO_MAX_FDS];
    _Alignas(16) unsigned char buf[SS_CL_RXBUF];
} ss__cl_slot;

struct ss_client {
    int fd;
    unsigned fork_gen;        /* g_fork_gen at connect: differs in a forked child */
    pthread_mutex_t lock;
    int dead;                 /* 0, or the -errno every call now returns */
    uint32_t next_req;
    ss__cl_slot *slots;       /* requests awaiting replies */
    bool reader;              /* a thread is receiving */
    uint32_t gets_in_flight;
    uint64_t req_seq;         /* last request number given */
    uint64_t replied_seq;     /* highest request number whose reply was dispatched */
    ss__cl_hold **holds;      /* hash by id */
    unsigned hold_bits;
    size_t nholds;
    uint64_t hold_seq;
    ss__cl_seg **segs;        /* hash by seg_id */
    unsigned seg_bits;
    size_t nsegs;
    ss__cl_seg *deferred;
    ss__cl_seg *kept_head, *kept_tail; /* kept segments, most recently used first */
    uint32_t nkept;
    uint64_t kept_bytes;
    uint64_t keep_bytes;      /* bound: SEALSTORE_MAP_CACHE, at most capacity / 8 */
    uint64_t live_bytes;      /* kept segments whose probe object was alive when
                                 kept (seg.live), bound: capacity / 8 */
    bool local_gets;          /* SEALSTORE_LOCAL_GETS: serve re-gets of held objects */
    bool no_remote;           /* the store refused to read our memory (PUTV -EPERM):
                                 large puts write their own segment from now on */
    unsigned inj_map_fail;    /* tests: the next this many staging-area maps fail with
                                 ENOMEM (lock held) */
    ss__cl_slab slabs[SS_CL_SLABS]; /* small creations' private buffers */
    uint8_t slab_cur;         /* the slab new buffers are cut from */
    ss__spin spin;            /* SEALSTORE_BUSY_POLL: the reader's spin before it
                                 blocks (internal.h; the reader's only) */
    uint64_t busy_spins;      /* receives that found nothing while spinning (the
                                 reader's only, like its receive; tests) */
    ss__cl_index ix;          /* the store's index, mapped at first use */
    ss__cl_pins pins;         /* this handle's pin area, made at the first get */
    bool index_gets;          /* SEALSTORE_INDEX_GETS: gets served from the index */
    uint64_t remote_gets;     /* GETs the store answered (the pin area is asked for
                                 once there was one) */
    /* Releases of small objects not sent yet: they leave with the next
     * request (in the same datagram, so the store wakes and reads once), or when 64
     * are waiting. A large object's release is sent at once: it frees a
     * whole segment. See ss_release(). Ids whose send failed come back
     * here (cl_repend), so there is room for more than 64; a sender takes
     * at most 64 at a time (the oldest). */
    ss_id pend[SS_CL_PEND_MAX];
    uint32_t npend;
    /* from the HELLO reply */
    uint64_t store_id;
    uint32_t client_id;
    uint32_t small_max;
    uint32_t max_msg;
    uint64_t capacity;
    struct ss__store *embedded; /* the store this handle started, or NULL */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

#define SS_CL_HDR sizeof(ss__msg_hdr)
#define SS_CL_MAX_IOV 4 /* iovecs in one request: header, body, meta, payload
                         * (a PUT_MANY has more: it never shares a datagram
                         * with a RELEASE, see cl_send_with_releases) */

/* How long a connect may wait on a full backlog, and a HELLO (or a
 * SUBSCRIBE) for its reply: a socket whose listener is not served (a dead
 * store whose listening fd survives in a forked child) must not hang the
 * caller. */
#define SS_CL_HELLO_TIMEOUT_MS 3000


/* Identity of one reference a get took, for undoing it exactly. */
typedef struct ss__cl_ref {
    uint64_t seg_id;          /* pinned: the entry */
    uint64_t off;             /* pinned: its generation */
    bool has_seg;
    bool found;
    bool pinned;              /* a pin reference (ss__cl_hold.pins) */
} ss__cl_ref;

/* A GET batch, for the thread that applies its reply (see above). */
typedef struct ss__cl_getreq {
    const ss_id *ids;         /* the request's ids */
    uint32_t n;
    ss_object *out;           /* [n] views, written when applied */
    ss__cl_ref *refs;         /* [n] references taken, for undoing them */
    int rc;                   /* found, or the apply's error */
} ss__cl_getreq;

/* data pointer of a zero-size object that names no segment */
extern const unsigned char ss__cl_empty[SS_OBJ_ALIGN];

/* ---- client.c: helpers */
int32_t ss__cl_node(void); /* NUMA node of the calling CPU, -1 unknown */
void ss__cl_close_fds(int *fds, unsigned n);
/* mmap(MAP_SHARED, RW) + MADV_DONTFORK with no fork in between: a
 * pointer or ss__err_ptr(-errno) */
void *ss__cl_map_writable(size_t len, int fd);
/*
 * A staging area's writable mapping (as ss__cl_map_writable). For one of a
 * whole number of 2 MiB (SS_CL_PARK_MIN) it is 2 MiB aligned, and *park is
 * set to a reserved range of the same size right after it (both
 * MADV_DONTFORK; unmapped together), else NULL.
 *
 * Why: a creation's pages turn read-only at its seal and writable when the
 * area is lent again. mprotect rewrites one page-table entry per 4 KiB
 * page: 0.6 ms writable and 1.8 ms read-only for 64 MiB on the 2-vCPU VM
 * this was measured on, against a 7-8 ms memset. Instead the seal moves
 * the area's page tables to the park (mremap with MREMAP_DONTUNMAP: whole
 * page-table pages move when both ranges are 2 MiB aligned, 30-40 us for
 * 64 MiB) and makes the emptied mapping read-only (no entry to change,
 * 4 us); reading *data after the seal faults pages in from the file. Lent
 * again, the tables move back over the read-only mapping (30 us) and the
 * pages are warm and writable, with no fault. The emptied mapping stays
 * writable for the few microseconds between the move and the mprotect.
 * A kernel that refuses the move (before 5.13, or hugetlb) gets mprotect.
 */
void *ss__cl_map_area(size_t len, int fd, void **park);
/* A staging area's pages writable again for the next creation lent it
 * (from a park, or after an mprotect): 0 or -errno. */
int ss__cl_area_writable(ss__cl_seg *sg);
#define SS_CL_PARK_MIN (2u << 20)
/* Wait up to SS_CL_HELLO_TIMEOUT_MS for a message on fd: 0, -ETIMEDOUT or
 * -errno (a signal restarts the wait) */
int ss__cl_wait_reply(int fd);

/* ---- client.c: segment cache and holds (lock held) */
ss__cl_seg *ss__cl_seg_find(ss_client *c, uint64_t seg_id);
ss__cl_seg *ss__cl_seg_insert(ss_client *c, uint64_t seg_id, uint64_t size, uint8_t kind);
/* SMALL segments and STAGE areas stay mapped for the connection. */
static inline bool ss__cl_seg_stays(const ss__cl_seg *s)
{
    return s->kind == SS_SEG_SMALL || s->kind == SS_SEG_STAGE;
}
/* A staged creation's bytes read-only (from its seal) or writable (at its
 * release): client_obj.c. */
void ss__cl_stage_protect(ss__cl_hold *h, int prot);
void ss__cl_seg_unlink(ss_client *c, ss__cl_seg *s);
void ss__cl_seg_free(ss__cl_seg *s, bool forked);
int ss__cl_seg_map(ss__cl_seg *s);
/* s lost a reference (refs and unsent as they are now): unmap, defer,
 * keep, as the rules above say (lock held). */
void ss__cl_seg_settle(ss_client *c, ss__cl_seg *s);
void ss__cl_seg_sweep(ss_client *c);
ss__cl_hold *ss__cl_hold_new(ss_client *c, const ss_id *id);
void ss__cl_hold_unlink(ss_client *c, ss__cl_hold *h);
void ss__cl_hold_free(ss__cl_hold *h, bool forked);
int ss__cl_buf_take(ss_client *c, size_t len, ss__cl_hold *h);
void ss__cl_buf_return(ss_client *c, ss__cl_hold *h);
ss__cl_hold *ss__cl_hold_find_creating(ss_client *c, const ss_id *id);
/* The oldest sealed hold of id (store: only those with store
 * references, for release order), see client.c. */
ss__cl_hold *ss__cl_hold_pick_release(ss_client *c, const ss_id *id, int *err, bool store);
ss__cl_hold *ss__cl_hold_find_view(ss_client *c, const ss_id *id, bool has_seg,
                                   uint64_t seg_id, uint64_t off);
ss__cl_hold *ss__cl_hold_find_addr(ss_client *c, const ss_id *id, const void *data);
/* The hold a get of id may be served from locally (client_int.h, local
 * references), or NULL. */
ss__cl_hold *ss__cl_hold_find_local(ss_client *c, const ss_id *id);
/* This handle learned that id's sealed object is not one it holds (or
 * only keep's, which may be NULL): mark every other sealed hold of id
 * stale, and drop kept segments of id but keep's. */
void ss__cl_forget(ss_client *c, const ss_id *id, const ss__cl_hold *keep);
/* A reference is about to be taken on s: off the kept list. */
void ss__cl_seg_use(ss_client *c, ss__cl_seg *s);

/* ---- client.c: requests */
int ss__cl_enter(ss_client *c); /* -EINVAL (NULL), -ENOTCONN (forked child), 0 */
void ss__cl_kill(ss_client *c, int err);
int ss__cl_sendv(int fd, struct iovec *iov, int iovcnt);
int ss__cl_recv(int fd, ss__cl_slot *s, int flags);
/* Send (iov[0] = header, filled here) and wait; returns with the lock
 * HELD: 0 and the reply in s, or a connection error. Finish with
 * ss__cl_end() (or ss__cl_slot_end() + unlock + close s->fds). */
int ss__cl_call(ss_client *c, ss__cl_slot *s, uint16_t type, struct iovec *iov, int iovcnt,
                ss__cl_getreq *get);
/* ss__cl_call of a request the store answers after about work_ns of work
 * (its reader spins through it); sent(arg), if not NULL, runs once the
 * request is sent, before the wait, without the lock: the caller's own
 * work that may overlap the store's. */
int ss__cl_call_work(ss_client *c, ss__cl_slot *s, uint16_t type, struct iovec *iov,
                     int iovcnt, uint64_t work_ns, void (*sent)(void *arg), void *arg);
void ss__cl_slot_end(ss_client *c, ss__cl_slot *s);
void ss__cl_end(ss_client *c, ss__cl_slot *s);
int32_t ss__cl_status(const ss__cl_slot *s);
int ss__cl_simple(ss_client *c, uint16_t type, const ss_id *id);
int ss__cl_open(const char *path, int *fdp, ss__rep_hello *hello);

/* ---- client_index.c: the shared index (lock NOT held) */
/* 1: a sealed object with this id is in the store's index now (no round
 * trip); 0: ask the store (a miss, or the index is not usable). */
int ss__cl_index_contains(ss_client *c, const ss_id *id);
/* Does the index say id is sealed now, in segment seg_id? (lock held) */
bool ss__cl_index_alive(ss_client *c, const ss_id *id, uint64_t seg_id);
/* Drop live kept segments whose probe the index no longer shows alive
 * (lock held). */
void ss__cl_kept_check_live(ss_client *c);
/* Unmap everything (ss_disconnect; forked: the pin area is not there). */
void ss__cl_index_free(ss_client *c, bool forked);
/* Map the index and get a pin area if this handle has none yet and may
 * ask (lock NOT held): after it, gets may be served from the index. */
void ss__cl_pins_setup(ss_client *c);
/* Serve a get of id from the index (lock held): a pinned sealed object
 * whose segments are mapped here; its view in *o and the reference in
 * *ref. false: ask the store. */
bool ss__cl_index_get(ss_client *c, const ss_id *id, ss__cl_ref *ref, ss_object *o);
/* Give up one pin reference of h (lock held): at the last, the pin goes,
 * the segments are settled and the hold freed; may unlock around an UNPIN
 * send, after which h is gone. */
void ss__cl_unpin(ss_client *c, ss__cl_hold *h);
/* The caller's view of a sealed hold h (client_obj.c). */
void ss__cl_hold_view(const ss__cl_hold *h, ss_object *o);
/* The pinned hold of id for entry e, generation gen, or NULL. */
ss__cl_hold *ss__cl_hold_find_pinned(ss_client *c, const ss_id *id, uint32_t e, uint32_t gen);

/* ---- client_obj.c: a GET reply applied by the thread that received it
 * (lock held) */
int ss__cl_get_apply(ss_client *c, ss__cl_slot *s, const ss__cl_getreq *g);

/* ---- client.c: dropping references (lock held; finish_drop unlocks
 * around the RELEASE send, then settles the segments) */
void ss__cl_drop_one(ss_client *c, ss__cl_hold *h, ss_id *ids, size_t *nids,
                     ss__cl_seg **segs, size_t *nsegs);
void ss__cl_defer_drop(ss_client *c, const ss_id *id, ss__cl_seg **segs, size_t nsegs);
/* Send every pending small-object release now, in RELEASE messages of
 * their own (a call that sends no request: ss_contains answered from the
 * index, ss_disconnect). Lock held; unlocks around the sends. */
void ss__cl_send_pend(ss_client *c);
int ss__cl_finish_drop(ss_client *c, const ss_id *ids, size_t nids, ss__cl_seg **segs,
                       size_t nsegs);
void ss__cl_drop_refs(ss_client *c, const ss_id *ids, const ss__cl_ref *refs, size_t n);
/* Give up one reference of the sealed hold h: a local one if it has any
 * (nothing sent), else in release order (above):
 * sent now if h is the oldest of its id (then the owed ones of the holds
 * that become the oldest), else owed. Lock held; may unlock around sends,
 * after which h may be gone. */
void ss__cl_release_hold(ss_client *c, ss__cl_hold *h);

/* References a batch release (ss_release_many) drops, gathered so that
 * they leave in as few RELEASE messages as possible: the batch is sent
 * when it holds SS_PROTO_MAX_IDS ids, and at its end. At the end, a batch
 * that names an OBJECT segment is sent at once with pending small
 * releases ahead of it in the same message (room permitting); one of
 * small objects only joins the pending releases instead, all at once, as
 * ss_release's would (they ride with the next call; 64 pending are sent).
 * The ids leave in the order ss_release would have sent them in, and
 * none is held back while the lock is dropped (a send): another thread's
 * release of the same id can never overtake one of ours (a RELEASE names
 * an id, and the store drops the oldest reference of it). Lives on the
 * caller's stack; lock held throughout, except around sends. */
typedef struct ss__cl_batch {
    ss_id ids[SS_PROTO_MAX_IDS];
    ss__cl_seg *segs[2 * SS_PROTO_MAX_IDS]; /* the ids' segments (unsent counted) */
    size_t nids, nsegs;
    bool object;                            /* some id's segment is an OBJECT's */
} ss__cl_batch;

/* ss__cl_release_hold, the reference going into b (NULL: sent as usual). */
void ss__cl_release_hold_into(ss_client *c, ss__cl_hold *h, ss__cl_batch *b);
/* Send what b holds (see above); b is empty after. */
void ss__cl_batch_end(ss_client *c, ss__cl_batch *b);

#endif /* SEALSTORE_SRC_LIB_CLIENT_INT_H */
