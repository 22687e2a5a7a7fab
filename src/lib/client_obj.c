/* SPDX-License-Identifier: MIT */
/*
 * The object calls of the client library: create, seal, abort, put, get,
 * contains, delete, list, stats and events, on the handle machinery of
 * client.c (see client_int.h for the concurrency scheme and the segment
 * cache rules these calls keep).
 */
#include "client_int.h"
#include "segment.h"
#include "sys.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ------------------------------------------------------ create / seal */

static int check_meta(const void *meta, uint64_t meta_size)
{
    if (meta_size > SS_PROTO_MAX_META || (meta_size > 0 && !meta))
        return -EINVAL;
    return 0;
}

/* Public lifetime flags -> wire flags (checked by the caller). */
static uint32_t create_flags(unsigned flags)
{
    return (flags & SS_LIFETIME_CREATOR) ? SS_CREATEF_CREATOR : 0;
}

/* A SMALL object's creator buffer: private memory, whose bytes travel
 * with SEAL, cut from a slab (ss__cl_buf_take). A new hold for it into
 * *out: 0 or -ENOMEM. Lock held. */
static int create_small(ss_client *c, const ss_id *id, uint64_t size, ss__cl_hold **out)
{
    size_t len = SS_ALIGN_UP((size_t)(size ? size : 1), ss__sys_page_size());
    ss__cl_hold *ho = ss__cl_hold_new(c, id);

    if (!ho)
        return -ENOMEM;
    if (ss__cl_buf_take(c, len, ho) < 0) {
        ss__cl_hold_unlink(c, ho);
        ss__cl_hold_free(ho, false);
        return -ENOMEM;
    }
    ho->priv = true;
    *out = ho;
    return 0;
}

/* An OBJECT segment of its own for the new object: cache the segment
 * (writable mapping if map), and a new hold taking the RO and RW fds of
 * the reply in s. 0 or -errno, and then nothing is left. Lock held. */
static int create_object(ss_client *c, ss__cl_slot *s, const ss__rep_create *rep,
                         const ss_id *id, bool map, ss__cl_hold **out)
{
    int *fds = s->fds + rep->data.fd_index; /* RO, RW */
    void *p = NULL; /* the writable mapping, or NULL */
    ss__cl_seg *sg;
    ss__cl_hold *ho;

    if (map) {
        /* a fork before seal must not leave a writable copy in a child */
        p = ss__cl_map_writable((size_t)rep->data.seg_size, fds[1]);
        if (ss__is_err(p))
            return (int)ss__ptr_err(p);
    }
    sg = ss__cl_seg_insert(c, rep->data.seg_id, rep->data.seg_size, SS_SEG_OBJECT);
    ho = sg ? ss__cl_hold_new(c, id) : NULL;
    if (!ho) {
        if (sg) {
            ss__cl_seg_unlink(c, sg);
            free(sg);
        }
        if (p)
            ss__sys_munmap(p, (size_t)rep->data.seg_size);
        return -ENOMEM;
    }
    if (p) {
        sg->addr = p;
        sg->writable = true;
    }
    sg->refs = 1;
    sg->oid = *id;
    ho->seg = sg;
    ho->ro_fd = fds[0];
    ho->rw_fd = fds[1];
    fds[0] = fds[1] = -1;
    *out = ho;
    return 0;
}

/*
 * A staged object (copy-on-seal, client_int.h): the bytes go into this
 * connection's staging area the reply names, mapped read-write once (its
 * fd comes with the first reply naming it) and kept for the connection;
 * the store copies them out at SEAL. A new hold on it into *out: 0 or
 * -errno, and then nothing is left but a mapping kept for later creates.
 * Lock held.
 */
static int create_staged(ss_client *c, ss__cl_slot *s, const ss__rep_create *rep,
                         const ss_id *id, ss__cl_hold **out)
{
    ss__cl_seg *sg = ss__cl_seg_find(c, rep->data.seg_id);
    ss__cl_hold *ho;

    if (rep->data.fd_index != SS_FD_NONE) {
        /* the store sends an area's fd once: it is ours from here, kept
         * until the mapping holds the memory */
        sg = ss__cl_seg_insert(c, rep->data.seg_id, rep->data.seg_size, SS_SEG_STAGE);
        if (!sg)
            return -ENOMEM;
        sg->fd = s->fds[0];
        s->fds[0] = -1;
    }
    if (!sg->addr) {
        /* first use, or a map that failed before (address space, map
         * count): the fd was kept, so a later create that names the area
         * without it can map it then */
        void *park;
        void *p = c->inj_map_fail ? (c->inj_map_fail--, ss__err_ptr(-ENOMEM))
                                  : ss__cl_map_area((size_t)sg->size, sg->fd, &park);

        if (ss__is_err(p))
            return (int)ss__ptr_err(p);
        sg->addr = p;
        sg->park = park;
        sg->writable = true;
        ss__sys_close(sg->fd); /* the mapping keeps the memory */
        sg->fd = -1;
    }
    int rc = ss__cl_area_writable(sg); /* read-only since its last object's seal */
    if (rc < 0)
        return rc;
    ho = ss__cl_hold_new(c, id);
    if (!ho)
        return -ENOMEM;
    sg->refs++;
    ho->seg = sg;
    *out = ho;
    return 0;
}

/* Read-only (PROT_READ) or writable again: a staged creation's bytes in
 * its area from its seal until the area is lent again (so *data behaves
 * as for any creation: writes after the seal fault, ss_create(3); and in
 * trusted-producer mode a sealed object's pages stay read-only in its
 * creator while the area holds it). Lock held, or h SEALING. */
void ss__cl_stage_protect(ss__cl_hold *h, int prot)
{
    ss__cl_seg *sg = h->seg;
    size_t len = SS_ALIGN_UP((size_t)h->size, ss__sys_page_size());

    if (h->kind != SS_SEG_STAGE || !h->creator || !sg || !sg->addr || !len)
        return;
    if (prot & PROT_WRITE) {
        (void)ss__cl_area_writable(sg);
        return;
    }
    /* an area of whole 2 MiB may be on 2 MiB pages, where mprotect takes
     * whole pages only */
    if (sg->size % SS_CL_PARK_MIN == 0) {
        uint64_t end = SS_ALIGN_UP(h->off + len, (uint64_t)SS_CL_PARK_MIN);
        len = (size_t)((end < sg->size ? end : sg->size) - h->off);
    }
    if (sg->park && !sg->nopark && !sg->parked) {
        /* the page tables to the park, then the emptied mapping read-only
         * (ss__cl_map_area says why) */
        if (ss__sys_mremap_keep(sg->addr, (size_t)sg->size, sg->park) == 0) {
            sg->parked = true;
            sg->ro_len = sg->size;
            (void)ss__sys_mprotect(sg->addr, (size_t)sg->size, PROT_READ);
            return;
        }
        sg->nopark = true;
    }
    if (ss__sys_mprotect(sg->addr + h->off, len, prot) == 0)
        sg->ro_len = h->off + len;
}

