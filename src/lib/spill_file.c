/* SPDX-License-Identifier: MIT */
/*
 * Spill files: the record format, its checksum, the directory and the
 * synchronous reader used by scan; building a batch of fused records (run
 * by a worker). The asynchronous engine is spill.c. Calls nothing else of
 * the engine: every other spill file may call it, from any thread (it
 * keeps no state).
 *
 * Format (spill.h ss__spill_rec has the field table). A spill file is a
 * sequence of records; each record is
 *
 *   offset 0          128-byte header (magic "SSPL", version, sizes, id,
 *                     seq, XXH64 of data and of meta, XXH64 of the header)
 *   offset 128        meta_size bytes of meta
 *   offset data_off   data_size bytes of data
 *   offset rec_len    the next record
 *
 * with zeros in the gaps. rec_len and record offsets are multiples of 128.
 * A file of its own (one large object) has data_off and rec_len multiples
 * of 4096, so the data can go to and from page-aligned memory with O_DIRECT;
 * its length is exactly rec_len (fallocated up front). A fused file is
 * written in batches, each a multiple of 4096 long and starting at a
 * multiple of 4096; a PAD record fills each batch to its end.
 *
 * Why a checksum per record and a hash over the header: a reader trusts
 * rec_len only after the header hash matches, so damage inside a header
 * cannot send it off into the data; damage to the data or meta costs that
 * object alone. After a damaged header the reader looks for the next good
 * header at 128-byte steps (every record starts on one), so a damaged
 * header costs its own record only; the bytes in between are reported as
 * one damaged region. (Only there can bytes inside an object's data be
 * taken for a header, and only if they are a whole valid header, hash
 * included: a spilled spill file, say.) XXH64 runs at ~24 GB/s here: it
 * detects damage, not forgery.
 *
 * Durability: a new file is written as "<id>.tmp", fdatasync'ed, renamed to
 * "<id>.spill" and the directory fsync'ed; so a ".spill" name means the
 * first batch (or the whole object) is on disk, and a crash leaves at most a
 * ".tmp" file, which scan deletes. Later batches of a fused file are
 * appended and fdatasync'ed; a crash in the middle leaves a torn tail, which
 * fails its checksums and is reported and dropped.
 *
 * Deleting a record in a fused file overwrites its `tomb` field alone
 * (outside the header hash) with SS_SPILL_TOMB and fdatasyncs.
 */
#include "spill_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include "sys.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef RAMFS_MAGIC
#define RAMFS_MAGIC 0x858458f6
#endif

/* ------------------------------------------------------------ XXH64 */

/* The xxHash 64-bit algorithm (Yann Collet, BSD-2), written from its
 * specification; t_spill checks it against reference vectors. */
#define XP1 0x9E3779B185EBCA87ull
#define XP2 0xC2B2AE3D27D4EB4Full
#define XP3 0x165667B19E3779F9ull
#define XP4 0x85EBCA77C2B2AE63ull
#define XP5 0x27D4EB2F165667C5ull

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t xround(uint64_t acc, uint64_t in)
{
    acc += in * XP2;
    acc = rotl64(acc, 31);
    return acc * XP1;
}

static inline uint64_t xmerge(uint64_t acc, uint64_t v)
{
    acc ^= xround(0, v);
    return acc * XP1 + XP4;
}

void ss__xxh64_init(ss__xxh64 *st, uint64_t seed)
{
    st->v[0] = seed + XP1 + XP2;
    st->v[1] = seed + XP2;
    st->v[2] = seed;
    st->v[3] = seed - XP1;
    st->total = 0;
    st->seed = seed;
    st->tail = NULL;
    st->tail_len = 0;
}

