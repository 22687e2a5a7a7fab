/* SPDX-License-Identifier: MIT */
/*
 * sealstore: a node-local shared-memory object store on sealed memfds.
 *
 * This is the only installed header. Conventions for every call below:
 *  - a call that can fail returns >= 0 on success and a negative errno on
 *    failure (liburing style); sealstore's own conditions use the codes
 *    SS_E_* below, outside the kernel's -1..-4095 range;
 *  - ss_strerror() turns any return value into a message;
 *  - the library never prints to stdout, never exits and never aborts
 *    because its caller made a mistake; log lines go to the sink set with
 *    ss_log_set_sink() (stderr by default, filtered by SEALSTORE_LOG);
 *  - errors every call on a handle can return, besides its own: -EINVAL
 *    (NULL handle or pointer); -ENOTCONN (the handle was inherited through
 *    fork(): it belongs to the parent); once the connection has ended (the
 *    store died or went away, or sent a malformed reply), the error it
 *    ended with, from then on: -ECONNRESET or -EPIPE, -SS_E_PROTO;
 *    -ENOMEM.
 *
 * A sealed object never changes: no process, whatever its uid, can write it
 * or map it writable, root excepted, who can write any process's memory
 * (the store's own mapping of small objects is writable only while it
 * writes them, for at most 20 ms after its last write).
 */
#ifndef SEALSTORE_H
#define SEALSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SS_API __attribute__((visibility("default")))
#define SS_NODISCARD __attribute__((warn_unused_result))
#else
#define SS_API
#define SS_NODISCARD
#endif

/* ---------------------------------------------------------------- version */

#define SS_VERSION_MAJOR 0
#define SS_VERSION_MINOR 1
#define SS_VERSION_PATCH 0

/* The library's version at run time, as "MAJOR.MINOR.PATCH". Static storage. */
SS_API const char *ss_version(void);

/* ----------------------------------------------------------------- errors */

/*
 * sealstore's own error codes. Returned negated, like errno values
 * (e.g. `return -SS_E_VERSION;`). They sit far outside -1..-4095 so that
 * liburing-style IS_ERR tests and strerror() never confuse them.
 */
enum ss_error {
    SS_E_BASE = 30800,
    SS_E_VERSION = SS_E_BASE, /* shared-memory layout or protocol version mismatch */
    SS_E_PROTO,               /* malformed message from the peer */
    SS_E_SEALS,               /* a segment's seals are not what they must be */
    SS_E_CORRUPT,             /* internal invariant broken (a bug, reported) */
    SS_E_NOBACKING,           /* the required memory backing cannot be had */
    SS_E_FULL,                /* memory is full and spilling cannot make room
                               * (spill space exhausted, or the disk failing):
                               * a get of a spilled object gives up at its
                               * own timeout */
    SS_E_LAST                 /* sentinel: one past the last code */
};

/*
 * Message for any return value: 0 and positive values give "success",
 * -errno gives the C library's text, -SS_E_* gives sealstore's text, and
 * anything else "unknown error". Never NULL; static storage, thread-safe.
 */
SS_API const char *ss_strerror(int err);

/* ---------------------------------------------------------------- objects */

#define SS_ID_SIZE 20 /* same width as Plasma/Ray ids */
typedef struct ss_id { unsigned char b[SS_ID_SIZE]; } ss_id;

/* Opaque connection handle. One handle may be used by several threads at
 * once; a thread blocked in ss_get() does not hold up the others. */
typedef struct ss_client ss_client;

/*
 * Who created an object. The store records the user id of the client that
 * created each object (its SO_PEERCRED credentials at connect: the
 * effective uid, which the client cannot forge) and keeps it for the
 * object's life, across spilling to disk and store restarts. SS_UID_UNKNOWN
 * means the store does not know it (an object restored from a spill file
 * written before creators were recorded).
 *
 * Trust: everyone who may connect to a store (its owner and the members of
 * SEALSTORE_SOCKET_GROUP) may create objects, so the bytes of an object are
 * exactly as trustworthy as its creator. A reader that interprets them in
 * a way that can run code (Python's pickle, for one) must check the uid
 * first; the Python module refuses pickled objects of other users unless
 * told to trust them.
 */
#define SS_UID_UNKNOWN 0xffffffffu

/* A read-only view of a sealed object. The memory belongs to the store and
 * stays valid until the matching ss_release() or ss_disconnect(), even if
 * the object is deleted meanwhile or the store dies. Writing through it
 * faults (SIGSEGV). */
typedef struct ss_object {
    ss_id id;
    uint32_t uid;       /* creator's user id, or SS_UID_UNKNOWN (also when not found) */
    const void *data;   /* NULL only when the object was not found */
    uint64_t size;
    const void *meta;   /* NULL when meta_size is 0 */
    uint64_t meta_size;
} ss_object;