/*
 * CREATE round trip; on success a creator hold (lock NOT held on return).
 * map (ss_create): give the creator a writable mapping of an OBJECT
 * segment, *data its address. !map (ss_put): the bytes go in with pwrite,
 * and the hold is returned in the SEALING state, so no other thread can
 * seal, abort or free it while the caller fills it through *out.
 */
/* A STAGE reply names an area we do not have with its fd, or one we
 * have (of that size, unused: one object at a time) without. */
static bool stage_known(ss_client *c, const ss__rep_create *rep)
{
    const ss__cl_seg *sg = ss__cl_seg_find(c, rep->data.seg_id);

    if (rep->data.fd_index != SS_FD_NONE)
        return sg == NULL;
    return sg && sg->kind == SS_SEG_STAGE && sg->size == rep->data.seg_size && sg->refs == 0 &&
           (sg->addr || sg->fd >= 0);
}

static int cl_create(ss_client *c, const ss_id *id, uint64_t size, const void *meta,
                     uint64_t meta_size, unsigned flags, bool map, ss__cl_hold **out,
                     void **data)
{
    ss__cl_slot s;
    ss__msg_hdr h;
    ss__req_create r = { .id = *id, .node = ss__cl_node(), .size = size,
                         .meta_size = (uint32_t)meta_size, .flags = create_flags(flags) };
    struct iovec iov[3] = { { &h, sizeof(h) }, { &r, sizeof(r) },
                            { (void *)meta, (size_t)meta_size } };
    ss__rep_create rep;
    ss__cl_hold *ho = NULL;
    int rc = ss__cl_call(c, &s, SS_MSG_CREATE, iov, meta_size ? 3 : 2, NULL);

    if (rc < 0 || (rc = ss__cl_status(&s)) < 0)
        goto out;
    memcpy(&rep, s.buf + SS_CL_HDR, sizeof(rep));
    /* a size not asked for, or a segment id seen before (they are never
     * reused): the store is confused, the connection ends */
    if (rep.data.size != size ||
        (rep.data.kind == SS_SEG_STAGE
             ? !stage_known(c, &rep)
             : rep.data.kind != SS_SEG_SMALL && ss__cl_seg_find(c, rep.data.seg_id))) {
        ss__cl_kill(c, -SS_E_PROTO);
        rc = -SS_E_PROTO;
        goto out;
    }
    if (rep.data.kind == SS_SEG_SMALL)
        rc = create_small(c, id, size, &ho);
    else if (rep.data.kind == SS_SEG_STAGE)
        rc = create_staged(c, &s, &rep, id, &ho);
    else
        rc = create_object(c, &s, &rep, id, map, &ho);
    if (rc < 0)
        goto undo;
    ho->creator = true;
    ho->state = map ? SS_CL_UNSEALED : SS_CL_SEALING;
    ho->kind = (uint8_t)rep.data.kind;
    ho->refs = 1;
    ho->off = rep.data.offset;
    ho->size = size;
    ho->msize = meta_size;
    if (out)
        *out = ho;
    if (data)
        *data = ho->priv ? ho->buf : (void *)(ho->seg->addr + ho->off);
    rc = 0;
out:
    ss__cl_end(c, &s);
    return rc;
undo:
    /* the store reserved the object for us: give it back */
    ss__cl_end(c, &s);
    (void)ss__cl_simple(c, SS_MSG_ABORT, id);
    return rc;
}

SS_API int ss_create_ex(ss_client *c, const ss_id *id, uint64_t size, const void *meta,
                        uint64_t meta_size, unsigned flags, void **data)
{
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id || !data || check_meta(meta, meta_size) < 0 || size > SIZE_MAX / 2 ||
        (flags & ~SS_LIFETIME_CREATOR))
        return -EINVAL;
    return cl_create(c, id, size, meta, meta_size, flags, true, NULL, data);
}

SS_API int ss_create(ss_client *c, const ss_id *id, uint64_t size, const void *meta,
                     uint64_t meta_size, void **data)
{
    return ss_create_ex(c, id, size, meta, meta_size, 0, data);
}

/* Drop a creator hold whose reference is gone at the store (lock held):
 * aborted, or sealed with SS_SEALF_RELEASE. Nobody else can name an
 * aborted object's segment. For a put's sealed object, the store dropped
 * the reference before it sent the SEAL reply, and every reply it built
 * before that has been applied by now (replies are applied in arrival
 * order, client_int.h): one built later carries a new fd if the store
 * forgot that we have the segment. So unmap at once in both cases. */
static void drop_creation(ss_client *c, ss__cl_hold *h)
{
    ss__cl_seg *sg = h->seg;

    ss__cl_hold_unlink(c, h);
    ss__cl_buf_return(c, h);
    ss__cl_hold_free(h, false);
    if (sg && --sg->refs == 0 && sg->unsent == 0 && !sg->deferred && !ss__cl_seg_stays(sg)) {
        ss__cl_seg_unlink(c, sg);
        ss__cl_seg_free(sg, false);
    }
}

/* Make an OBJECT creator's pointer a read-only view before its seal: map
 * the RO fd over the writable range, so F_SEAL_WRITE sees no writable
 * map. Lock held. */
static int seal_prepare(ss__cl_hold *h)
{
    ss__cl_seg *sg = h->seg;

    if (h->kind != SS_SEG_OBJECT || h->remapped)
        return 0;
    if (sg->addr) {
        void *p = ss__sys_mmap(sg->addr, (size_t)sg->size, PROT_READ, MAP_SHARED | MAP_FIXED,
                               h->ro_fd, 0);
        if (ss__is_err(p))
            return (int)ss__ptr_err(p);
        sg->writable = false;
        ss__sys_close(h->ro_fd);
    } else {
        sg->fd = h->ro_fd; /* mapped on first get */
    }
    h->ro_fd = -1;
    ss__sys_close(h->rw_fd);
    h->rw_fd = -1;
    h->remapped = true;
    return 0;
}

/* A small or staged creation's pages read-only (PROT_READ) or writable
 * again. Lock held, or h SEALING. */
static void creation_protect(ss__cl_hold *h, int prot)
{
    if (h->priv)
        (void)ss__sys_mprotect(h->buf, h->buf_len, prot);
    else
        ss__cl_stage_protect(h, prot);
}

/* A small or staged creation's pages read-only from the moment its SEAL is
 * sent (ss__cl_call_work's sent hook; h is SEALING, so no other thread
 * touches it): the mprotect and its TLB flush overlap the store's work on
 * the seal instead of following the answer. A small creation's bytes are
 * in the request, which the send copied. */
static void sent_protect(void *arg)
{
    creation_protect(arg, PROT_READ);
}

/*
 * SEAL the creation h, which the caller put in the SEALING state (no other
 * thread seals, aborts or frees it meanwhile). release (ss_put): the store
 * drops the creator's reference with the seal (SS_SEALF_RELEASE) and so
 * does this, on exactly this hold. Else h becomes SEALED, and is the
 * caller's to release. A failure the store answers with SS_MSGF_ABORTED
 * (any error of the seal itself but -EBUSY: tampered seals, no memory to
 * commit) aborted the object there: h goes too. Any other failure leaves
 * h UNSEALED (retry or abort), as the object is in the store. *gone: h
 * was freed. Lock NOT held.
 */