void ss__xxh64_update(ss__xxh64 *st, const void *in, size_t n)
{
    const uint8_t *p = in;
    size_t stripes = n / 32;
    uint64_t v0 = st->v[0], v1 = st->v[1], v2 = st->v[2], v3 = st->v[3];

    SS_ASSERT(st->tail_len == 0); /* only the last update may be ragged */
    for (size_t i = 0; i < stripes; i++, p += 32) {
        v0 = xround(v0, rd64(p));
        v1 = xround(v1, rd64(p + 8));
        v2 = xround(v2, rd64(p + 16));
        v3 = xround(v3, rd64(p + 24));
    }
    st->v[0] = v0;
    st->v[1] = v1;
    st->v[2] = v2;
    st->v[3] = v3;
    st->total += n;
    st->tail = p;
    st->tail_len = n % 32;
}

uint64_t ss__xxh64_digest(const ss__xxh64 *st)
{
    const uint8_t *p = st->tail, *end = st->tail + st->tail_len;
    uint64_t h;

    if (st->total >= 32) {
        h = rotl64(st->v[0], 1) + rotl64(st->v[1], 7) + rotl64(st->v[2], 12) +
            rotl64(st->v[3], 18);
        for (int i = 0; i < 4; i++)
            h = xmerge(h, st->v[i]);
    } else {
        h = st->seed + XP5;
    }
    h += st->total;
    while (end - p >= 8) {
        h ^= xround(0, rd64(p));
        h = rotl64(h, 27) * XP1 + XP4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)rd32(p) * XP1;
        h = rotl64(h, 23) * XP2 + XP3;
        p += 4;
    }
    while (p < end) {
        h ^= *p++ * XP5;
        h = rotl64(h, 11) * XP1;
    }
    h ^= h >> 33;
    h *= XP2;
    h ^= h >> 29;
    h *= XP3;
    h ^= h >> 32;
    return h;
}

uint64_t ss__spill_hash64(const void *p, size_t len, uint64_t seed)
{
    ss__xxh64 st;

    ss__xxh64_init(&st, seed);
    ss__xxh64_update(&st, p, len);
    return ss__xxh64_digest(&st);
}

/* ----------------------------------------------------------- records */

void ss__spill_rec_fill(ss__spill_rec *r, uint32_t flags, const ss_id *id, uint32_t uid,
                        uint32_t meta_size, uint64_t data_size, uint32_t data_off,
                        uint64_t rec_len, uint64_t seq, uint64_t data_hash,
                        uint64_t meta_hash)
{
    memset(r, 0, sizeof(*r));
    r->magic = SS_SPILL_MAGIC;
    r->version = SS_SPILL_VERSION;
    r->hdr_size = sizeof(*r);
    r->flags = flags;
    r->meta_size = meta_size;
    r->data_size = data_size;
    r->rec_len = rec_len;
    r->data_off = data_off;
    r->data_hash = data_hash;
    r->meta_hash = meta_hash;
    r->seq = seq;
    r->uid = uid;
    if (id)
        memcpy(r->id, id->b, SS_ID_SIZE);
    r->hdr_hash = ss__spill_hash64(r, offsetof(ss__spill_rec, hdr_hash), SS_SPILL_SEED);
}

int ss__spill_rec_check(const ss__spill_rec *r, const char **why)
{
    const char *w = NULL;

    if (r->magic != SS_SPILL_MAGIC)
        w = "bad magic";
    else if (r->version < SS_SPILL_VERSION_MIN || r->version > SS_SPILL_VERSION ||
             r->hdr_size != sizeof(*r))
        w = "unknown format version";
    else if (r->hdr_hash != ss__spill_hash64(r, offsetof(ss__spill_rec, hdr_hash),
                                             SS_SPILL_SEED))
        w = "header checksum mismatch";
    else if ((r->flags & (SS_SPILL_REC_OBJECT | SS_SPILL_REC_PAD)) == 0 ||
             (r->flags & SS_SPILL_REC_OBJECT && r->flags & SS_SPILL_REC_PAD) ||
             r->flags & ~(uint32_t)(SS_SPILL_REC_OBJECT | SS_SPILL_REC_PAD |
                                    SS_SPILL_REC_FUSED | SS_SPILL_REC_BOUND) ||
             (r->flags & SS_SPILL_REC_BOUND && !(r->flags & SS_SPILL_REC_OBJECT)))
        w = "bad flags";
    else if (r->meta_size > SS_SPILL_META_MAX ||
             (uint64_t)r->hdr_size + r->meta_size > r->data_off ||
             r->data_size > UINT64_MAX / 2 || r->data_off + r->data_size > r->rec_len ||
             r->rec_len % SS_SPILL_REC_ALIGN != 0)
        w = "inconsistent sizes";
    else if (r->tomb != 0 && r->tomb != SS_SPILL_TOMB)
        w = "damaged tombstone";
    if (why)
        *why = w;
    return w ? -EBADMSG : 0;
}