/* ss_connect() flags */
#define SS_CONNECT_EMBED (1u << 0) /* start a store in this process if none answers */

/*
 * Connect to a store. socket_path NULL means $SEALSTORE_SOCKET, else
 * $XDG_RUNTIME_DIR/sealstore.sock, else sealstore.sock in a per-user 0700
 * directory under /tmp. With SS_CONNECT_EMBED, if no live store answers
 * there, start one inside this process (a thread) serving that path; it
 * lives until this client disconnects or the process exits.
 * [out] *out: the handle, only on success.
 * Returns 0; -EINVAL (unknown flag bits, NULL out, empty path or one too
 * long for a Unix socket); -ECONNREFUSED or -ENOENT (no store and no
 * EMBED); -SS_E_VERSION (the store speaks another protocol version: it
 * answered the hello in its own version, or refused it with this code);
 * -ECONNRESET (the store closed the connection at the hello: also how a
 * store of protocol version 3 or older refuses one of another version,
 * since only later stores answer before closing); -EACCES (the
 * socket's mode or group, or a default socket directory that is not this
 * user's); -ETIMEDOUT (the socket accepted but the store did not answer
 * the hello within 3 s); -ENOMEM. With SS_CONNECT_EMBED, also any error of
 * starting a store (-SS_E_NOBACKING, -EINVAL for options that do not fit
 * together, ...: the log says why).
 */
SS_API SS_NODISCARD int ss_connect(const char *socket_path, unsigned flags, ss_client **out);

/* Drop every reference and unsealed object of this client, unmap, close.
 * Views obtained through this handle become invalid. NULL is a no-op.
 * Must not race with other calls on the same handle. */
SS_API void ss_disconnect(ss_client *c);

/*
 * Reserve an object of `size` bytes (0 allowed). *data is writable, 64-byte
 * aligned, visible to no other client until sealed. `meta` is copied (at
 * most 64 KiB). Takes one reference.
 * Above SEALSTORE_SMALL_MAX up to SEALSTORE_STAGE_MAX, *data points into
 * a warm staging area of this client's, and the seal copies the bytes into
 * the store's write-once memory (one copy, no page faults); larger objects
 * are written in place in a segment of their own. A store in
 * trusted-producer mode (SEALSTORE_TRUST_PRODUCERS) copies nothing: the
 * area holds the object until it is freed, readers map it read-only, and
 * *data is read-only from the seal on, but this client could make it
 * writable again (README, Guarantees).
 * Returns 0; -EEXIST (id exists, sealed, spilled or being created);
 * -ENOSPC (does not fit within SEALSTORE_CREATE_TIMEOUT; at once when
 * `size` exceeds the store's capacity, when the create timeout is 0, or
 * when this client already has 1024 requests waiting in the store);
 * -ENOBUFS (it would have to wait for memory, and the requests waiting in
 * the store already hold this client's or the store's quota of its
 * memory: see README); -SS_E_NOBACKING (an explicit SEALSTORE_HUGEPAGES
 * backing ran out); -EINVAL (NULL id or data, meta over 64 KiB, NULL meta
 * with meta_size > 0); -ENOMEM, -EMFILE and other -errno of the store or
 * of mapping the segment here; the errors every call can return (above).
 */
SS_API SS_NODISCARD int ss_create(ss_client *c, const ss_id *id, uint64_t size,
                                  const void *meta, uint64_t meta_size, void **data);

/*
 * Lifetime flags of ss_create_ex() and ss_put_ex().
 * SS_LIFETIME_CREATOR binds the object to this connection: when it ends
 * (ss_disconnect(), exit, crash, SIGKILL) the store deletes the object as
 * ss_delete() would: its id is free at once (it can be created again),
 * other clients' views stay valid and readable until they release them,
 * and its memory is freed with the last release. An object that was
 * spilled goes from the disk too, durably, and one found on disk when a
 * store starts (its creator is gone by definition) is deleted, never
 * restored. Only the connection that created it counts: another client
 * holding a reference does not keep it alive past that, and deleting it
 * earlier works as for any object. Without the flag (ss_create(),
 * ss_put()) an object lives until it is deleted (or evicted).
 */
#define SS_LIFETIME_CREATOR (1u << 0)

/* ss_create() with lifetime flags (0 or SS_LIFETIME_CREATOR); -EINVAL for
 * unknown bits, otherwise as ss_create(). */
SS_API SS_NODISCARD int ss_create_ex(ss_client *c, const ss_id *id, uint64_t size,
                                     const void *meta, uint64_t meta_size, unsigned flags,
                                     void **data);