static int cl_seal(ss_client *c, ss__cl_hold *h, const ss_id *id, bool release, bool *gone)
{
    ss__cl_slot s;
    ss__msg_hdr hd;
    ss__req_seal r = { .id = *id, .flags = release ? SS_SEALF_RELEASE : 0 };
    struct iovec iov[3] = { { &hd, sizeof(hd) }, { &r, sizeof(r) }, { NULL, 0 } };
    bool aborted = false;
    int rc;

    if (h->kind == SS_SEG_SMALL) {
        r.payload_size = h->size;
        iov[2] = (struct iovec){ h->buf, (size_t)h->size };
    }
    /* a small or staged creation's pages become read-only while the store
     * seals it (sent_protect) */
    bool early = h->kind == SS_SEG_STAGE || (h->priv && !release);
    rc = ss__cl_call_work(c, &s, SS_MSG_SEAL, iov, h->kind == SS_SEG_SMALL && h->size ? 3 : 2,
                          h->kind == SS_SEG_STAGE    ? ss__spin_copy_ns(h->size)
                          : h->kind == SS_SEG_OBJECT ? SS_SPIN_SEAL_NS
                                                     : 0,
                          early ? sent_protect : NULL, h);
    if (rc == 0) {
        memcpy(&hd, s.buf, sizeof(hd)); /* the reply's header (checked) */
        rc = hd.status;
        aborted = hd.flags & SS_MSGF_ABORTED;
    }
    *gone = (rc == 0 && release) || aborted;
    if (early && rc != 0)
        creation_protect(h, PROT_READ | PROT_WRITE); /* not sealed: writable again */
    if (*gone) {
        drop_creation(c, h);
    } else if (rc == 0) {
        h->state = SS_CL_SEALED; /* read-only already (early) */
    } else {
        h->state = SS_CL_UNSEALED; /* -EBUSY and the like: retry or abort */
    }
    ss__cl_end(c, &s);
    return rc;
}