uint32_t ss__spill_rec_uid(const ss__spill_rec *r)
{
    return r->version >= 2 ? r->uid : SS_UID_UNKNOWN;
}

void ss__spill_name(char buf[SS_SPILL_NAME_MAX], uint64_t file, bool tmp)
{
    snprintf(buf, SS_SPILL_NAME_MAX, "%016llx.%s", (unsigned long long)file,
             tmp ? "tmp" : "spill");
}

int ss__spill_parse_name(const char *name, uint64_t *file, bool *tmp)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 16; i++) {
        char c = name[i];

        if (c >= '0' && c <= '9')
            v = v << 4 | (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v << 4 | (uint64_t)(c - 'a' + 10);
        else
            return -EINVAL;
    }
    if (strcmp(name + 16, ".spill") == 0)
        *tmp = false;
    else if (strcmp(name + 16, ".tmp") == 0)
        *tmp = true;
    else
        return -EINVAL;
    *file = v;
    return 0;
}

/* ------------------------------------------------------ fused batches */

/* On the worker: every record (header with its checksums, meta, data,
 * zeros between), then a PAD record to the end of the last block. */
void ss__sp_batch_build(struct ss__sp_batch *b)
{
    uint64_t len = SS_ALIGN_UP(b->used, SS_SP_BLK), gap = len - b->used;

    for (uint32_t i = 0; i < b->n; i++) {
        const struct ss__sp_brec *br = &b->r[i];
        uint8_t *p = b->buf + br->off;

        memset(p, 0, br->rec_len);
        if (br->meta_size)
            memcpy(p + sizeof(ss__spill_rec), b->meta + br->meta_off, br->meta_size);
        if (br->size)
            memcpy(p + br->data_off, br->src, br->size);
        ss__spill_rec_fill((ss__spill_rec *)p,
                           SS_SPILL_REC_OBJECT | SS_SPILL_REC_FUSED | br->rflags, &br->id,
                           br->uid, br->meta_size, br->size, br->data_off, br->rec_len, br->seq,
                           ss__spill_hash64(p + br->data_off, br->size, SS_SPILL_SEED),
                           ss__spill_hash64(p + sizeof(ss__spill_rec), br->meta_size,
                                            SS_SPILL_SEED));
    }
    if (gap) {
        uint8_t *p = b->buf + b->used;

        memset(p, 0, gap);
        ss__spill_rec_fill((ss__spill_rec *)p, SS_SPILL_REC_PAD | SS_SPILL_REC_FUSED, NULL, 0, 0,
                           gap - sizeof(ss__spill_rec), sizeof(ss__spill_rec), gap, 0, 0, 0);
    }
}

/* --------------------------------------------------------- directory */