/*
 * Make the object immutable and visible; wake waiting gets. The creator
 * keeps its reference (release it). For an object written in place in its
 * own segment, or staged, *data becomes a read-only view (of the sealed
 * bytes) until released.
 * Returns 0, or an error after which the object is either still unsealed
 * (seal it again or abort it) or aborted (gone from the store and from
 * this client alike: its id is free, and ss_seal() and ss_abort() of it
 * return -ENOENT). Still unsealed: -ENOENT (this client has no unsealed
 * object with that id); -EBUSY (a writable mapping or pinned pages still
 * exist somewhere, or another thread of this client is sealing, putting
 * or aborting it); -EINVAL (NULL id); -ENOMEM (the store could not take
 * the seal on). Aborted: -EPERM (its seals were not exactly the ones
 * required, i.e. tampered with); another -errno from the kernel while
 * sealing (e.g. -ENOSPC, -ENOMEM or -EIO when filling holes on an
 * exhausted hugetlb pool). So after a failure ss_abort() leaves nothing
 * behind either way (0, or -ENOENT: already aborted), and a caller that
 * would retry after an -ENOMEM learns from the retry's -ENOENT that the
 * object was aborted. Also the errors every call can return (above).
 */
SS_API SS_NODISCARD int ss_seal(ss_client *c, const ss_id *id);

/* Discard an unsealed object of this client. 0; -ENOENT (this client has
 * no unsealed object with that id); -EBUSY (a seal, put or abort of it is
 * under way in another thread, or its seal is still with the store: the
 * object is not discarded); -EINVAL (NULL id); the errors every call can
 * return (above): when the connection has ended, the object is dropped
 * here all the same (the store dropped it already) and that error is
 * returned. */
SS_API SS_NODISCARD int ss_abort(ss_client *c, const ss_id *id);

/* create + copy + seal + release in one call (one round trip for objects
 * up to SEALSTORE_SMALL_MAX). Keeps no reference: the reference the put
 * took is dropped with the seal, exactly that one, so a view this client
 * still holds of an older (deleted) object with the same id stays valid.
 * Errors as ss_create() and ss_seal() (an object that could not be filled
 * or sealed is aborted), and -EINVAL for NULL data with size > 0. */
SS_API SS_NODISCARD int ss_put(ss_client *c, const ss_id *id, const void *data,
                               uint64_t size, const void *meta, uint64_t meta_size);

/* ss_put() with lifetime flags (0 or SS_LIFETIME_CREATOR, see
 * ss_create_ex()); -EINVAL for unknown bits, otherwise as ss_put(). */
SS_API SS_NODISCARD int ss_put_ex(ss_client *c, const ss_id *id, const void *data,
                                  uint64_t size, const void *meta, uint64_t meta_size,
                                  unsigned flags);

/* Most buffers one ss_putv() takes (IOV_MAX on Linux). */
#define SS_IOV_MAX 1024

/*
 * ss_put_ex() of the concatenation of iovcnt buffers, in order (a
 * scatter-gather put: e.g. a pickle-5 stream and its out-of-band
 * buffers in one object, with no copy into one buffer first). The
 * object's size is the sum of the lengths; zero-length buffers (with any
 * base) are skipped. The library and the store read the buffers during
 * the call only, and nothing else: the caller must not change them
 * meanwhile (another thread writing them makes the object's bytes
 * whatever was read, never anything outside the buffers). Keeps no
 * reference. Errors as ss_put_ex(), and -EINVAL for NULL c or id, iovcnt
 * below 0 or above SS_IOV_MAX, NULL iov with iovcnt > 0, a NULL base
 * with a length above 0, or lengths summing past SIZE_MAX / 2; -EFAULT
 * when a buffer is not readable memory of the caller, as the kernel finds
 * it (the store's read of it, or the library's sendmsg or pwritev): the
 * object is not stored. Where the library copies a buffer itself (many
 * small pieces gathered, or a staging area when the store may not read
 * this process), a bad buffer faults in the caller as memcpy would.
 */
SS_API SS_NODISCARD int ss_putv(ss_client *c, const ss_id *id, const struct iovec *iov,
                                int iovcnt, const void *meta, uint64_t meta_size,
                                unsigned flags);

/* One object of ss_put_many(): the arguments of ss_put_ex(). The library
 * reads data[0..size) and meta[0..meta_size) during the call only. */
typedef struct ss_put_item {
    ss_id id;
    const void *data;
    uint64_t size;
    const void *meta;
    uint64_t meta_size;
    unsigned flags; /* 0 or SS_LIFETIME_CREATOR */
} ss_put_item;