SS_API int ss_seal(ss_client *c, const ss_id *id)
{
    ss__cl_hold *h;
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    h = ss__cl_hold_find_creating(c, id);
    if (!h || h->state != SS_CL_UNSEALED) {
        pthread_mutex_unlock(&c->lock);
        return h ? -EBUSY : -ENOENT; /* EBUSY: another thread is sealing it */
    }
    if (c->dead) {
        rc = c->dead;
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    rc = seal_prepare(h);
    if (rc == 0)
        h->state = SS_CL_SEALING; /* no other thread seals, aborts or frees it now */
    pthread_mutex_unlock(&c->lock);
    bool gone;
    return rc < 0 ? rc : cl_seal(c, h, id, false, &gone);
}

static int cl_abort(ss_client *c, const ss_id *id)
{
    ss__cl_hold *h;
    int rc;

    pthread_mutex_lock(&c->lock);
    h = ss__cl_hold_find_creating(c, id);
    if (!h || h->state != SS_CL_UNSEALED) {
        pthread_mutex_unlock(&c->lock);
        return h ? -EBUSY : -ENOENT;
    }
    h->state = SS_CL_SEALING;
    if (c->dead) {
        /* the store is gone and the object with it: clean up locally */
        rc = c->dead;
        drop_creation(c, h);
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    pthread_mutex_unlock(&c->lock);
    rc = ss__cl_simple(c, SS_MSG_ABORT, id);
    pthread_mutex_lock(&c->lock);
    drop_creation(c, h);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

SS_API int ss_abort(ss_client *c, const ss_id *id)
{
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id)
        return -EINVAL;
    return cl_abort(c, id);
}

/* ---------------------------------------------------------------- put */

/* Fill an OBJECT segment with the caller's buffers, in order, through
 * its read-write fd: pwritev (faster than mapping on shmem), or map +
 * memcpy on hugetlb, which has no write(). */
static int fill_segment(ss__cl_hold *h, const struct iovec *iov, int iovcnt, uint64_t size)
{
    uint64_t done = 0;
    int i = 0;
    size_t in = 0; /* bytes of iov[i] already written */

    while (done < size) {
        struct iovec part[64];
        int n = 0;
        size_t room = SS_GiB;

        /* up to 64 iovecs and 1 GiB per call, resuming inside iov[i] */
        for (int j = i; j < iovcnt && n < 64 && room > 0; j++) {
            size_t skip = j == i ? in : 0, len = iov[j].iov_len - skip;
            if (len == 0)
                continue;
            if (len > room)
                len = room;
            part[n++] = (struct iovec){ (char *)iov[j].iov_base + skip, len };
            room -= len;
        }
        ssize_t w = ss__sys_pwritev(h->rw_fd, part, n, (off_t)(h->off + done));

        if (w == -EINVAL && done == 0)
            break; /* hugetlbfs */
        if (w < 0)
            return (int)w;
        if (w == 0)
            return -EIO;
        done += (uint64_t)w;
        for (size_t left = (size_t)w; left > 0;) {
            size_t avail = iov[i].iov_len - in;
            if (left < avail) {
                in += left;
                left = 0;
            } else {
                left -= avail;
                i++;
                in = 0;
            }
        }
        while (i < iovcnt && iov[i].iov_len == 0)
            i++;
    }
    if (done < size) {
        size_t len = (size_t)h->seg->size;
        unsigned char *p = ss__cl_map_writable(len, h->rw_fd), *d;

        if (ss__is_err(p))
            return (int)ss__ptr_err(p);
        d = p + h->off;
        for (int j = 0; j < iovcnt; j++) {
            if (iov[j].iov_len)
                memcpy(d, iov[j].iov_base, iov[j].iov_len);
            d += iov[j].iov_len;
        }
        ss__sys_munmap(p, len);
    }
    return 0;
}

/* Copy the caller's buffers, in order, to dst. */
static void gather(void *dst, const struct iovec *iov, int iovcnt)
{
    unsigned char *d = dst;

    for (int j = 0; j < iovcnt; j++) {
        if (iov[j].iov_len)
            memcpy(d, iov[j].iov_base, iov[j].iov_len);
        d += iov[j].iov_len;
    }
}

/* Data iovecs a small PUT sends as they are (sendmsg takes IOV_MAX in
 * all, the header, body and meta included); more are gathered first. */
#define PUT_IOV_MAX (SS_IOV_MAX - 3)

/* A small object in one PUT round trip: the store copies the bytes,
 * sent straight from the caller's buffers (or gathered when there are
 * many pieces), into a small slot. */
static int put_small(ss_client *c, const ss_id *id, const struct iovec *iov, int iovcnt,
                     uint64_t size, const void *meta, uint64_t meta_size, unsigned flags)
{
    ss__cl_slot s;
    ss__msg_hdr hd;
    ss__req_put r = { .id = *id, .node = ss__cl_node(), .size = size,
                      .meta_size = (uint32_t)meta_size, .flags = create_flags(flags) };
    /* the usual few pieces on the stack: a small put is a hot path */
    struct iovec few[3 + 4];
    size_t nv = 3 + (size_t)(iovcnt <= PUT_IOV_MAX ? iovcnt : 1);
    struct iovec *v = nv <= SS_ARRAY_SIZE(few) ? few : malloc(nv * sizeof(*v));
    void *tmp = NULL;
    int n = 2, rc;

    if (!v)
        return -ENOMEM;
    v[0] = (struct iovec){ &hd, sizeof(hd) };
    v[1] = (struct iovec){ &r, sizeof(r) };
    if (meta_size)
        v[n++] = (struct iovec){ (void *)meta, (size_t)meta_size };
    if (iovcnt > PUT_IOV_MAX) {
        tmp = malloc(size ? (size_t)size : 1);
        if (!tmp) {
            if (v != few)
                free(v);
            return -ENOMEM;
        }
        gather(tmp, iov, iovcnt);
        v[n++] = (struct iovec){ tmp, (size_t)size };
    } else {
        for (int j = 0; j < iovcnt; j++)
            if (iov[j].iov_len)
                v[n++] = iov[j];
    }
    rc = ss__cl_call(c, &s, SS_MSG_PUT, v, n, NULL);
    if (rc == 0)
        rc = ss__cl_status(&s);
    ss__cl_end(c, &s);
    free(tmp);
    if (v != few)
        free(v);
    return rc;
}

/* A large object in one PUTV round trip: the store reads the bytes
 * straight from our buffers (process_vm_readv) into recycled memory
 * while this call waits. -EPERM: the store may not read our memory. */
static int put_remote(ss_client *c, const ss_id *id, const struct iovec *iov, int iovcnt,
                      uint64_t size, const void *meta, uint64_t meta_size, unsigned flags)
{
    ss__cl_slot s;
    ss__msg_hdr hd;
    ss__req_putv r = { .put = { .id = *id, .node = ss__cl_node(), .size = size,
                                .meta_size = (uint32_t)meta_size,
                                .flags = create_flags(flags) } };
    ss__putv_iov *v = malloc((size_t)iovcnt * sizeof(*v));
    struct iovec m[4] = { { &hd, sizeof(hd) }, { &r, sizeof(r) } };
    int rc;

    if (!v)
        return -ENOMEM;
    for (int j = 0; j < iovcnt; j++)
        if (iov[j].iov_len)
            v[r.niov++] = (ss__putv_iov){ (uint64_t)(uintptr_t)iov[j].iov_base,
                                          (uint64_t)iov[j].iov_len };
    m[2] = (struct iovec){ v, r.niov * sizeof(*v) };
    m[3] = (struct iovec){ (void *)meta, (size_t)meta_size };
    rc = ss__cl_call_work(c, &s, SS_MSG_PUTV, m, meta_size ? 4 : 3, ss__spin_copy_ns(size), NULL,
                          NULL);
    if (rc == 0)
        rc = ss__cl_status(&s);
    ss__cl_end(c, &s);
    free(v);
    return rc;
}

/* The put of ss_put_ex() and ss_putv(), arguments checked. */
static int put_vec(ss_client *c, const ss_id *id, const struct iovec *iov, int iovcnt,
                   uint64_t size, const void *meta, uint64_t meta_size, unsigned flags)
{
    ss__cl_hold *h;
    int rc;

    if (size <= c->small_max &&
        SS_CL_HDR + sizeof(ss__req_put) + meta_size + size <= c->max_msg)
        return put_small(c, id, iov, iovcnt, size, meta, meta_size, flags);
    if (!__atomic_load_n(&c->no_remote, __ATOMIC_RELAXED) && size >= 4096 &&
        SS_CL_HDR + sizeof(ss__req_putv) + (size_t)iovcnt * sizeof(ss__putv_iov) + meta_size <=
            c->max_msg) {
        rc = put_remote(c, id, iov, iovcnt, size, meta, meta_size, flags);
        if (rc != -EPERM)
            return rc;
        /* this store may not read our memory (another uid, a process
         * that is not dumpable, ...): write a segment of our own */
        __atomic_store_n(&c->no_remote, true, __ATOMIC_RELAXED);
    }

    /* h stays SEALING (no other thread seals, aborts or frees it) until
     * the seal ends it: the store drops the creator's reference with the
     * seal, and cl_seal drops this very hold. A RELEASE would name only
     * the id, which could mean an older object with this id that the
     * client still holds (deleted since), and end the wrong view. */
    rc = cl_create(c, id, size, meta, meta_size, flags, false, &h, NULL);
    if (rc < 0)
        return rc;
    if (h->priv)
        gather(h->buf, iov, iovcnt);
    else if (h->kind == SS_SEG_STAGE)
        gather(h->seg->addr + h->off, iov, iovcnt); /* the store copies it at seal */
    else
        rc = fill_segment(h, iov, iovcnt, size);
    if (rc == 0) {
        pthread_mutex_lock(&c->lock);
        rc = c->dead ? c->dead : seal_prepare(h);
        pthread_mutex_unlock(&c->lock);
    }
    if (rc == 0) {
        bool gone;
        rc = cl_seal(c, h, id, true, &gone);
        if (gone) /* sealed and released, or aborted by the store */
            return rc;
    } else {
        pthread_mutex_lock(&c->lock);
        h->state = SS_CL_UNSEALED;
        pthread_mutex_unlock(&c->lock);
    }
    /* h is UNSEALED again: abort it (h may go from here on) */
    (void)cl_abort(c, id);
    return rc;
}

SS_API int ss_put_ex(ss_client *c, const ss_id *id, const void *data, uint64_t size,
                     const void *meta, uint64_t meta_size, unsigned flags)
{
    struct iovec one = { (void *)data, (size_t)size };
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id || (size > 0 && !data) || check_meta(meta, meta_size) < 0 ||
        size > SIZE_MAX / 2 || (flags & ~SS_LIFETIME_CREATOR))
        return -EINVAL;
    return put_vec(c, id, &one, size ? 1 : 0, size, meta, meta_size, flags);
}

SS_API int ss_putv(ss_client *c, const ss_id *id, const struct iovec *iov, int iovcnt,
                   const void *meta, uint64_t meta_size, unsigned flags)
{
    uint64_t size = 0;
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id || iovcnt < 0 || iovcnt > SS_IOV_MAX || (iovcnt > 0 && !iov) ||
        check_meta(meta, meta_size) < 0 || (flags & ~SS_LIFETIME_CREATOR))
        return -EINVAL;
    for (int j = 0; j < iovcnt; j++) {
        if (iov[j].iov_len > 0 && !iov[j].iov_base)
            return -EINVAL;
        if (iov[j].iov_len > SIZE_MAX / 2 - size)
            return -EINVAL;
        size += iov[j].iov_len;
    }
    return put_vec(c, id, iov, iovcnt, size, meta, meta_size, flags);
}

SS_API int ss_put(ss_client *c, const ss_id *id, const void *data, uint64_t size,
                  const void *meta, uint64_t meta_size)
{
    return ss_put_ex(c, id, data, size, meta, meta_size, 0);
}

/* ----------------------------------------------------------- put_many */