int ss__spill_dir_open(const char *path, int *dirfd_out, int *lockfd_out)
{
    struct stat sb;
    int dfd, lfd, rc;

    if (!path || !*path)
        return -EINVAL;
    /* Only the last component: a missing parent is a configuration error
     * the user should see, not something to paper over. */
    rc = ss__sys_mkdirat(AT_FDCWD, path, 0700);
    if (rc < 0 && rc != -EEXIST)
        return rc;
    dfd = ss__sys_open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (dfd < 0)
        return dfd == -ELOOP ? -ENOTDIR : dfd;
    rc = ss__sys_fstat(dfd, &sb);
    if (rc < 0)
        goto fail_dir;
    /* Spilled objects are readable data of this user: refuse a directory
     * others can list or write (they could plant or read spill files). */
    if (sb.st_uid != ss__sys_geteuid()) {
        ss__log_error("spill: directory %s is owned by uid %u, not %u: refused", path,
                      (unsigned)sb.st_uid, (unsigned)ss__sys_geteuid());
        rc = -EPERM;
        goto fail_dir;
    }
    if (sb.st_mode & 077) {
        ss__log_error("spill: directory %s has mode %04o; it must give no access to "
                      "group or others (chmod 700): refused",
                      path, (unsigned)(sb.st_mode & 07777));
        rc = -EPERM;
        goto fail_dir;
    }
    lfd = ss__sys_openat(dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0) {
        rc = lfd;
        goto fail_dir;
    }
    rc = ss__sys_flock(lfd, LOCK_EX | LOCK_NB);
    if (rc < 0) {
        if (rc == -EWOULDBLOCK) {
            rc = -EBUSY;
            ss__log_error("spill: directory %s is in use by another store", path);
        }
        ss__sys_close(lfd);
        goto fail_dir;
    }
    *dirfd_out = dfd;
    *lockfd_out = lfd;
    return 0;

fail_dir:
    ss__sys_close(dfd);
    return rc;
}

int ss__spill_dir_each(int dirfd, ss__spill_dir_fn fn, void *arg)
{
    DIR *d = ss__sys_dir_reopen(dirfd); /* from the start, close-on-exec */
    struct dirent *e;
    int rc = 0;

    if (ss__is_err(d))
        return ss__ptr_err(d);
    while (rc >= 0 && ss__sys_readdir(d, &e) == 1) {
        uint64_t id;
        bool tmp;

        if (ss__spill_parse_name(e->d_name, &id, &tmp) == 0)
            rc = fn(arg, id, tmp, e->d_name);
    }
    ss__sys_closedir(d);
    return rc < 0 ? rc : 0;
}

int ss__spill_dio_probe(int dfd, uint32_t *align)
{
    char name[48];
    struct statfs fs;
    struct statx sx;
    uint32_t a = 0;
    bool known = false;
    void *buf = NULL;
    int fd, fd2, rc = 0;

    *align = 0;
    snprintf(name, sizeof(name), ".probe-%ld", (long)ss__sys_getpid());
    ss__sys_unlinkat(dfd, name, 0); /* a leftover of ours from a crash */
    fd = ss__sys_openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = fd;
        /* a full disk is a runtime condition, not a reason to refuse */
        if (rc == -ENOSPC || rc == -EDQUOT) {
            ss__log_warn("spill: directory full at open (%s): buffered I/O",
                         ss_strerror(rc));
            return 0;
        }
        return rc;
    }
    /* tmpfs accepts O_DIRECT on recent kernels but it only adds overhead
     * there: the data is page cache either way */
    if (ss__sys_fstatfs(fd, &fs) == 0 &&
        ((unsigned long)fs.f_type == TMPFS_MAGIC || (unsigned long)fs.f_type == RAMFS_MAGIC))
        goto out;
    if (ss__sys_statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN)) {
        known = true;
        if (sx.stx_dio_mem_align == 0 || sx.stx_dio_offset_align == 0)
            goto out; /* the filesystem says: no O_DIRECT */
        a = sx.stx_dio_mem_align > sx.stx_dio_offset_align ? sx.stx_dio_mem_align
                                                            : sx.stx_dio_offset_align;
        if (a > SS_SPILL_BLOCK || !SS_IS_POW2(a)) {
            ss__log_info("spill: O_DIRECT alignment %u is above %u: buffered I/O", a,
                         SS_SPILL_BLOCK);
            a = 0;
            goto out;
        }
    }
    /* Either way, see that an aligned O_DIRECT write really works. */
    fd2 = ss__sys_openat(dfd, name, O_RDWR | O_DIRECT | O_CLOEXEC, 0);
    if (fd2 < 0) {
        a = 0;
        goto out;
    }
    if (posix_memalign(&buf, SS_SPILL_BLOCK, SS_SPILL_BLOCK) == 0) {
        ssize_t n;

        memset(buf, 0, SS_SPILL_BLOCK);
        n = ss__sys_pwrite(fd2, buf, SS_SPILL_BLOCK, 0);
        if (n == (ssize_t)SS_SPILL_BLOCK)
            a = known ? a : SS_SPILL_BLOCK;
        else if (n < 0 && n != -EINVAL && known)
            ; /* ENOSPC and such: trust what statx said */
        else
            a = 0;
        free(buf);
    } else {
        a = 0;
    }
    ss__sys_close(fd2);