/*
 * Put n objects, each as ss_put_ex(&items[i].id, ...) would, in order,
 * in as few round trips as the store's message size allows: the small
 * ones (up to SEALSTORE_SMALL_MAX) travel many to a message, straight
 * from the callers' buffers, and the store answers each message once;
 * a larger one is put on its own, the way ss_put_ex() puts it, between
 * the small ones before and after it. Keeps no reference.
 * status[i] gets item i's result: 0 (stored), or its error as
 * ss_put_ex() would return it: -EEXIST (the id exists, also when an
 * earlier item of the same call stored it), -ENOSPC (it does not fit
 * once the store reclaimed what it can: a small item gets it at once,
 * without waiting SEALSTORE_CREATE_TIMEOUT as a lone ss_put() does, so a
 * batch that runs out of room stores what fits and reports the rest),
 * -EINVAL (NULL data with size > 0, meta over 64 KiB or NULL with
 * meta_size > 0, unknown flags), -ENOMEM. Items are independent: one's
 * failure never undoes or skips another (with SEALSTORE_EVICT, making
 * room for a later item may evict an earlier one, as any put may). When the connection ends
 * during the call, the items it could not answer get the connection's
 * error (an item of a message whose answer was lost may still have been
 * stored: check with ss_contains()).
 * Returns how many items were stored (status[i] == 0), 0 for n == 0, or
 * -EINVAL (NULL c, or NULL items or status with n > 0, n > INT_MAX),
 * -ENOMEM, -ENOTCONN (forked child) with no item tried.
 * Thread-safe like every call on a handle.
 */
SS_API SS_NODISCARD int ss_put_many(ss_client *c, const ss_put_item *items, size_t n,
                                    int *status);

/*
 * For each of the n ids fill out[i] with a read-only view, waiting until all
 * are sealed or timeout_ms passes (-1 forever, 0 no wait). Returns how many
 * were found; a missing one has out[i].data == NULL. Each found entry takes
 * one reference (an id listed twice takes two). A zero-size object's data
 * is non-NULL but must not be dereferenced. out[i].uid says who created
 * the object: check it before trusting the bytes (see SS_UID_UNKNOWN).
 * Every get asks the store, so a get after any client's ss_delete() of
 * the id does not find the deleted object. With SEALSTORE_LOCAL_GETS on
 * (off by default; read at connect), a get of an id this handle holds (a
 * sealed object it got and has not released) is answered here without
 * asking the store: another reference on the held object, the same view;
 * the store hears of the first reference and the last release only. Such
 * a get returns the held object even if another client deleted it since
 * (as a get just before the delete would); a delete of the id through
 * this handle, or a get or ss_contains() through it that no longer finds
 * that object, ends this.
 * A spilled object is found and
 * brought back into memory: that may take longer than timeout_ms (up to
 * SEALSTORE_CREATE_TIMEOUT, as memory for it may have to be freed, then
 * -ENOSPC), except when memory is full and spilling cannot make room (spill
 * space exhausted): then the call fails at timeout_ms with -SS_E_FULL (or
 * the spill disk's error, e.g. -EIO). On a negative return (-EINVAL for
 * timeout below -1 or NULL arrays, connection errors, those) out is
 * untouched and no reference is taken. Waiting gets are held by the store
 * and charged to this client: -ENOBUFS when a get that would wait finds
 * this client's or the store's quota for them used up, -EAGAIN when this
 * client already has 1024 requests waiting (neither takes a reference;
 * retry once earlier gets completed). -ENOMEM, and the errors every call
 * can return (above).
 * A store that has just started on a spill directory with objects in it
 * first finds them (SS_SPILL_MODE_SCANNING in ss_stats): a get waits for
 * that too, at most timeout_ms, then answers from what it has found;
 * create, put, contains, delete and list wait for it to end.
 */
SS_API SS_NODISCARD int ss_get(ss_client *c, const ss_id *ids, size_t n,
                               int64_t timeout_ms, ss_object *out);

/* Drop one reference taken by create or get; needs no reply from the store.
 * The view is invalid once this returns. When this client holds several
 * sealed objects with this id (one deleted while held, and the one
 * created since with the same id), it drops a reference on the one it has
 * held longest: the one whose oldest reference still held was taken first,
 * by get or by create; so views of a deleted object go before any of its
 * successor's. Views of one object share its references: which of them
 * the caller stops using is its own choice. A release while the handle
 * still holds the object by another reference sends nothing; the last one
 * goes to the store. A large object's release is sent
 * at once (its segment is unmapped and can be freed); a small object's
 * (up to SEALSTORE_SMALL_MAX) travels with this handle's next call, in the
 * same system call, or once 64 are waiting, or at disconnect: so the store
 * wakes once per get + release, and such an object stays referenced until
 * then. 0; -ENOENT if this client holds none; -EBUSY for an unsealed object
 * it created; -EINVAL (NULL id); -ENOTCONN in a forked child. Works, and
 * unmaps, after the store has died (returns 0). */
SS_API int ss_release(ss_client *c, const ss_id *id);