/*
 * A batch of small puts being gathered into one PUT_MANY message: the
 * records are built here, the meta and data iovecs point at the callers'
 * buffers (the kernel's copy in sendmsg is the only one on this side).
 * One per ss_put_many() call (on the heap: about 10 KiB), so threads
 * share nothing but the connection, whose sends and replies ss__cl_call
 * serialises under c->lock as for any request; the caller's buffers are
 * only read, and only until the call returns.
 */
typedef struct put_batch {
    uint32_t k;                           /* records gathered */
    size_t len;                           /* message bytes so far */
    size_t idx[SS_PROTO_MAX_BATCH];       /* item index of each record */
    ss__req_put rec[SS_PROTO_MAX_BATCH];
    struct iovec iov[3 + 2 * SS_PROTO_MAX_BATCH];
} put_batch;

#define PUT_MANY_HEAD (SS_CL_HDR + sizeof(ss__req_put_many))

/* Send the gathered records as one PUT_MANY, set their statuses, start
 * a new batch. Returns how many the store stored. */
static size_t put_many_flush(ss_client *c, put_batch *b, const ss_put_item *items, int *status)
{
    ss__cl_slot s;
    ss__msg_hdr hd;
    ss__req_put_many r = { .n = b->k };
    int n = 3, rc;
    size_t stored = 0;

    if (b->k == 0)
        return 0;
    b->iov[0] = (struct iovec){ &hd, sizeof(hd) };
    b->iov[1] = (struct iovec){ &r, sizeof(r) };
    b->iov[2] = (struct iovec){ b->rec, b->k * sizeof(ss__req_put) };
    for (uint32_t j = 0; j < b->k; j++) {
        const ss_put_item *it = &items[b->idx[j]];
        if (it->meta_size)
            b->iov[n++] = (struct iovec){ (void *)it->meta, (size_t)it->meta_size };
        if (it->size)
            b->iov[n++] = (struct iovec){ (void *)it->data, (size_t)it->size };
    }
    rc = ss__cl_call(c, &s, SS_MSG_PUT_MANY, b->iov, n, NULL);
    if (rc == 0)
        rc = ss__cl_status(&s);
    if (rc >= 0) {
        /* the reply checker saw n statuses summing to rc; n must be ours */
        ss__rep_put_many rep;
        memcpy(&rep, s.buf + SS_CL_HDR, sizeof(rep));
        if (rep.n != b->k)
            rc = -SS_E_PROTO;
        for (uint32_t j = 0; rc >= 0 && j < b->k; j++) {
            int32_t st;
            memcpy(&st, s.buf + SS_CL_HDR + sizeof(rep) + j * sizeof(st), sizeof(st));
            status[b->idx[j]] = st;
            stored += st == 0;
        }
    }
    ss__cl_end(c, &s);
    if (rc < 0)
        for (uint32_t j = 0; j < b->k; j++)
            status[b->idx[j]] = rc;
    b->k = 0;
    b->len = PUT_MANY_HEAD;
    return rc < 0 ? 0 : stored;
}