out:
    ss__sys_close(fd);
    ss__sys_unlinkat(dfd, name, 0);
    *align = a;
    return 0;
}

/* --------------------------------------------------------------- walk */

#define WIN (4u * 1024 * 1024) /* scan read window */
/*
 * The longest fused record: header, the largest meta, the largest small
 * object, rounded. After a damaged header in a fused file the next good one
 * is at most this far on; a file that shows none for this long is garbage
 * from there (or a file of its own whose header is damaged: its object is
 * lost either way), and the rest of it is not read.
 */
#define FUSED_REC_MAX (SS_SPILL_REC_ALIGN + SS_SPILL_META_MAX + SS_SP_MAX_SMALL_MAX + SS_SP_BLK)
#define RESYNC_MAX FUSED_REC_MAX
/* First reads of a file: a header and the largest meta, not more (the rest
 * of a file of its own is its object's data); a fused file gets WIN. */
#define WIN_FIRST (128u * 1024)

struct win {
    int fd;
    uint8_t *buf;
    uint64_t start, len; /* bytes [start, start+len) of the file are in buf */
    uint64_t size;       /* file size */
    uint64_t chunk;      /* bytes per read: WIN_FIRST, WIN once fused */
    int err;             /* first read error */
    ss__spill_walk_ctl *ctl;
};

/* Bytes [off, off+n) (n <= w->chunk - 4096), read in if needed; NULL when
 * the file ends first or a read fails (w->err). */
static const uint8_t *win_get(struct win *w, uint64_t off, uint64_t n)
{
    if (off + n > w->size)
        return NULL;
    if (off < w->start || off + n > w->start + w->len) {
        uint64_t start = off & ~(uint64_t)(SS_SPILL_BLOCK - 1);
        uint64_t got = 0;
        /* never past the end: a giant file is read only where needed */
        uint64_t want = w->size - start < w->chunk ? SS_ALIGN_UP(w->size - start, SS_SP_BLK)
                                                   : w->chunk;

        while (got < want) {
            ssize_t r = ss__sys_pread(w->fd, w->buf + got, want - got, start + got);

            if (r < 0) { /* EINTR is retried in there */
                w->err = (int)r;
                w->len = 0;
                return NULL;
            }
            if (r == 0)
                break;
            got += (uint64_t)r;
        }
        if (w->ctl)
            atomic_fetch_add_explicit(&w->ctl->bytes, got, memory_order_relaxed);
        w->start = start;
        w->len = got;
        if (off + n > start + got)
            return NULL;
    }
    return w->buf + (off - w->start);
}

static void log_region(const char *name, uint64_t from, uint64_t to)
{
    ss__log_error("spill: file %s: bytes %llu..%llu are unreadable (no valid record "
                  "header): any objects in them are lost",
                  name, (unsigned long long)from, (unsigned long long)to);
}

/* Open a spill file for reading without ever blocking: only a regular file
 * (a FIFO would block open, a device could do anything), checked before
 * the open and again on the fd (it may have been swapped in between). */