/* Drop one reference of the very object a view came from: o as ss_get()
 * filled it (id and data are used), or {id, data} of an object this
 * client created and sealed, data as ss_create() gave it. Where
 * ss_release() would pick the object held longest, this one names it: use
 * it when views of several objects with one id (one deleted since) may be
 * alive and are released in any order. The view is invalid once this
 * returns. While an older object with that id is still held, the store
 * keeps this one referenced (and its memory mapped here) until that one
 * is released too. Small objects' releases wait for the next call as with
 * ss_release(). 0; -EINVAL (NULL o or data); -ENOENT (no reference of
 * this client starts at data); -EBUSY (an unsealed object it created);
 * -ENOTCONN in a forked child. Works after the store has died. */
SS_API int ss_release_object(ss_client *c, const ss_object *o);

/*
 * Release many references at once: ss_release(c, &ids[i]) for each i in
 * order (an id listed twice drops two references; several objects with
 * one id go oldest first), with the store's share of the work in as few
 * messages as possible: the references that must be sent (the last one
 * this handle holds on an object) leave together, up to 64 ids a message,
 * at once when one of them is a large object's (pending small releases
 * join that message), else with this handle's next call as ss_release()
 * would send them. An id this client holds no sealed object of (-ENOENT
 * for ss_release) or only its own unsealed creation (-EBUSY) is skipped:
 * it does not stop or undo the others. Returns how many references were
 * dropped (n when every id was held; fewer means some were skipped:
 * release those one by one to learn why), 0 for n == 0; -EINVAL (NULL c,
 * NULL ids with n > 0, n > INT_MAX); -ENOTCONN in a forked child (none
 * dropped). Works, and unmaps, after the store has died.
 */
SS_API int ss_release_many(ss_client *c, const ss_id *ids, size_t n);

/* ss_release_object() for each of objs[0..n), in order, sent as
 * ss_release_many() sends: the same batching, skipping and result (an
 * entry skipped is one ss_release_object() would answer -ENOENT, -EBUSY
 * or -EINVAL for a NULL data). */
SS_API int ss_release_objects(ss_client *c, const ss_object *objs, size_t n);

/* 1 if a sealed object with that id exists (in memory or spilled to disk),
 * 0 if not; -EINVAL (NULL id); the errors every call can return (above).
 * A sealed object in memory is found in the store's index, which the
 * handle maps read-only at its first ss_contains() (one request), with no
 * round trip; anything else asks the store. Either way a 1 is never an
 * object whose ss_delete() returned before this call began, and a 0 is
 * never an object sealed before it began and not deleted since. Pending
 * small-object releases (ss_release) are sent by either. After a store
 * crash (not a stop), an object sealed when it died may still be found
 * until a call of this handle that talks to the store fails. */
SS_API SS_NODISCARD int ss_contains(ss_client *c, const ss_id *id);

/* Delete a sealed object: contains says 0 from now on and the id may be
 * created again; memory is freed when the last reference goes. If the
 * object has a copy in the spill directory, the call returns once that
 * copy is durably gone (unlinked or tombstoned on disk, the sync shared
 * with concurrent deletes), and so is any older copy of the same id still
 * on its way out (an evicted one, or one a restart found twice), so no
 * crash of the store can bring back an object whose delete returned 0;
 * deleting an object that never reached the disk, with no such older copy,
 * needs no I/O.
 * 0, -ENOENT (absent), -EBUSY (not sealed yet); -EIO or another -errno
 * (rare: the object is deleted, but removing its disk copy failed and it
 * may reappear after a restart); -ETIMEDOUT (the store stopped before the
 * disk finished: the same caveat); -ENOMEM; -EINVAL (NULL id); the errors
 * every call can return (above). */
SS_API SS_NODISCARD int ss_delete(ss_client *c, const ss_id *id);

/* Object states, as ss_list() reports them. */
enum ss_obj_state { SS_OBJ_CREATED = 1, SS_OBJ_SEALED = 2 };

/* One object as ss_list() reports it. */
typedef struct ss_obj_info {
    ss_id id;
    uint32_t state;      /* enum ss_obj_state */
    uint64_t size;
    uint64_t meta_size;
    uint32_t refs;       /* references held by all clients (a client's gets
                            served from the index count once per client) */
    int32_t node;        /* NUMA node, -1 unknown or interleaved */
    char backing[8];     /* "4K", "THP", "2M", "1G", "small", "disk" */
    uint32_t uid;        /* creator's user id, or SS_UID_UNKNOWN (see ss_object) */
    uint32_t flags;      /* SS_LIFETIME_CREATOR: deleted when its creator's
                            connection ends (ss_create_ex); no other bits yet */
} ss_obj_info;