SS_API int ss_put_many(ss_client *c, const ss_put_item *items, size_t n, int *status)
{
    put_batch *b;
    size_t stored = 0;
    int32_t node;
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if ((n > 0 && (!items || !status)) || n > INT_MAX)
        return -EINVAL;
    if (n == 0)
        return 0;
    b = malloc(sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->k = 0;
    b->len = PUT_MANY_HEAD;
    node = ss__cl_node();
    for (size_t i = 0; i < n; i++) {
        const ss_put_item *it = &items[i];
        size_t bytes;

        if ((it->size > 0 && !it->data) || check_meta(it->meta, it->meta_size) < 0 ||
            it->size > SIZE_MAX / 2 || (it->flags & ~SS_LIFETIME_CREATOR)) {
            status[i] = -EINVAL;
            continue;
        }
        bytes = sizeof(ss__req_put) + (size_t)it->meta_size + (size_t)it->size;
        if (it->size > c->small_max || PUT_MANY_HEAD + bytes > c->max_msg) {
            /* not a small object: alone, in order, the way ss_put_ex puts it */
            stored += put_many_flush(c, b, items, status);
            status[i] = ss_put_ex(c, &it->id, it->data, it->size, it->meta, it->meta_size,
                                  it->flags);
            stored += status[i] == 0;
            continue;
        }
        if (b->k == SS_PROTO_MAX_BATCH || b->len + bytes > c->max_msg)
            stored += put_many_flush(c, b, items, status);
        b->idx[b->k] = i;
        b->rec[b->k] = (ss__req_put){ .id = it->id, .node = node,
                                      .size = it->size, .meta_size = (uint32_t)it->meta_size,
                                      .flags = create_flags(it->flags) };
        b->k++;
        b->len += bytes;
    }
    stored += put_many_flush(c, b, items, status);
    free(b);
    return (int)stored;
}

/* ---------------------------------------------------------------- get */

/* Pass 1 helper: can this segref be resolved (a segment we have, or one
 * whose fd is in this reply) and does it agree with what we have? */
static bool segref_ok(ss_client *c, const ss__cl_slot *s, const ss__segref *r)
{
    ss__cl_seg *sg = ss__cl_seg_find(c, r->seg_id);

    if (sg)
        return sg->size == r->seg_size && sg->kind == r->kind && !sg->writable;
    if (r->fd_index != SS_FD_NONE)
        return true;
    /* SS_FD_NONE for a segment we lack: only fine if an fd for it came in
     * this same reply under another segref */
    {
        const unsigned char *p = s->buf + SS_CL_HDR;
        ss__rep_get rep;

        memcpy(&rep, p, sizeof(rep));
        p += sizeof(rep);
        for (uint32_t i = 0; i < rep.n; i++) {
            ss__get_entry e;

            memcpy(&e, p + (size_t)i * sizeof(e), sizeof(e));
            if (e.status != 0)
                continue;
            if (e.data.seg_id == r->seg_id && e.data.fd_index != SS_FD_NONE &&
                e.data.seg_size == r->seg_size)
                return true;
            if (e.meta.size && e.meta.seg_id == r->seg_id && e.meta.fd_index != SS_FD_NONE &&
                e.meta.seg_size == r->seg_size)
                return true;
        }
    }
    return false;
}

/* Pass 2 helper: the segment of a segref, inserted and mapped as needed
 * (fd-carrying segrefs are taken first, so an SS_FD_NONE one always finds
 * its segment). NULL on allocation failure. *maperr gets a failed mmap's
 * error: the segment keeps its fd and mapping is retried on next use. */
static ss__cl_seg *segref_take(ss_client *c, ss__cl_slot *s, const ss__segref *r, int *maperr)
{
    ss__cl_seg *sg = ss__cl_seg_find(c, r->seg_id);
    int fd = r->fd_index != SS_FD_NONE ? s->fds[r->fd_index] : -1;

    if (sg) {
        /* already ours: the reused mapping makes a new fd redundant */
        if (fd >= 0) {
            ss__sys_close(fd);
            s->fds[r->fd_index] = -1;
        }
    } else {
        if (fd < 0) /* pass 1 excludes this; never index fds with it */
            return NULL;
        sg = ss__cl_seg_insert(c, r->seg_id, r->seg_size, (uint8_t)r->kind);
        if (!sg)
            return NULL;
        sg->fd = fd;
        s->fds[r->fd_index] = -1;
    }
    if (!sg->addr) {
        int rc = ss__cl_seg_map(sg);
        if (rc < 0 && !*maperr)
            *maperr = rc;
    }
    return sg;
}

void ss__cl_hold_view(const ss__cl_hold *h, ss_object *o)
{
    const ss__cl_seg *ds = h->seg, *ms = h->mseg;

    *o = (ss_object){
        .id = h->id,
        .uid = h->uid,
        .data = ds ? (ds->addr ? ds->addr + h->off : NULL) : ss__cl_empty,
        .size = h->size,
        .meta = ms && ms->addr ? ms->addr + h->moff : NULL,
        .meta_size = ms ? h->msize : 0,
    };
}

/* One entry e of a GET reply in s for the id asked: a reference (the
 * hold of an identical view, or a new one) into *ref and the caller's
 * view into *o. 1 found, 0 not, -SS_E_PROTO, or -ENOMEM. Lock held. */
static int get_view(ss_client *c, ss__cl_slot *s, const ss__get_entry *e, const ss_id *id,
                    ss__cl_ref *ref, ss_object *o, int *maperr)
{
    ss__cl_seg *ds = NULL, *ms = NULL;
    ss__cl_hold *h;

    ref->found = false;
    if (e->status != 0) {
        *o = (ss_object){ .id = *id, .uid = SS_UID_UNKNOWN };
        ss__cl_forget(c, id, NULL); /* whatever we hold of it is deleted */
        return 0;
    }
    if (e->data.seg_size && !(ds = segref_take(c, s, &e->data, maperr)))
        return -ENOMEM;
    if (e->meta.size && !(ms = segref_take(c, s, &e->meta, maperr)))
        return -ENOMEM;
    h = ss__cl_hold_find_view(c, id, ds != NULL, e->data.seg_id, e->data.offset);
    if (h && h->mseg != ms)
        return -SS_E_PROTO;
    if (!h) {
        h = ss__cl_hold_new(c, id);
        if (!h)
            return -ENOMEM;
        h->state = SS_CL_SEALED;
        h->seg = ds;
        h->mseg = ms;
        h->off = e->data.offset;
        h->size = e->data.size;
        h->moff = e->meta.offset;
        h->msize = e->meta.size;
    }
    h->refs++;
    h->uid = e->uid;
    h->got = true;
    h->stale = false;
    ss__cl_forget(c, id, h); /* the id's object is this one now */
    if (ds) {
        ss__cl_seg_use(c, ds);
        ds->refs++;
        if (ds->kind == SS_SEG_OBJECT)
            ds->oid = *id; /* an ARENA segment holds many objects */
        ds->probe = *id;
        ds->has_probe = true;
    }
    if (ms) {
        ss__cl_seg_use(c, ms);
        ms->refs++;
        ms->oid = *id;
    }
    *ref = (ss__cl_ref){ .seg_id = e->data.seg_id, .off = e->data.offset,
                         .has_seg = ds != NULL, .found = true };
    ss__cl_hold_view(h, o);
    return 1;
}

/* A get served by the client (client_int.h, local references): one more
 * local reference on a hold of id, its view into *o. false: ask the
 * store. Lock held. */
static bool get_local(ss_client *c, const ss_id *id, ss__cl_ref *ref, ss_object *o)
{
    ss__cl_hold *h = ss__cl_hold_find_local(c, id);

    if (!h || h->local == UINT32_MAX)
        return false;
    h->local++;
    *ref = (ss__cl_ref){ .seg_id = h->seg ? h->seg->seg_id : 0, .off = h->off,
                         .has_seg = h->seg != NULL, .found = true };
    ss__cl_hold_view(h, o);
    return true;
}

/*
 * Turn a GET reply (in s: checked by ss__proto_check_reply, status >= 0)
 * into views and holds for the request g. Called by whichever thread
 * received the reply, before any other reply is received or applied (lock
 * held; client_int.h). Returns the number found, -SS_E_PROTO / -ENOMEM
 * after killing the connection, or a mapping error; g->refs says which
 * references were taken, in every case.
 */
int ss__cl_get_apply(ss_client *c, ss__cl_slot *s, const ss__cl_getreq *g)
{
    const unsigned char *p = s->buf + SS_CL_HDR + sizeof(ss__rep_get);
    const ss_id *ids = g->ids;
    ss_object *out = g->out;
    ss__cl_ref *refs = g->refs;
    uint32_t n = g->n;
    ss__rep_get rep;
    int found = 0, maperr = 0;

    memcpy(&rep, s->buf + SS_CL_HDR, sizeof(rep));
    if (rep.n != n)
        goto proto;
    for (uint32_t i = 0; i < n; i++) {
        ss__get_entry e;

        memcpy(&e, p + (size_t)i * sizeof(e), sizeof(e));
        if (e.status != 0)
            continue;
        if (e.data.seg_size && !segref_ok(c, s, &e.data))
            goto proto;
        if (e.meta.size && !segref_ok(c, s, &e.meta))
            goto proto;
    }
    /* segments whose fd came with this reply first */
    for (uint32_t i = 0; i < n; i++) {
        ss__get_entry e;

        memcpy(&e, p + (size_t)i * sizeof(e), sizeof(e));
        if (e.status != 0)
            continue;
        if (e.data.seg_size && e.data.fd_index != SS_FD_NONE &&
            !segref_take(c, s, &e.data, &maperr))
            goto nomem;
        if (e.meta.size && e.meta.fd_index != SS_FD_NONE && !segref_take(c, s, &e.meta, &maperr))
            goto nomem;
    }
    for (uint32_t i = 0; i < n; i++) {
        ss__get_entry e;
        int rc;

        memcpy(&e, p + (size_t)i * sizeof(e), sizeof(e));
        rc = get_view(c, s, &e, &ids[i], &refs[i], &out[i], &maperr);
        if (rc == -SS_E_PROTO)
            goto proto;
        if (rc < 0)
            goto nomem;
        found += rc;
    }
    return maperr ? maperr : found;
proto:
    ss__cl_kill(c, -SS_E_PROTO);
    return -SS_E_PROTO;
nomem:
    /* the store's idea of our segments can no longer be kept in step */
    ss__cl_kill(c, -ENOMEM);
    return -ENOMEM;
}

/* One GET request of n ids (n <= SS_PROTO_MAX_IDS): found, or a negative
 * error with none of these references left taken. Lock NOT held. */
static int get_remote(ss_client *c, const ss_id *ids, uint32_t n, int64_t timeout_ms,
                      ss_object *out, ss__cl_ref *refs)
{
    ss__cl_slot s;
    ss__msg_hdr h;
    ss__req_get r = { .n = n, .timeout_ms = timeout_ms };
    struct iovec iov[3] = { { &h, sizeof(h) }, { &r, sizeof(r) },
                            { (void *)ids, n * sizeof(ss_id) } };
    ss__cl_getreq g = { .ids = ids, .n = n, .out = out, .refs = refs };
    int rc;

    for (uint32_t i = 0; i < n; i++)
        refs[i].found = refs[i].pinned = false;
    /* the reply is applied (views in out, references taken) by the thread
     * that receives it, this one or another, before the call returns */
    rc = ss__cl_call(c, &s, SS_MSG_GET, iov, 3, &g);
    if (rc == 0)
        rc = ss__cl_status(&s);
    if (rc >= 0)
        rc = g.rc;
    ss__cl_slot_end(c, &s);
    if (c->deferred)
        ss__cl_seg_sweep(c);
    c->remote_gets++;
    if (rc < 0)
        ss__cl_drop_refs(c, ids, refs, n);
    pthread_mutex_unlock(&c->lock);
    ss__cl_close_fds(s.fds, s.nfds);
    return rc;
}

/* One batch (n <= SS_PROTO_MAX_IDS): the ids this client holds are served
 * locally (client_int.h), the others in one GET. Returns found, or a
 * negative error with none of this batch's references left taken. */
static int get_batch(ss_client *c, const ss_id *ids, uint32_t n, int64_t timeout_ms,
                     ss_object *out, ss__cl_ref *refs)
{
    ss_id rid[SS_PROTO_MAX_IDS];
    ss_object rout[SS_PROTO_MAX_IDS];
    ss__cl_ref rref[SS_PROTO_MAX_IDS];
    uint32_t at[SS_PROTO_MAX_IDS], nr = 0;
    int found = 0, rc;

    /* once: the index and a pin area (a hint read without the lock: the
     * setup and every use of the area look again under it) */
    if (c->index_gets && !__atomic_load_n(&c->pins.map, __ATOMIC_RELAXED))
        ss__cl_pins_setup(c);
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < n; i++) {
        refs[i].pinned = false;
        if (!c->dead && ((c->local_gets && get_local(c, &ids[i], &refs[i], &out[i])) ||
                         ss__cl_index_get(c, &ids[i], &refs[i], &out[i]))) {
            found++;
        } else {
            refs[i].found = false;
            at[nr++] = i;
        }
    }
    if (nr > 0 && c->live_bytes)
        ss__cl_kept_check_live(c); /* this get asks the store: look at them */
    pthread_mutex_unlock(&c->lock);
    if (nr == 0)
        return found;
    if (nr == n) /* nothing local: the common miss, without copies */
        return get_remote(c, ids, n, timeout_ms, out, refs);
    for (uint32_t k = 0; k < nr; k++)
        rid[k] = ids[at[k]];
    rc = get_remote(c, rid, nr, timeout_ms, rout, rref);
    if (rc < 0) {
        pthread_mutex_lock(&c->lock);
        ss__cl_drop_refs(c, ids, refs, n);
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    for (uint32_t k = 0; k < nr; k++) {
        out[at[k]] = rout[k];
        refs[at[k]] = rref[k];
    }
    return found + rc;
}

static uint64_t now_ms(void)
{
    return ss__now_ns() / 1000000u;
}

SS_API int ss_get(ss_client *c, const ss_id *ids, size_t n, int64_t timeout_ms, ss_object *out)
{
    ss_object lobj[SS_PROTO_MAX_IDS];
    ss__cl_ref lref[SS_PROTO_MAX_IDS];
    ss_object *tmp = lobj;
    ss__cl_ref *refs = lref;
    uint64_t deadline = 0;
    size_t done;
    int found = 0, rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!ids || !out || timeout_ms < -1)
        return -EINVAL;
    if (n == 0)
        return 0;
    if (n > INT32_MAX)
        return -EINVAL;
    if (n > SS_PROTO_MAX_IDS) {
        tmp = malloc(n * sizeof(*tmp));
        refs = malloc(n * sizeof(*refs));
        if (!tmp || !refs) {
            rc = -ENOMEM;
            goto out;
        }
        if (timeout_ms > 0)
            deadline = now_ms() + (uint64_t)timeout_ms;
    }
    /* batches in sequence, each with what remains of the timeout */
    for (done = 0; done < n;) {
        uint32_t m = n - done > SS_PROTO_MAX_IDS ? SS_PROTO_MAX_IDS : (uint32_t)(n - done);
        int64_t t = timeout_ms;

        if (deadline) {
            uint64_t now = now_ms();
            t = now < deadline ? (int64_t)(deadline - now) : 0;
        }
        rc = get_batch(c, ids + done, m, t, tmp + done, refs + done);
        if (rc < 0) {
            /* out stays untouched and no reference stays taken */
            pthread_mutex_lock(&c->lock);
            ss__cl_drop_refs(c, ids, refs, done);
            pthread_mutex_unlock(&c->lock);
            goto out;
        }
        found += rc;
        done += m;
    }
    memcpy(out, tmp, n * sizeof(*out));
    rc = found;
out:
    if (tmp != lobj) {
        free(tmp);
        free(refs);
    }
    return rc;
}