static int walk_open(int dirfd, const char *name, uint32_t dio_align, struct stat *sb)
{
    struct stat pre;
    int fd, flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;
    int rc = ss__sys_fstatat(dirfd, name, &pre, AT_SYMLINK_NOFOLLOW);

    if (rc < 0)
        return rc;
    if (!S_ISREG(pre.st_mode))
        return -ENODEV;
    fd = ss__sys_openat(dirfd, name, flags | (dio_align ? O_DIRECT : 0), 0);
    if (fd == -EINVAL && dio_align)
        fd = ss__sys_openat(dirfd, name, flags, 0);
    if (fd < 0)
        return fd == -ELOOP ? -ENODEV : fd;
    rc = ss__sys_fstat(fd, sb);
    if (rc < 0) {
        ss__sys_close(fd);
        return rc;
    }
    if (!S_ISREG(sb->st_mode) || sb->st_ino != pre.st_ino || sb->st_dev != pre.st_dev) {
        ss__sys_close(fd);
        return -ENODEV;
    }
    return fd;
}

static bool walk_stopped(const struct win *w)
{
    return w->ctl && atomic_load_explicit(&w->ctl->stop, memory_order_relaxed);
}

/* An object record's meta (copied into meta) and, for a fused record, its
 * data check out against their hashes. The data of an object of its own,
 * however large, is not read here: its checksum is checked when it is
 * restored. */
static bool walk_object_ok(struct win *w, const ss__spill_rec *r, uint64_t off, uint8_t *meta)
{
    const uint8_t *p = win_get(w, off + r->hdr_size, r->meta_size);
    uint64_t pos, left;
    ss__xxh64 st;

    if (!p || ss__spill_hash64(p, r->meta_size, SS_SPILL_SEED) != r->meta_hash)
        return false;
    memcpy(meta, p, r->meta_size);
    if (!(r->flags & SS_SPILL_REC_FUSED))
        return true;
    /* in the window already: checking it costs no I/O */
    ss__xxh64_init(&st, SS_SPILL_SEED);
    pos = off + r->data_off;
    left = r->data_size;
    while (left) {
        /* whole 32-byte stripes until the last piece */
        uint64_t n = left < WIN - SS_SPILL_BLOCK ? left : WIN - SS_SPILL_BLOCK;

        p = win_get(w, pos, n);
        if (!p)
            return false;
        ss__xxh64_update(&st, p, n);
        if (n == left)
            break;
        pos += n;
        left -= n;
    }
    return ss__xxh64_digest(&st) == r->data_hash;
}

void ss__spill_rec_loc(const ss__spill_rec *r, uint64_t file, uint64_t off, ss__spill_loc *loc)
{
    memset(loc, 0, sizeof(*loc));
    loc->file = file;
    loc->offset = off;
    loc->size = r->data_size;
    loc->seq = r->seq;
    loc->rec_len = r->rec_len;
    loc->meta_size = r->meta_size;
    loc->data_off = r->data_off;
    memcpy(loc->id.b, r->id, SS_ID_SIZE);
    loc->uid = ss__spill_rec_uid(r);
    loc->bound = (r->flags & SS_SPILL_REC_BOUND) != 0;
}

/* No room for a header at off: a read error, or a torn tail (unless the
 * bytes are part of a damaged region, reported by the caller). */
static void walk_short(const struct win *w, const char *name, uint64_t off, bool in_bad,
                       ss__spill_walk_res *res)
{
    if (w->err) {
        ss__log_error("spill: file %s: read at %llu failed: %s; the rest of the file is "
                      "lost", name, (unsigned long long)off, ss_strerror(w->err));
        res->damaged++;
    } else if (!in_bad) {
        ss__log_error("spill: file %s: %llu trailing bytes at %llu are too short for a "
                      "record (torn write): dropped", name,
                      (unsigned long long)(w->size - off), (unsigned long long)off);
        res->damaged++;
    }
}