/*
 * List objects, `max` at a time (at most 256 per call, whatever max is).
 * *cursor is 0 to start and is updated; 0 after the call means the listing
 * is complete. Returns how many entries were written to out (0..max) or
 * -errno: -EINVAL (NULL cursor, NULL out with max > 0), the errors every
 * call can return (above). The store looks at a bounded part of its table
 * per call, so a call may return 0 with a non-zero cursor: loop on the
 * cursor, not on the count. Objects created or deleted during the walk
 * may or may not appear. Spilled objects are listed as sealed, backing
 * "disk".
 */
SS_API SS_NODISCARD int ss_list(ss_client *c, uint64_t *cursor, ss_obj_info *out, size_t max);

/* ------------------------------------------------------------------ stats */

#define SS_STATS_VERSION 1

/* Store-wide counters. Set `size = sizeof(ss_stats)` and `version =
 * SS_STATS_VERSION` before calling ss_stats_get(). */
typedef struct ss_stats {
    uint32_t size;
    uint32_t version;
    uint64_t capacity;            /* bytes */
    uint64_t resident_bytes;      /* what the kernel holds for the store, pool included */
    uint64_t objects;             /* sealed + being created */
    uint64_t sealed_objects;
    uint64_t object_bytes;        /* sum of object sizes */
    uint64_t bytes_by_backing[4]; /* 4K, THP, 2M, 1G segment bytes */
    uint64_t small_live_bytes;    /* small allocator: requested bytes */
    uint64_t small_used_bytes;    /* small allocator: class-rounded bytes */
    uint64_t small_segment_bytes;
    uint64_t pool_ready_bytes;
    uint64_t pool_hits, pool_misses;
    uint64_t backing_fallbacks;
    uint64_t node_bytes[8];       /* segment bytes on NUMA nodes 0..7 */
    uint64_t clients;
    uint64_t creates, seals, aborts, gets, releases, deletes, evictions;
    uint64_t waits, wait_timeouts;
    uint64_t protocol_errors;
    uint64_t bookkeeping_bytes;   /* the store's own memory for its object table:
                                   * the shared index (entries and hash buckets,
                                   * as touched), its private per-object records,
                                   * and the records of disk copies and of spill
                                   * operations */
    /* Spilling (SEALSTORE_SPILL_*). Objects spilled to disk still count
     * in objects, sealed_objects and object_bytes above. Throughput in
     * bytes per second is bytes * 1e9 / ns (ns: wall time with at least
     * one spill, or restore, in progress). */
    uint64_t spilled_objects;     /* objects on disk only, now */
    uint64_t spilled_bytes;       /* their bytes */
    uint64_t spills;              /* objects spilled (durably), total */
    uint64_t spill_bytes;         /* bytes of those */
    uint64_t spill_ns;
    uint64_t restores;            /* objects restored into memory, total */
    uint64_t restore_bytes;
    uint64_t restore_ns;
    uint64_t spill_files;         /* spill files in the store's directory */
    uint64_t spill_disk_bytes;    /* bytes of those files */
    uint64_t spill_errors;        /* spills that failed (the object stayed in memory) */
    uint64_t restore_errors;      /* restores that failed (disk errors, no memory) */
    uint64_t spill_lost;          /* spill records found damaged (at startup or on a
                                   * restore) or missing: their objects are dropped */
    uint64_t spill_queue_depth;   /* I/Os the spill engine keeps in flight */
    uint64_t spill_mode;          /* SS_SPILL_MODE_* bits; 0: spilling is off */
    uint64_t pool_yields;         /* times the populator put a refill off while a
                                   * producer was copying into a taken segment */
    uint64_t seal_waits;          /* write seals that took over 4 ms in the kernel,
                                   * which waits out transient page references
                                   * (in 5..80 ms steps) before sealing */
    uint64_t parked_requests;     /* requests waiting in the store now (gets for ids
                                   * not sealed yet, creates waiting for memory,
                                   * replies waiting for the fd budget) */
    uint64_t parked_bytes;        /* the store's heap those hold, now: bounded per
                                   * client and in total (past either, a request
                                   * that would wait fails with -ENOBUFS) */
    uint64_t fd_deferred;         /* replies held back, total, because clients left
                                   * too many fd-carrying replies unread (the store's
                                   * caps, or the kernel refusing the fds: retried) */
    uint64_t spill_scan_bytes;    /* bytes the startup scan of the spill directory read
                                   * (headers and small records; not the data of
                                   * large objects, checked when restored) */
    uint64_t arena_bytes;         /* arenas the store holds now (objects above
                                   * SEALSTORE_SMALL_MAX it copied in), as the
                                   * kernel holds them: counted in resident_bytes */
    uint64_t arena_live_bytes;    /* bytes of the objects in them now (the rest
                                   * of arena_bytes is free space and rounding) */
    uint64_t remote_puts;         /* puts whose bytes the store read straight
                                   * from the caller's memory, total */
    uint64_t trusted_producers;   /* 1: SEALSTORE_TRUST_PRODUCERS is on (creates
                                   * written in place in memory their producer
                                   * keeps writable), 0: off */
    uint64_t trusted_bytes;       /* producers' staging areas that hold objects
                                   * now (trusted mode), as the kernel holds them */
} ss_stats;