SS_API int ss_release(ss_client *c, const ss_id *id)
{
    ss__cl_hold *h;
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    h = ss__cl_hold_pick_release(c, id, &rc, false);
    if (h)
        ss__cl_release_hold(c, h); /* the oldest: its reference goes now */
    pthread_mutex_unlock(&c->lock);
    return h ? 0 : rc;
}

SS_API int ss_release_object(ss_client *c, const ss_object *o)
{
    ss__cl_hold *h;
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!o || !o->data)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    h = ss__cl_hold_find_addr(c, &o->id, o->data);
    if (h)
        ss__cl_release_hold(c, h);
    else if (ss__cl_hold_find_creating(c, &o->id))
        rc = -EBUSY;
    else
        rc = -ENOENT;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* Release n references in one go (ss_release_many, ss_release_objects):
 * ids[i] as ss_release, or objs[i] as ss_release_object (arr is whichever
 * the caller passed, for the argument check); the references gathered
 * into as few RELEASE messages as possible (ss__cl_batch). How many were
 * released. */
static int release_batch(ss_client *c, const void *arr, const ss_id *ids,
                         const ss_object *objs, size_t n)
{
    ss__cl_batch b;
    int done = 0, rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if ((!arr && n > 0) || n > INT_MAX)
        return -EINVAL;
    b.nids = b.nsegs = 0;
    b.object = false;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        ss__cl_hold *h;
        int err;

        if (ids)
            h = ss__cl_hold_pick_release(c, &ids[i], &err, false);
        else
            h = objs[i].data ? ss__cl_hold_find_addr(c, &objs[i].id, objs[i].data) : NULL;
        if (!h)
            continue;
        ss__cl_release_hold_into(c, h, &b);
        done++;
    }
    ss__cl_batch_end(c, &b);
    pthread_mutex_unlock(&c->lock);
    return done;
}

SS_API int ss_release_many(ss_client *c, const ss_id *ids, size_t n)
{
    return release_batch(c, ids, ids, NULL, n);
}

SS_API int ss_release_objects(ss_client *c, const ss_object *objs, size_t n)
{
    return release_batch(c, objs, NULL, objs, n);
}

/* --------------------------------------------------- contains / delete */

/* The store says id's sealed object is not one this client holds: no get
 * of it is served locally from now on (client_int.h). */