int ss__spill_walk(int dirfd, const char *name, uint64_t file, uint32_t dio_align,
                   ss__spill_walk_ctl *ctl, ss__spill_walk_fn fn, void *arg,
                   ss__spill_walk_res *res)
{
    struct win w = { .fd = -1, .ctl = ctl, .chunk = WIN_FIRST };
    uint8_t *meta = NULL;
    struct stat sb;
    uint64_t off = 0, bad_start = UINT64_MAX;
    char idhex[SS_ID_HEX_LEN];
    int rc = 0;

    memset(res, 0, sizeof(*res));
    w.fd = walk_open(dirfd, name, dio_align, &sb);
    if (w.fd < 0)
        return w.fd;
    w.size = res->size = (uint64_t)sb.st_size;
    if (posix_memalign((void **)&w.buf, SS_SPILL_BLOCK, WIN) != 0 ||
        !(meta = malloc(SS_SPILL_META_MAX))) {
        rc = -ENOMEM;
        goto out;
    }

    while (off < w.size) {
        const uint8_t *p;
        ss__spill_rec r;
        const char *why;
        ss__spill_loc loc;

        if (walk_stopped(&w)) {
            rc = -ECANCELED;
            goto out;
        }
        if (bad_start != UINT64_MAX && off - bad_start > RESYNC_MAX) {
            /* no record for longer than any fused record: garbage */
            log_region(name, bad_start, w.size);
            res->damaged++;
            bad_start = UINT64_MAX;
            break;
        }
        p = win_get(&w, off, sizeof(ss__spill_rec));
        if (!p) {
            walk_short(&w, name, off, bad_start != UINT64_MAX, res);
            break;
        }
        memcpy(&r, p, sizeof(r));
        if (ss__spill_rec_check(&r, &why) < 0 ||
            (r.flags & SS_SPILL_REC_FUSED && r.rec_len > FUSED_REC_MAX)) {
            if (bad_start == UINT64_MAX)
                bad_start = off;
            off += SS_SPILL_REC_ALIGN;
            continue;
        }
        if (bad_start != UINT64_MAX) {
            log_region(name, bad_start, off);
            res->damaged++;
            bad_start = UINT64_MAX;
        }
        if (r.seq > res->max_seq)
            res->max_seq = r.seq;
        if (r.flags & SS_SPILL_REC_FUSED) {
            res->fused = true;
            w.chunk = WIN; /* records back to back: read it all */
        }
        memcpy(idhex, "-", 2);
        if (r.flags & SS_SPILL_REC_OBJECT)
            ss__id_hex((const ss_id *)r.id, idhex);
        if (r.rec_len > w.size - off) {
            ss__log_error("spill: file %s: record of object %s at %llu is truncated "
                          "(needs %llu bytes, only %llu left): lost", name, idhex,
                          (unsigned long long)off, (unsigned long long)r.rec_len,
                          (unsigned long long)(w.size - off));
            res->damaged++;
            break;
        }
        if (r.flags & SS_SPILL_REC_PAD) {
            off += r.rec_len;
            continue;
        }
        if (r.tomb == SS_SPILL_TOMB) {
            res->good++;
            res->dead++;
            off += r.rec_len;
            continue;
        }
        if (!walk_object_ok(&w, &r, off, meta)) {
            ss__log_error("spill: file %s: object %s at %llu (%llu bytes): %s: lost", name,
                          idhex, (unsigned long long)off, (unsigned long long)r.data_size,
                          w.err ? "read error" : "checksum mismatch (data damaged)");
            res->damaged++;
            w.err = 0;
            off += r.rec_len;
            continue;
        }
        res->good++;
        ss__spill_rec_loc(&r, file, off, &loc);
        if (fn) {
            rc = fn(arg, &loc, meta);
            if (rc < 0)
                goto out;
        }
        off += r.rec_len;
    }
    if (bad_start != UINT64_MAX) {
        log_region(name, bad_start, w.size);
        res->damaged++;
    }
    rc = 0;
out:
    free(meta);
    free(w.buf);
    ss__sys_close(w.fd);
    return rc;
}