/* ss_stats.spill_mode */
#define SS_SPILL_MODE_ON     (1u << 0) /* spilling is on */
#define SS_SPILL_MODE_URING  (1u << 1) /* io_uring (else worker threads: pwrite/pread) */
#define SS_SPILL_MODE_DIRECT (1u << 2) /* O_DIRECT (else buffered I/O, e.g. on tmpfs) */
#define SS_SPILL_MODE_SCANNING (1u << 3) /* the startup scan still runs: spilled objects
                                          * are still being found (the spill counts
                                          * grow); requests that depend on it wait */

/* 0; -EINVAL (NULL out, or its size/version do not match this library);
 * the errors every call can return (above). */
SS_API SS_NODISCARD int ss_stats_get(ss_client *c, ss_stats *out);

/* ----------------------------------------------------------------- events */

#define SS_EVENT_SEALED  (1u << 0)
#define SS_EVENT_DELETED (1u << 1)

typedef struct ss_event {
    uint32_t type; /* one SS_EVENT_* bit */
    ss_id id;
    uint64_t size;
} ss_event;

/*
 * Open a subscription to seal/delete events (mask of SS_EVENT_*): a second
 * connection whose fd is pollable (POLLIN when an event is waiting).
 * [out] *fd: poll it; read events with ss_event_next(); close with
 * ss_unsubscribe(). Events that arrive while the subscriber does not read
 * are buffered by the kernel; when its buffer is full the store drops the
 * subscriber rather than block (ss_event_next then returns -ECONNRESET).
 * Returns 0; -EINVAL (NULL fd, mask 0 or with unknown bits); -ETIMEDOUT
 * (the store did not answer); the errors of ss_connect() (the subscription
 * is a connection of its own); -ENOTCONN in a forked child.
 */
SS_API SS_NODISCARD int ss_subscribe(ss_client *c, unsigned mask, int *fd);
/* Next event: 1 and *ev filled, 0 when none is waiting (non-blocking),
 * or -errno: -EINVAL (negative fd, NULL ev); -ECONNRESET (the store
 * dropped the subscriber, or went away); -SS_E_PROTO (a malformed
 * message). */
SS_API SS_NODISCARD int ss_event_next(int fd, ss_event *ev);
SS_API void ss_unsubscribe(int fd);

/* ----------------------------------------------------- capability query */

/* Bits returned by ss_get_support(): what this kernel and machine offer. */
#define SS_SUPPORT_MEMFD_SEAL     (1u << 0) /* memfd_create + F_ADD_SEALS */
#define SS_SUPPORT_NOEXEC_SEAL    (1u << 1) /* MFD_NOEXEC_SEAL (Linux >= 6.3) */
#define SS_SUPPORT_FUTURE_WRITE   (1u << 2) /* F_SEAL_FUTURE_WRITE (Linux >= 5.1) */
#define SS_SUPPORT_HUGETLB_2M     (1u << 3) /* 2 MiB hugetlb pool has pages now */
#define SS_SUPPORT_HUGETLB_1G     (1u << 4) /* 1 GiB hugetlb pool has pages now */
#define SS_SUPPORT_THP_SHMEM      (1u << 5) /* shmem THP usable (shmem_enabled not never/deny) */
#define SS_SUPPORT_POPULATE_WRITE (1u << 6) /* MADV_POPULATE_WRITE (Linux >= 5.14) */
#define SS_SUPPORT_NUMA_BIND      (1u << 7) /* hwloc can bind memory on this system */
#define SS_SUPPORT_URING          (1u << 8) /* io_uring can be set up */

/*
 * Probe the running kernel (not the build host) and return SS_SUPPORT_* bits.
 * The hugetlb bits reflect the pools at the time of the call. Never fails.
 */
SS_API unsigned ss_get_support(void);

/* ---------------------------------------------------------------- options */

/*
 * Every tunable is a SEALSTORE_<NAME> environment variable, and also an
 * option settable through this API. Precedence: ss_option_set() beats the
 * environment, which beats the built-in default. The environment is read
 * once, on first use of any option. A bad environment value logs one
 * warning and keeps the default.
 *
 * The list is generated from one table (src/lib/options.h); README.md
 * documents every entry, and a test keeps the two in step.
 */