static void forget_local(ss_client *c, const ss_id *id)
{
    pthread_mutex_lock(&c->lock);
    ss__cl_forget(c, id, NULL);
    pthread_mutex_unlock(&c->lock);
}

SS_API int ss_contains(ss_client *c, const ss_id *id)
{
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id)
        return -EINVAL;
    if (ss__cl_index_contains(c, id) == 1) /* sealed now: no round trip */
        return 1;
    rc = ss__cl_simple(c, SS_MSG_CONTAINS, id);
    if (rc == 0)
        forget_local(c, id);
    return rc;
}

SS_API int ss_delete(ss_client *c, const ss_id *id)
{
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!id)
        return -EINVAL;
    rc = ss__cl_simple(c, SS_MSG_DELETE, id);
    /* the store answered: whatever this client holds with that id is not
     * the id's sealed object any more (0: deleted now; -ENOENT: before;
     * -EBUSY: a new one is being created) */
    if (rc == 0 || rc == -ENOENT || rc == -EBUSY)
        forget_local(c, id);
    return rc;
}

/* ---------------------------------------------------------- list/stats */

SS_API int ss_list(ss_client *c, uint64_t *cursor, ss_obj_info *out, size_t max)
{
    ss__cl_slot s;
    ss__msg_hdr h;
    ss__req_list r;
    struct iovec iov[2] = { { &h, sizeof(h) }, { &r, sizeof(r) } };
    ss__rep_list rep;
    uint32_t small_max;
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!cursor || (max > 0 && !out))
        return -EINVAL;
    if (max == 0)
        return 0;
    r = (ss__req_list){ .cursor = *cursor,
                        .max = max > SS_PROTO_MAX_LIST ? SS_PROTO_MAX_LIST : (uint32_t)max };
    rc = ss__cl_call(c, &s, SS_MSG_LIST, iov, 2, NULL);
    if (rc == 0)
        rc = ss__cl_status(&s);
    if (rc < 0)
        goto out;
    memcpy(&rep, s.buf + SS_CL_HDR, sizeof(rep));
    if (rep.n > r.max) {
        ss__cl_kill(c, -SS_E_PROTO);
        rc = -SS_E_PROTO;
        goto out;
    }
    small_max = c->small_max;
    for (uint32_t i = 0; i < rep.n; i++) {
        ss__list_entry e;
        ss_obj_info *o = &out[i];
        const char *b;

        memcpy(&e, s.buf + SS_CL_HDR + sizeof(rep) + (size_t)i * sizeof(e), sizeof(e));
        if (e.flags & SS_LISTF_SPILLED)
            b = "disk";
        else if (e.size <= small_max)
            b = "small";
        else
            b = ss__backing_name(e.backing);
        *o = (ss_obj_info){ .id = e.id, .state = e.state, .size = e.size,
                            .meta_size = e.meta_size, .refs = e.refs,
                            .node = e.node >= 0 ? e.node : -1, .uid = e.uid,
                            .flags = (e.flags & SS_LISTF_CREATOR) ? SS_LIFETIME_CREATOR : 0u };
        strncpy(o->backing, b, sizeof(o->backing) - 1);
    }
    *cursor = rep.next_cursor;
    rc = (int)rep.n;
out:
    ss__cl_end(c, &s);
    return rc;
}

SS_API int ss_stats_get(ss_client *c, ss_stats *out)
{
    ss__cl_slot s;
    ss__msg_hdr h;
    struct iovec iov[1] = { { &h, sizeof(h) } };
    int rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!out || out->size != sizeof(*out) || out->version != SS_STATS_VERSION)
        return -EINVAL;
    rc = ss__cl_call(c, &s, SS_MSG_STATS, iov, 1, NULL);
    if (rc == 0)
        rc = ss__cl_status(&s);
    if (rc == 0)
        memcpy(out, s.buf + SS_CL_HDR, sizeof(*out));
    ss__cl_end(c, &s);
    return rc;
}

/* -------------------------------------------------------------- events */

#define CL_EVENT_MASK (SS_EVENT_SEALED | SS_EVENT_DELETED)

SS_API int ss_subscribe(ss_client *c, unsigned mask, int *fd)
{
    ss__rep_hello hello;
    ss__msg_hdr h;
    ss__req_subscribe r = { .mask = mask };
    struct iovec iov[2] = { { &h, sizeof(h) }, { &r, sizeof(r) } };
    ss__cl_slot *s;
    int sfd, rc = ss__cl_enter(c);

    if (rc < 0)
        return rc;
    if (!fd || mask == 0 || (mask & ~CL_EVENT_MASK))
        return -EINVAL;
    rc = ss__cl_open(c->path, &sfd, &hello);
    if (rc < 0)
        return rc;
    ss__proto_hdr(&h, SS_MSG_SUBSCRIBE, 2, sizeof(h) + sizeof(r), 0, 0);
    rc = ss__cl_sendv(sfd, iov, 2);
    if (rc < 0)
        goto fail;
    rc = ss__cl_wait_reply(sfd);
    if (rc < 0)
        goto fail;
    s = malloc(sizeof(*s));
    if (!s) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = ss__cl_recv(sfd, s, 0);
    if (rc == 0) {
        ss__cl_close_fds(s->fds, s->nfds);
        rc = ss__proto_check_reply(s->buf, s->len, s->nfds);
        if (rc >= 0) {
            memcpy(&h, s->buf, sizeof(h));
            rc = (h.type != SS_MSG_SUBSCRIBE || h.req_id != 2) ? -SS_E_PROTO : h.status;
        }
    }
    free(s);
    if (rc < 0)
        goto fail;
    *fd = sfd;
    return 0;
fail:
    ss__sys_close(sfd);
    return rc;
}

SS_API int ss_event_next(int fd, ss_event *ev)
{
    /* an event is small: a buffer a little larger shows a longer message
     * as truncated, and room for one fd shows that any came at all */
    _Alignas(16) unsigned char buf[SS_CL_HDR + sizeof(ss__msg_event) + 64];
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = { buf, sizeof(buf) };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
    ss__msg_event e;
    ssize_t n;
    int rc;

    if (fd < 0 || !ev)
        return -EINVAL;
    n = ss__sys_recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return (n == -EAGAIN || n == -EWOULDBLOCK) ? 0 : (int)n;
    if (m.msg_controllen > 0) {
        /* the store never sends an fd with an event: close what came */
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
            if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
                int f;
                memcpy(&f, CMSG_DATA(h), sizeof(f));
                ss__sys_close(f);
            }
        return -SS_E_PROTO;
    }
    if (n == 0)
        return -ECONNRESET; /* the store dropped us (or went away) */
    if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return -SS_E_PROTO;
    rc = ss__proto_check_reply(buf, (size_t)n, 0);
    if (rc < 0)
        return rc;
    if (rc != SS_MSG_EVENT)
        return -SS_E_PROTO;
    memcpy(&e, buf + SS_CL_HDR, sizeof(e));
    *ev = (ss_event){ .type = e.type, .id = e.id, .size = e.size };
    return 1;
}

SS_API void ss_unsubscribe(int fd)
{
    if (fd >= 0)
        ss__sys_close(fd);
}