typedef enum ss_option {
    SS_OPT_SOCKET,            /* SEALSTORE_SOCKET: socket path */
    SS_OPT_CAPACITY,          /* SEALSTORE_CAPACITY: resident object bytes */
    SS_OPT_HUGEPAGES,         /* SEALSTORE_HUGEPAGES: auto|1G|2M|thp|off */
    SS_OPT_NUMA,              /* SEALSTORE_NUMA: local|interleave|node:N|off */
    SS_OPT_SPILL_DIR,         /* SEALSTORE_SPILL_DIR: spill directory, or off */
    SS_OPT_LOG,               /* SEALSTORE_LOG: error|warn|info|debug */
    SS_OPT_POOL_SIZE,         /* SEALSTORE_POOL_SIZE: bytes of ready segments */
    SS_OPT_POOL_CLASSES,      /* SEALSTORE_POOL_CLASSES: segment size classes */
    SS_OPT_SMALL_SEGMENT,     /* SEALSTORE_SMALL_SEGMENT: small-object segment size */
    SS_OPT_SMALL_MAX,         /* SEALSTORE_SMALL_MAX: largest small object */
    SS_OPT_CREATE_TIMEOUT,    /* SEALSTORE_CREATE_TIMEOUT: wait for memory (ms/s/m/h) */
    SS_OPT_EVICT,             /* SEALSTORE_EVICT: drop LRU objects when full (off) */
    SS_OPT_SOCKET_GROUP,      /* SEALSTORE_SOCKET_GROUP: group allowed to connect */
    SS_OPT_SPILL_HIGH,        /* SEALSTORE_SPILL_HIGH: spill ahead above this (N%, size, off) */
    SS_OPT_SPILL_QUEUE_DEPTH, /* SEALSTORE_SPILL_QUEUE_DEPTH: spill I/Os in flight */
    SS_OPT_MAP_CACHE,         /* SEALSTORE_MAP_CACHE: bytes a client keeps mapped
                                 after their last release (client side) */
    SS_OPT_LOCAL_GETS,        /* SEALSTORE_LOCAL_GETS: re-gets of held objects
                                 answered by the handle (client side, off) */
    SS_OPT_COPY_THREADS,      /* SEALSTORE_COPY_THREADS: threads copying large
                                 puts (at most the online CPUs) */
    SS_OPT_BUSY_POLL,         /* SEALSTORE_BUSY_POLL: how long the store's loop
                                 and a client's wait spin before sleeping: auto
                                 (default: 50 us, backing off while spins find
                                 nothing), us, or 0: off */
    SS_OPT_STAGE_MAX,         /* SEALSTORE_STAGE_MAX: largest create copied in
                                 from a staging area at seal */
    SS_OPT_INDEX_GETS,        /* SEALSTORE_INDEX_GETS: gets served from the
                                 shared index with a pin (client side, on) */
    SS_OPT_TRUST_PRODUCERS,   /* SEALSTORE_TRUST_PRODUCERS: creates written in
                                 place into memory their creator reuses; a
                                 producer could write its own sealed objects
                                 (off) */
    SS_OPT__COUNT             /* sentinel */
} ss_option;

/*
 * Set option `opt` from its text form, exactly as the environment variable
 * would carry it ("64G", "2M", "node:1", ...). Takes effect for stores and
 * clients started afterwards. Thread-safe.
 * Returns 0, -EINVAL for an unknown option or a value that does not parse
 * (the option keeps its previous value), -ERANGE for a value out of range
 * (a size, a duration over a day, more than 32 pool classes, a string of
 * PATH_MAX bytes or more).
 */
SS_API SS_NODISCARD int ss_option_set(ss_option opt, const char *value);

/*
 * Write the option's current value, in its canonical text form, to
 * `buf` (NUL-terminated). Returns the length of the full text (like
 * snprintf: a return >= len means it was truncated), or -EINVAL for an
 * unknown option or a NULL buf with a non-zero len.
 */
SS_API int ss_option_get(ss_option opt, char *buf, size_t len);

/*
 * The option's environment variable name ("SEALSTORE_CAPACITY"), or NULL
 * for an unknown option. Static storage.
 */
SS_API const char *ss_option_name(ss_option opt);

/* Look an option up by its environment name; -EINVAL if there is none. */
SS_API int ss_option_lookup(const char *env_name);

/* ---------------------------------------------------------------- logging */

enum ss_log_level {
    SS_LOG_ERROR = 0,
    SS_LOG_WARN = 1,
    SS_LOG_INFO = 2,
    SS_LOG_DEBUG = 3,
};

/*
 * Where log lines go. `line` is one message without a trailing newline,
 * already prefixed "sealstore: ". Called only for levels at or below
 * SEALSTORE_LOG; may be called from any thread, so it must be thread-safe.
 */
typedef void (*ss_log_sink)(int level, const char *line, void *arg);

/*
 * Install a sink, or restore the default (stderr) with NULL. Returns 0.
 * Thread-safe; lines already being formatted may still reach the old sink.
 */
SS_API int ss_log_set_sink(ss_log_sink sink, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* SEALSTORE_H */
