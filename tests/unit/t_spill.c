/* SPDX-License-Identifier: MIT */
/*
 * The spill engine (src/lib/spill*.c): objects of many sizes
 * spilled from read-only mappings of sealed memfds and restored bit-exact,
 * on ext4 (/tmp here: O_DIRECT) and on a tmpfs mounted for the test
 * (buffered), with io_uring and with the worker-thread fallback; deletes,
 * tombstones and the reclaiming of dead fused files; a fresh engine's scan
 * after deletes, after a corrupted byte and after a truncation; disk full
 * (ENOSPC) on a small tmpfs, and recovery once space is freed; injected I/O
 * errors; the record layout and the XXH64 checksum pinned; a scan among a
 * FIFO, a symlink, a directory and 64 GiB sparse files named like spill
 * files; the scan in its thread, cancelled while stalled; a store's scan
 * gate (requests held while its scan is, answered after it); failed
 * spills that leave no record a scan accepts, or report it as a copy; a
 * store's DELETE that waits for every removal of an older copy of its id
 * (a scan's duplicate, an evicted copy, a failed spill's record) before it
 * answers, checked across a SIGKILL of a store in a child process; the
 * directory listing's stream fd close-on-exec from its first moment.
 *
 * Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the tmpfs cases
 * skip with that reason. io_uring cases skip when the kernel refuses rings
 * (-ENOSYS/-EPERM/-EINVAL). Mounts are undone at exit, also after failures.
 */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t_helpers.h"

#include "spill_int.h" /* white-box: the streaming hash and record helpers */

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define PAGE 4096ull

static bool have_uring;
static bool can_mount = true; /* until a mount says EPERM */
static const char *no_mount_why = "mounting a tmpfs needs CAP_SYS_ADMIN";

/* ---------------------------------------------------------- mounts */

static char mounts[16][256];
static int nmounts;

static void umount_all(void)
{
    while (nmounts > 0) {
        nmounts--;
        if (umount2(mounts[nmounts], MNT_DETACH) < 0)
            fprintf(stderr, "t_spill: umount %s: %s\n", mounts[nmounts], strerror(errno));
    }
}

static void umount_one(const char *path)
{
    for (int i = 0; i < nmounts; i++) {
        if (strcmp(mounts[i], path) == 0) {
            assert_int_equal(umount2(path, MNT_DETACH), 0);
            memmove(mounts[i], mounts[i + 1], (size_t)(nmounts - i - 1) * sizeof(mounts[0]));
            nmounts--;
            return;
        }
    }
}

/* A tmpfs of `size` at a fresh directory under t_tmpdir(); NULL after a
 * skip-worthy EPERM (can_mount goes false). */
static const char *mount_tmpfs(const char *tag, const char *size)
{
    static char path[8][256];
    static int n;
    char opts[64];
    char *p = path[n++ % 8];

    snprintf(p, 256, "%s/mnt-%s", t_tmpdir(), tag);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
    if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
        if (errno == EPERM) {
            can_mount = false;
            return NULL;
        }
        fail_msg("mount tmpfs at %s: %s", p, strerror(errno));
    }
    assert_true(nmounts < 16);
    snprintf(mounts[nmounts++], 256, "%s", p);
    return p;
}

/* ---------------------------------------------------------- objects */

struct obj {
    ss_id id;
    uint64_t size;
    const uint8_t *data; /* read-only mapping of the sealed memfd (+shift) */
    uint8_t *map;
    uint64_t maplen;
    int fd;
    uint8_t meta[256];
    uint32_t meta_size;
    uint64_t seed;
    uint32_t uid;        /* the creator's uid recorded with it */
    ss__spill_loc loc;
    bool live;
};

static void fill(uint8_t *p, uint64_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

    for (uint64_t i = 0; i < n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, n - i < 8 ? n - i : 8);
    }
}

/* A sealed memfd of `size` bytes (pattern from seed), mapped read-only;
 * shift > 0 places the object that many bytes into the mapping. */
static void obj_make(struct obj *o, uint32_t idx, uint64_t size, uint32_t meta_size,
                     uint64_t shift)
{
    uint8_t *rw;

    memset(o, 0, sizeof(*o));
    o->id.b[0] = 0x5a;
    memcpy(o->id.b + 1, &idx, sizeof(idx));
    o->id.b[19] = (uint8_t)(size * 7);
    o->size = size;
    o->seed = idx * 1000003ull + size;
    o->uid = 2000 + idx;
    o->meta_size = meta_size;
    fill(o->meta, meta_size, o->seed ^ 0xabc);
    o->maplen = SS_ALIGN_UP(size + shift ? size + shift : 1, PAGE);
    o->fd = memfd_create("t_spill", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    assert_true(o->fd >= 0);
    assert_int_equal(ftruncate(o->fd, (off_t)o->maplen), 0);
    rw = mmap(NULL, o->maplen, PROT_READ | PROT_WRITE, MAP_SHARED, o->fd, 0);
    assert_true(rw != MAP_FAILED);
    fill(rw + shift, size, o->seed);
    assert_int_equal(munmap(rw, o->maplen), 0);
    assert_int_equal(fcntl(o->fd, F_ADD_SEALS,
                           F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL), 0);
    o->map = mmap(NULL, o->maplen, PROT_READ, MAP_SHARED, o->fd, 0);
    assert_true(o->map != MAP_FAILED);
    o->data = o->map + shift;
}

static void obj_free(struct obj *o)
{
    if (o->map) {
        munmap(o->map, o->maplen);
        close(o->fd);
        o->map = NULL;
    }
}

/* ------------------------------------------------------------ engine */

static ss__spill *eng_open(const char *dir, unsigned flags)
{
    ss__spill_params p = { .dir = dir, .flags = flags };
    ss__spill *sp = NULL;

    t_assert_ok(ss__spill_open(&sp, &p));
    assert_non_null(sp);
    return sp;
}

/* Exactly n completions (60 s at most), then none more. */
static void collect(ss__spill *sp, ss__spill_done *out, int n)
{
    int got = 0, waited = 0;
    ss__spill_done extra[4];

    while (got < n) {
        struct pollfd pfd = { .fd = ss__spill_event_fd(sp), .events = POLLIN };
        int k;

        if (poll(&pfd, 1, 1000) == 0 && ++waited > 60)
            fail_msg("only %d of %d spill completions after 60 s", got, n);
        k = ss__spill_reap(sp, out + got, n - got);
        t_assert_ok(k);
        got += k;
    }
    t_assert_ok(ss__spill_wait(sp, 60000));
    assert_int_equal(ss__spill_reap(sp, extra, 4), 0);
}

/* Spill objs[0..n) (status checked against want[] when given, else 0). */
static void spill_all(ss__spill *sp, struct obj *objs, int n, const int *want)
{
    ss__spill_done d[64];

    assert_true(n <= 64);
    for (int i = 0; i < n; i++)
        t_assert_ok(ss__spill_write(sp, &objs[i].id, objs[i].uid, objs[i].data, objs[i].size, objs[i].meta,
                                    objs[i].meta_size, (uint64_t)i));
    collect(sp, d, n);
    for (int i = 0; i < n; i++) {
        struct obj *o = &objs[d[i].cookie];

        assert_int_equal(d[i].op, SS_SPILL_OP_WRITE);
        if (want)
            t_assert_err(d[i].status, want[d[i].cookie]);
        else
            t_assert_ok(d[i].status);
        if (d[i].status == 0) {
            assert_memory_equal(d[i].loc.id.b, o->id.b, SS_ID_SIZE);
            assert_int_equal(d[i].loc.size, o->size);
            assert_int_equal(d[i].loc.meta_size, o->meta_size);
            assert_int_equal(d[i].loc.uid, o->uid);
            o->loc = d[i].loc;
            o->live = true;
        }
    }
}

/* Restore one object into fresh memory; returns the completion status
 * (and checks the bytes when it is 0). */
static int restore(ss__spill *sp, const struct obj *o)
{
    uint64_t len = SS_ALIGN_UP(o->size ? o->size : 1, PAGE);
    int fd = memfd_create("t_spill-dst", MFD_CLOEXEC);
    uint8_t *dst, meta[256], *want;
    ss__spill_done d;
    int rc;

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    dst = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(dst != MAP_FAILED);
    memset(dst, 0xa5, len);
    memset(meta, 0xa5, sizeof(meta));
    t_assert_ok(ss__spill_read(sp, &o->loc, dst, meta, 7));
    collect(sp, &d, 1);
    assert_int_equal(d.op, SS_SPILL_OP_READ);
    assert_int_equal(d.cookie, 7);
    rc = d.status;
    if (rc == 0) {
        want = malloc(o->size ? o->size : 1);
        assert_non_null(want);
        fill(want, o->size, o->seed);
        if (memcmp(dst, want, o->size) != 0)
            fail_msg("restored object of %llu bytes differs", (unsigned long long)o->size);
        free(want);
        /* nothing written past the object */
        for (uint64_t i = o->size; i < len; i++)
            if (dst[i] != 0xa5)
                fail_msg("byte %llu past the object's %llu was written",
                         (unsigned long long)i, (unsigned long long)o->size);
        assert_memory_equal(meta, o->meta, o->meta_size);
        if (o->meta_size < sizeof(meta))
            assert_int_equal(meta[o->meta_size], 0xa5);
    }
    munmap(dst, len);
    close(fd);
    return rc;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    size_t sl = strlen(suffix);

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);

        if (l > sl && strcmp(e->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void file_path(char *buf, size_t n, const char *dir, uint64_t file)
{
    snprintf(buf, n, "%s/%016llx.spill", dir, (unsigned long long)file);
}

/* Scan collector: every object reported, by id. */
struct seen {
    ss__spill_loc loc[64];
    uint8_t meta[64][256];
    int n;
    int drop_every; /* return 1 for every k-th object; 0: keep all */
};

static int on_scan(void *arg, const ss__spill_loc *loc, const void *meta)
{
    struct seen *s = arg;

    assert_true(s->n < 64);
    s->loc[s->n] = *loc;
    memcpy(s->meta[s->n], meta, loc->meta_size);
    s->n++;
    return s->drop_every && s->n % s->drop_every == 0 ? 1 : 0;
}

static int seen_find(const struct seen *s, const struct obj *o)
{
    for (int i = 0; i < s->n; i++)
        if (memcmp(s->loc[i].id.b, o->id.b, SS_ID_SIZE) == 0)
            return i;
    return -1;
}

/* The scan found exactly the live objects, with their sizes and meta. */
static void check_seen(const struct seen *s, struct obj *objs, int n)
{
    int live = 0;

    for (int i = 0; i < n; i++) {
        int k = seen_find(s, &objs[i]);

        if (!objs[i].live) {
            if (k >= 0)
                fail_msg("scan reported object %d, which is gone", i);
            continue;
        }
        live++;
        if (k < 0)
            fail_msg("scan missed live object %d (%llu bytes)", i,
                     (unsigned long long)objs[i].size);
        assert_int_equal(s->loc[k].size, objs[i].size);
        assert_int_equal(s->loc[k].meta_size, objs[i].meta_size);
        assert_int_equal(s->loc[k].uid, objs[i].uid); /* the creator survives */
        assert_memory_equal(s->meta[k], objs[i].meta, objs[i].meta_size);
        objs[i].loc = s->loc[k];
    }
    assert_int_equal(s->n, live);
}

/* ------------------------------------------------------------- modes */

struct mode {
    const char *name;
    unsigned flags; /* SS_SPILL_NO_URING ... */
    bool tmpfs;     /* on a tmpfs (buffered) instead of ext4 /tmp */
};

static const struct mode M_EXT4 = { "ext4-uring", 0, false };
static const struct mode M_EXT4_FB = { "ext4-fallback", SS_SPILL_NO_URING, false };
static const struct mode M_TMPFS = { "tmpfs-uring", 0, true };
static const struct mode M_TMPFS_FB = { "tmpfs-fallback", SS_SPILL_NO_URING, true };
static const struct mode M_EXT4_SQPOLL = { "ext4-sqpoll", SS_SPILL_SQPOLL, false };
static const struct mode M_EXT4_INLINE = { "ext4-inline", SS_SPILL_INLINE_SUBMIT, false };

static int dir_seq;
static const char *mode_mnt; /* the tmpfs mode_dir mounted, if any */

/* A fresh spill directory for a mode (not yet created: the engine does). */
static const char *mode_dir(const struct mode *m, char *buf, size_t n)
{
    const char *base = t_tmpdir();
    char tag[32];

    mode_mnt = NULL;
    if (m->tmpfs) {
        snprintf(tag, sizeof(tag), "%s-%d", m->name, dir_seq);
        base = mode_mnt = mount_tmpfs(tag, "96m");
        if (!base)
            return NULL;
    }
    snprintf(buf, n, "%s/spill-%s-%d", base, m->name, dir_seq++);
    return buf;
}

/* End of a case: give the tmpfs memory back (a failed case leaves it to
 * the exit handler). */
static void mode_done(void)
{
    if (mode_mnt)
        umount_one(mode_mnt);
    mode_mnt = NULL;
}

#define MODE_SKIPS(m)                                                           \
    do {                                                                        \
        T_SKIP_IF(!((m)->flags & SS_SPILL_NO_URING) && !have_uring, "uring",   \
                  "io_uring is unavailable here");                              \
        T_SKIP_IF((m)->tmpfs && !can_mount, NULL, no_mount_why);               \
    } while (0)

/* ---------------------------------------------------------------- cases */

static void test_format(void **state)
{
    static const uint8_t abc[] = "abc";
    uint8_t b[300];
    ss__spill_rec r;
    ss_id id;
    const char *why;
    ss__xxh64 st;

    (void)state;
    /* The record layout is the on-disk format: if this fails, bump
     * SS_SPILL_VERSION. */
    assert_int_equal(sizeof(ss__spill_rec), 128);
    assert_int_equal(offsetof(ss__spill_rec, magic), 0);
    assert_int_equal(offsetof(ss__spill_rec, version), 4);
    assert_int_equal(offsetof(ss__spill_rec, hdr_size), 6);
    assert_int_equal(offsetof(ss__spill_rec, flags), 8);
    assert_int_equal(offsetof(ss__spill_rec, meta_size), 12);
    assert_int_equal(offsetof(ss__spill_rec, data_size), 16);
    assert_int_equal(offsetof(ss__spill_rec, rec_len), 24);
    assert_int_equal(offsetof(ss__spill_rec, data_off), 32);
    assert_int_equal(offsetof(ss__spill_rec, uid), 36);
    assert_int_equal(offsetof(ss__spill_rec, data_hash), 40);
    assert_int_equal(offsetof(ss__spill_rec, meta_hash), 48);
    assert_int_equal(offsetof(ss__spill_rec, seq), 56);
    assert_int_equal(offsetof(ss__spill_rec, id), 64);
    assert_int_equal(offsetof(ss__spill_rec, hdr_hash), 112);
    assert_int_equal(offsetof(ss__spill_rec, tomb), 120);
    assert_int_equal(SS_SPILL_MAGIC, 0x4c505353u);
    assert_int_equal(SS_SPILL_VERSION, 2);
    assert_int_equal(SS_SPILL_VERSION_MIN, 1);

    /* XXH64 reference vectors (xxHash 0.8.1) */
    for (int i = 0; i < 300; i++)
        b[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(ss__spill_hash64("", 0, 0), 0xef46db3751d8e999ull);
    assert_int_equal(ss__spill_hash64(abc, 3, 0), 0x44bc2cf5ad770999ull);
    assert_int_equal(ss__spill_hash64(b, 100, 0), 0xa61f8d4c170fe531ull);
    assert_int_equal(ss__spill_hash64(b, 300, 5), 0x485691db7ed1ac85ull);
    /* streaming in 32-byte multiples then a ragged tail == one shot */
    ss__xxh64_init(&st, 5);
    ss__xxh64_update(&st, b, 64);
    ss__xxh64_update(&st, b + 64, 160);
    ss__xxh64_update(&st, b + 224, 76);
    assert_int_equal(ss__xxh64_digest(&st), 0x485691db7ed1ac85ull);

    /* header fill / check, and what damage looks like */
    memset(&id, 0x11, sizeof(id));
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT, &id, 77, 10, 1000, 192, 1280, 42, 1, 2);
    t_assert_ok(ss__spill_rec_check(&r, &why));
    assert_int_equal(r.version, 2);
    assert_int_equal(ss__spill_rec_uid(&r), 77);
    r.data_size ^= 1;
    t_assert_err(ss__spill_rec_check(&r, &why), -EBADMSG);
    assert_string_equal(why, "header checksum mismatch");
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT, &id, 77, 10, 1000, 192, 1280, 42, 1, 2);
    r.tomb = SS_SPILL_TOMB; /* outside the header hash */
    t_assert_ok(ss__spill_rec_check(&r, &why));
    r.tomb = 12345;
    t_assert_err(ss__spill_rec_check(&r, &why), -EBADMSG);
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT, &id, 77, 10, 1000, 1200, 1280, 42, 1, 2);
    t_assert_err(ss__spill_rec_check(&r, &why), -EBADMSG); /* data past rec_len */
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT, &id, 77, 10, 1000, 192, 1300, 42, 1, 2);
    t_assert_err(ss__spill_rec_check(&r, &why), -EBADMSG); /* rec_len % 128 */
    /* creator-bound: an object flag, on objects only, and it reaches the loc */
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT | SS_SPILL_REC_BOUND, &id, 77, 10, 1000, 192,
                       1280, 42, 1, 2);
    t_assert_ok(ss__spill_rec_check(&r, &why));
    ss__spill_loc bl;
    ss__spill_rec_loc(&r, 5, 0, &bl);
    assert_true(bl.bound);
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT, &id, 77, 10, 1000, 192, 1280, 42, 1, 2);
    ss__spill_rec_loc(&r, 5, 0, &bl);
    assert_false(bl.bound);
    ss__spill_rec_fill(&r, SS_SPILL_REC_PAD | SS_SPILL_REC_BOUND, NULL, 0, 0, 0, 128, 1280, 42,
                       0, 0);
    t_assert_err(ss__spill_rec_check(&r, &why), -EBADMSG);
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT | (SS_SPILL_REC_BOUND << 1), &id, 77, 10, 1000,
                       192, 1280, 42, 1, 2);
    t_assert_err(ss__spill_rec_check(&r, &why), -EBADMSG);

    /* version 1 (no creator recorded: the field was a zero reserved one)
     * is still read, its creator unknown; a later version is refused */
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT, &id, 0, 10, 1000, 192, 1280, 42, 1, 2);
    r.version = 1;
    r.hdr_hash = ss__spill_hash64(&r, offsetof(ss__spill_rec, hdr_hash), SS_SPILL_SEED);
    t_assert_ok(ss__spill_rec_check(&r, &why));
    assert_int_equal(ss__spill_rec_uid(&r), SS_UID_UNKNOWN);
    r.version = SS_SPILL_VERSION + 1;
    r.hdr_hash = ss__spill_hash64(&r, offsetof(ss__spill_rec, hdr_hash), SS_SPILL_SEED);
    t_assert_err(ss__spill_rec_check(&r, &why), -EBADMSG);
    assert_string_equal(why, "unknown format version");
}

/* Rewrite the record of o on disk as version 1 wrote it (no creator uid). */
static void make_v1(const char *dir, const struct obj *o)
{
    char path[512];
    ss__spill_rec r;
    int fd;

    snprintf(path, sizeof(path), "%s/%016llx.spill", dir, (unsigned long long)o->loc.file);
    fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &r, sizeof(r), (off_t)o->loc.offset), (ssize_t)sizeof(r));
    assert_int_equal(r.version, SS_SPILL_VERSION);
    assert_int_equal(r.uid, o->uid);
    r.version = 1;
    r.uid = 0;
    r.hdr_hash = ss__spill_hash64(&r, offsetof(ss__spill_rec, hdr_hash), SS_SPILL_SEED);
    assert_int_equal(pwrite(fd, &r, sizeof(r), (off_t)o->loc.offset), (ssize_t)sizeof(r));
    assert_int_equal(fsync(fd), 0);
    close(fd);
}

/* Files written before creators were recorded (version 1) still scan and
 * restore, their creator unknown, beside version 2 records of the same
 * files, whose creator survives. */
static void test_v1_records(void **state)
{
    const struct mode *m = *state;
    struct obj objs[4];
    struct seen seen = { 0 };
    ss__spill *sp;
    char buf[256];
    const char *dir;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    /* fused (small) and files of their own (large) */
    for (int i = 0; i < 4; i++)
        obj_make(&objs[i], (uint32_t)i, i < 2 ? 1000 + (uint64_t)i : 300 * KiB + (uint64_t)i,
                 8, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, 4, NULL);
    ss__spill_close(sp);
    make_v1(dir, &objs[0]);
    make_v1(dir, &objs[2]);
    objs[0].uid = objs[2].uid = SS_UID_UNKNOWN;

    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), 4);
    check_seen(&seen, objs, 4); /* uids: unknown for the version 1 ones */
    for (int i = 0; i < 4; i++)
        t_assert_ok(restore(sp, &objs[i]));
    ss__spill_close(sp);
    for (int i = 0; i < 4; i++)
        obj_free(&objs[i]);
    mode_done();
}

static void test_open_errors(void **state)
{
    ss__spill_params p = { 0 };
    ss__spill *sp = NULL, *sp2 = NULL;
    char dir[256], sub[300];
    int fd;

    (void)state;
    t_assert_err(ss__spill_open(&sp, &p), -EINVAL); /* no dir */
    snprintf(dir, sizeof(dir), "%s/open-errors", t_tmpdir());
    p.dir = dir;
    p.flags = 1u << 7;
    t_assert_err(ss__spill_open(&sp, &p), -EINVAL);
    p.flags = 0;
    p.chunk = 3000;
    t_assert_err(ss__spill_open(&sp, &p), -EINVAL);
    p.chunk = 0;
    p.queue_depth = 100000;
    t_assert_err(ss__spill_open(&sp, &p), -EINVAL);
    p.queue_depth = 0;

    /* missing parent: not created behind the user's back */
    snprintf(sub, sizeof(sub), "%s/no/such/dir", dir);
    p.dir = sub;
    t_assert_err(ss__spill_open(&sp, &p), -ENOENT);
    /* a file, not a directory */
    snprintf(sub, sizeof(sub), "%s/afile", t_tmpdir());
    fd = open(sub, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    t_assert_err(ss__spill_open(&sp, &p), -ENOTDIR);
    /* too open */
    snprintf(sub, sizeof(sub), "%s/wide", t_tmpdir());
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(chmod(sub, 0755), 0);
    t_assert_err(ss__spill_open(&sp, &p), -EPERM);
    /* not ours */
    if (geteuid() == 0) {
        snprintf(sub, sizeof(sub), "%s/theirs", t_tmpdir());
        assert_int_equal(mkdir(sub, 0700), 0);
        assert_int_equal(chown(sub, 65534, 65534), 0);
        t_assert_err(ss__spill_open(&sp, &p), -EPERM);
    }
    assert_null(sp);

    /* created 0700; one engine per directory */
    p.dir = dir;
    t_assert_ok(ss__spill_open(&sp, &p));
    {
        struct stat sb;

        assert_int_equal(stat(dir, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0700);
    }
    t_assert_err(ss__spill_open(&sp2, &p), -EBUSY);
    assert_null(sp2);
    ss__spill_close(sp);
    t_assert_ok(ss__spill_open(&sp2, &p));
    ss__spill_close(sp2);
    ss__spill_close(NULL);

    /* read-only filesystem: -EROFS, not a crash or a silent success */
    if (can_mount) {
        const char *mnt = mount_tmpfs("ro", "1m");

        if (mnt) {
            snprintf(sub, sizeof(sub), "%s/spill", mnt);
            assert_int_equal(mkdir(sub, 0700), 0);
            assert_int_equal(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT | MS_RDONLY, NULL), 0);
            p.dir = sub;
            t_assert_err(ss__spill_open(&sp, &p), -EROFS);
            umount_one(mnt);
        }
    }
}

/*
 * fdopendir, interposed (the test program's definition wins over libc's):
 * whether each fd it is handed is close-on-exec already. A listing stream's
 * fd that is not would leak into a program another thread fork + execs
 * before fdopendir marks it.
 */
static int fdopendir_calls, fdopendir_no_cloexec;

DIR *fdopendir(int fd)
{
    static DIR *(*real)(int);
    int fl = fcntl(fd, F_GETFD);

    if (!real)
        real = (DIR * (*)(int)) dlsym(RTLD_NEXT, "fdopendir");
    if (!real) {
        errno = ENOSYS;
        return NULL;
    }
    fdopendir_calls++;
    if (fl >= 0 && !(fl & FD_CLOEXEC))
        fdopendir_no_cloexec++;
    return real(fd);
}

static int count_entry(void *arg, uint64_t id, bool tmp, const char *name)
{
    (void)id;
    (void)tmp;
    (void)name;
    (*(int *)arg)++;
    return 0;
}

/* A directory listing's stream fd is close-on-exec from its first moment,
 * and the listing reads the directory from its start every time. */
static void test_dir_list_cloexec(void **state)
{
    char dir[256], name[300];
    int dfd, lfd, fd, n = 0;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/list-cloexec", t_tmpdir());
    t_assert_ok(ss__spill_dir_open(dir, &dfd, &lfd));
    snprintf(name, sizeof(name), "%s/00000000000000a1.spill", dir);
    fd = open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    fdopendir_calls = fdopendir_no_cloexec = 0;
    t_assert_ok(ss__spill_dir_each(dfd, count_entry, &n));
    t_assert_ok(ss__spill_dir_each(dfd, count_entry, &n));
    assert_int_equal(n, 2);
    assert_int_equal(fdopendir_calls, 2);
    assert_int_equal(fdopendir_no_cloexec, 0);
    assert_int_equal(unlink(name), 0);
    close(lfd);
    close(dfd);
}

static const uint64_t SIZES[] = { 0, 1, 511, 512, 4095, 64 * KiB - 1, 64 * KiB,
                                  64 * KiB + 1, MiB + 7, 16 * MiB };
#define NSIZES (sizeof(SIZES) / sizeof(SIZES[0]))

/* Spill every size (and a large object from an unaligned pointer), restore
 * each bit-exact, check the stats say which path ran. */
static void test_roundtrip(void **state)
{
    const struct mode *m = *state;
    struct obj objs[NSIZES + 1];
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256];
    const char *dir;
    uint64_t bytes = 0;
    int n = (int)NSIZES + 1;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < (int)NSIZES; i++) {
        obj_make(&objs[i], (uint32_t)i, SIZES[i], (uint32_t)(i * 37 % 200), 0);
        bytes += SIZES[i];
    }
    /* not page-aligned: O_DIRECT cannot read it, buffered I/O must */
    obj_make(&objs[NSIZES], 99, 300 * KiB + 5, 3, 64);
    bytes += objs[NSIZES].size;

    sp = eng_open(dir, m->flags);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.uring, !(m->flags & SS_SPILL_NO_URING));
    if (m->flags & SS_SPILL_SQPOLL)
        print_message("SQPOLL %s\n", st.sqpoll ? "in use" : "refused: submitter thread");
    assert_int_equal(st.direct, !m->tmpfs);
    if (!m->tmpfs)
        assert_true(st.dio_align >= 512 && st.dio_align <= 4096);
    spill_all(sp, objs, n, NULL);
    for (int i = 0; i < n; i++)
        t_assert_ok(restore(sp, &objs[i]));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.objects_spilled, n);
    assert_int_equal(st.bytes_spilled, bytes);
    assert_int_equal(st.objects_restored, n);
    assert_int_equal(st.bytes_restored, bytes);
    assert_int_equal(st.live_objects, n);
    assert_int_equal(st.spill_errors + st.restore_errors + st.damaged, 0);
    assert_true(st.spill_ns > 0 && st.restore_ns > 0);
    /* objects above 64 KiB got files of their own, the rest are fused */
    assert_int_equal(st.files - st.fused_files, 4);
    assert_true(st.fused_files >= 1);
    assert_int_equal(count_files(dir, ".spill"), (int)st.files);
    assert_int_equal(count_files(dir, ".tmp"), 0);
    ss__spill_close(sp);
    for (int i = 0; i < n; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* Delete some, double delete, read a deleted one; a fresh engine's scan
 * finds exactly the live ones (tombstones respected) and they restore. */
static void test_delete_scan(void **state)
{
    const struct mode *m = *state;
    struct obj objs[24];
    struct seen seen = { 0 };
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256];
    const char *dir;
    int n = 24;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < n; i++)
        obj_make(&objs[i], (uint32_t)i, i % 4 == 3 ? 200 * KiB + (uint64_t)i : 100 + 999 * (uint64_t)i,
                 (uint32_t)(i % 5) * 10, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, n, NULL);
    for (int i = 0; i < n; i += 3) {
        t_assert_ok(ss__spill_delete(sp, &objs[i].loc));
        objs[i].live = false;
    }
    t_assert_err(ss__spill_delete(sp, &objs[0].loc), -ENOENT);
    {
        uint8_t dst[8192];

        t_assert_err(ss__spill_read(sp, &objs[3].loc, dst, NULL, 1), -ENOENT);
    }
    t_assert_ok(ss__spill_wait(sp, 30000));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.deletes, 8);
    assert_int_equal(st.live_objects, 16);
    assert_int_equal(st.delete_errors, 0);
    ss__spill_close(sp);

    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), 16);
    check_seen(&seen, objs, n);
    t_assert_err(ss__spill_scan(sp, on_scan, &seen), -EBUSY);
    for (int i = 0; i < n; i++)
        if (objs[i].live)
            t_assert_ok(restore(sp, &objs[i]));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.scanned, 16);
    assert_int_equal(st.damaged, 0);
    assert_int_equal(st.live_objects, 16);

    /* scan's drop (an older copy, say): every 4th reported is deleted */
    ss__spill_close(sp);
    sp = eng_open(dir, m->flags);
    memset(&seen, 0, sizeof(seen));
    seen.drop_every = 4;
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), 12);
    for (int i = 0; i < seen.n; i++)
        if ((i + 1) % 4 == 0)
            for (int k = 0; k < n; k++)
                if (memcmp(objs[k].id.b, seen.loc[i].id.b, SS_ID_SIZE) == 0)
                    objs[k].live = false;
    ss__spill_close(sp);
    sp = eng_open(dir, m->flags);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), 12);
    check_seen(&seen, objs, n);

    /* new spills never reuse a scanned file's name or sequence */
    {
        struct obj extra;
        uint64_t max_file = 0, max_seq = 0;

        for (int i = 0; i < seen.n; i++) {
            max_file = seen.loc[i].file > max_file ? seen.loc[i].file : max_file;
            max_seq = seen.loc[i].seq > max_seq ? seen.loc[i].seq : max_seq;
        }
        obj_make(&extra, 500, 100 * KiB, 0, 0);
        spill_all(sp, &extra, 1, NULL);
        assert_true(extra.loc.file > max_file);
        assert_true(extra.loc.seq > max_seq);
        obj_free(&extra);
    }
    /* NULL callback: drop everything, the directory empties */
    ss__spill_close(sp);
    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, NULL, NULL), 0);
    t_assert_ok(ss__spill_wait(sp, 30000));
    assert_int_equal(count_files(dir, ".spill"), 0);
    ss__spill_close(sp);
    for (int i = 0; i < n; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* Is the record of a deleted object durably dead on disk: its file gone,
 * or its tombstone written? */
static bool dead_on_disk(const char *dir, const ss__spill_loc *loc)
{
    char path[512];
    uint64_t tomb = 0;
    int fd;

    file_path(path, sizeof(path), dir, loc->file);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return true;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &tomb, sizeof(tomb),
                           (off_t)(loc->offset + offsetof(ss__spill_rec, tomb))),
                     (ssize_t)sizeof(tomb));
    close(fd);
    return tomb == SS_SPILL_TOMB;
}

/* Write `n` bytes of a tombstone over the record's tomb field, as a
 * tombstone write caught half way would leave it. */
static void tear_tombstone(const char *dir, const ss__spill_loc *loc, size_t n)
{
    uint64_t tomb = SS_SPILL_TOMB;
    char path[512];
    int fd;

    file_path(path, sizeof(path), dir, loc->file);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &tomb, n, (off_t)(loc->offset + offsetof(ss__spill_rec, tomb))),
                     (ssize_t)n);
    close(fd);
}

/* One completion (60 s at most). */
static void collect_one(ss__spill *sp, ss__spill_done *d)
{
    for (int waited = 0;;) {
        struct pollfd pfd = { .fd = ss__spill_event_fd(sp), .events = POLLIN };
        int k;

        if (poll(&pfd, 1, 1000) == 0 && ++waited > 60)
            fail_msg("no spill completion after 60 s");
        k = ss__spill_reap(sp, d, 1);
        t_assert_ok(k);
        if (k)
            return;
    }
}

/* Notified deletes: each completes (op DELETE, its cookie) only once its
 * record is dead on disk (own file unlinked; fused record tombstoned while
 * the file lives on); one that cannot be made durable says so; a dead
 * record's delete reports nothing; a new engine's scan sees none. */
static void test_delete_notify(void **state)
{
    enum { N = 12 };
    const struct mode *m = *state;
    struct obj objs[N], more[2];
    struct seen seen = { 0 };
    bool done[N] = { false };
    ss__spill_done d;
    ss__spill *sp;
    char buf[256];
    const char *dir;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < N; i++) /* 2, 5, 8, 11 in files of their own */
        obj_make(&objs[i], (uint32_t)i, i % 3 == 2 ? 300 * KiB + (uint64_t)i : 1000 + 77 * (uint64_t)i,
                 8, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, N, NULL);
    /* all but objs[0], so its fused file stays and takes tombstones */
    for (int i = 1; i < N; i++) {
        t_assert_ok(ss__spill_delete_notify(sp, &objs[i].loc, 100 + (uint64_t)i));
        objs[i].live = false;
    }
    for (int k = 1; k < N; k++) {
        collect_one(sp, &d);
        assert_int_equal(d.op, SS_SPILL_OP_DELETE);
        t_assert_ok(d.status);
        assert_true(d.cookie > 100 && d.cookie < 100 + N && !done[d.cookie - 100]);
        done[d.cookie - 100] = true;
        if (!dead_on_disk(dir, &objs[d.cookie - 100].loc))
            fail_msg("delete of object %d completed before it was durable",
                     (int)(d.cookie - 100));
    }
    t_assert_err(ss__spill_delete_notify(sp, &objs[1].loc, 1), -ENOENT);
    t_assert_ok(ss__spill_wait(sp, 30000));
    assert_int_equal(ss__spill_reap(sp, &d, 1), 0);
    assert_false(dead_on_disk(dir, &objs[0].loc));

    /* a tombstone whose fdatasync fails: reported */
    obj_make(&more[0], 200, 3000, 0, 0);
    obj_make(&more[1], 201, 4000, 0, 0);
    spill_all(sp, more, 2, NULL);
    ss__spill_inject(sp, SS_SPILL_INJ_SYNC, 1, -EIO);
    t_assert_ok(ss__spill_delete_notify(sp, &more[0].loc, 7));
    collect_one(sp, &d);
    ss__spill_inject(sp, 0, 0, 0);
    assert_int_equal(d.op, SS_SPILL_OP_DELETE);
    assert_int_equal(d.cookie, 7);
    t_assert_err(d.status, -EIO);
    t_assert_ok(ss__spill_wait(sp, 30000));
    ss__spill_close(sp);

    sp = eng_open(dir, m->flags);
    assert_true(ss__spill_scan(sp, on_scan, &seen) >= 2);
    for (int i = 0; i < seen.n; i++)
        for (int k = 1; k < N; k++)
            if (!memcmp(seen.loc[i].id.b, objs[k].id.b, SS_ID_SIZE))
                fail_msg("deleted object %d is back", k);
    ss__spill_close(sp);
    for (int i = 0; i < N; i++)
        obj_free(&objs[i]);
    obj_free(&more[0]);
    obj_free(&more[1]);
    mode_done();
}

/* The last live record of the fused file being appended to, deleted while
 * an append to that file is in flight: the file lives on with the new
 * records, so the deleted one needs its tombstone (it used to be dropped,
 * and the object came back at the next scan). */
static void test_delete_during_append(void **state)
{
    const struct mode *m = *state;
    struct obj objs[2];
    struct seen seen = { 0 };
    ss__spill_done d;
    ss__spill *sp;
    char buf[256];
    const char *dir;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    obj_make(&objs[0], 1, 5000, 4, 0);
    obj_make(&objs[1], 2, 6000, 4, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, 1, NULL);
    t_assert_ok(ss__spill_write(sp, &objs[1].id, objs[1].uid, objs[1].data, objs[1].size, objs[1].meta,
                                objs[1].meta_size, 1));
    t_assert_ok(ss__spill_delete(sp, &objs[0].loc)); /* the append is in flight */
    objs[0].live = false;
    collect(sp, &d, 1);
    t_assert_ok(d.status);
    assert_int_equal(d.loc.file, objs[0].loc.file); /* same file: it lives on */
    objs[1].loc = d.loc;
    objs[1].live = true;
    ss__spill_close(sp);

    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), 1);
    check_seen(&seen, objs, 2);
    ss__spill_close(sp);
    obj_free(&objs[0]);
    obj_free(&objs[1]);
    mode_done();
}

/* A fused file is unlinked when its last record dies; with a 1 MiB cap
 * small objects spread over several fused files. */
static void test_fused_reclaim(void **state)
{
    const struct mode *m = *state;
    ss__spill_params p = { .flags = m->flags, .fused_cap = MiB };
    struct obj objs[40];
    ss__spill_stats st;
    ss__spill *sp = NULL;
    uint64_t first;
    char buf[256];
    int n = 40, in_first = 0;

    MODE_SKIPS(m);
    p.dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!p.dir, NULL, no_mount_why);
    for (int i = 0; i < n; i++)
        obj_make(&objs[i], (uint32_t)i, 60 * KiB + (uint64_t)i, 8, 0);
    t_assert_ok(ss__spill_open(&sp, &p));
    /* one at a time, so batches are small and files fill in order */
    for (int i = 0; i < n; i++)
        spill_all(sp, &objs[i], 1, NULL);
    ss__spill_stats_get(sp, &st);
    assert_true(st.fused_files >= 3);
    assert_int_equal(st.files, st.fused_files);
    first = objs[0].loc.file;
    for (int i = 0; i < n; i++)
        if (objs[i].loc.file == first)
            in_first++;
    assert_true(in_first >= 2 && in_first < n);
    /* kill every record of the first file: it goes, the rest stay */
    for (int i = 0; i < n; i++) {
        if (objs[i].loc.file == first) {
            char path[300];

            file_path(path, sizeof(path), p.dir, first);
            assert_int_equal(access(path, F_OK), 0); /* until the last one */
            t_assert_ok(ss__spill_delete(sp, &objs[i].loc));
            objs[i].live = false;
        }
    }
    t_assert_ok(ss__spill_wait(sp, 30000));
    {
        char path[300];

        file_path(path, sizeof(path), p.dir, first);
        assert_int_equal(access(path, F_OK), -1);
    }
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.files_removed, 1);
    assert_int_equal(count_files(p.dir, ".spill"), (int)st.files);
    for (int i = 0; i < n; i++)
        if (objs[i].live)
            t_assert_ok(restore(sp, &objs[i]));
    /* now all of them: every file goes, the current fused one included */
    for (int i = 0; i < n; i++)
        if (objs[i].live) {
            t_assert_ok(ss__spill_delete(sp, &objs[i].loc));
            objs[i].live = false;
        }
    t_assert_ok(ss__spill_wait(sp, 30000));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.files, 0);
    assert_int_equal(st.disk_bytes, 0);
    assert_int_equal(count_files(p.dir, ".spill"), 0);
    /* and it keeps working */
    spill_all(sp, &objs[0], 1, NULL);
    t_assert_ok(restore(sp, &objs[0]));
    ss__spill_close(sp);
    for (int i = 0; i < n; i++)
        obj_free(&objs[i]);
    mode_done();
}

static void flip_byte(const char *dir, uint64_t file, uint64_t off)
{
    char path[300];
    uint8_t b;
    int fd;

    file_path(path, sizeof(path), dir, file);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    assert_int_equal(fsync(fd), 0);
    close(fd);
}

/* One damaged byte: that object's restore says -EBADMSG, a scan drops it
 * alone (a fused one; an object of its own is only found out when it is
 * restored); a damaged header costs only its record. */
static void test_corrupt(void **state)
{
    const struct mode *m = *state;
    struct obj objs[8];
    struct seen seen = { 0 };
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256];
    const char *dir;
    int n = 8;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    obj_make(&objs[0], 0, 3 * MiB + 100, 20, 0);   /* own file: data damaged */
    obj_make(&objs[1], 1, 500 * KiB, 0, 0);        /* own file: fine */
    for (int i = 2; i < n; i++)                     /* fused */
        obj_make(&objs[i], (uint32_t)i, 1000 * (uint64_t)i, 4, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, 2, NULL);
    spill_all(sp, objs + 2, n - 2, NULL); /* one batch after the other */
    assert_int_equal(objs[2].loc.file, objs[7].loc.file);

    flip_byte(dir, objs[0].loc.file, objs[0].loc.offset + objs[0].loc.data_off + 2 * MiB + 3);
    flip_byte(dir, objs[4].loc.file, objs[4].loc.offset + objs[4].loc.data_off + 17);
    /* a header: its record is lost, the neighbours are not */
    flip_byte(dir, objs[6].loc.file, objs[6].loc.offset + 20);

    t_assert_err(restore(sp, &objs[0]), -EBADMSG);
    t_assert_err(restore(sp, &objs[4]), -EBADMSG);
    t_assert_err(restore(sp, &objs[6]), -EBADMSG);
    for (int i = 0; i < n; i++)
        if (i != 0 && i != 4 && i != 6)
            t_assert_ok(restore(sp, &objs[i]));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 3);
    assert_int_equal(st.restore_errors, 3);
    ss__spill_close(sp);

    /* A scan checks the fused records whole, but of an object of its own
     * only the header and meta (its data is not read at startup): that
     * one is found and its restore says -EBADMSG. */
    objs[4].live = objs[6].live = false;
    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), n - 2);
    check_seen(&seen, objs, n);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 2);
    assert_true(st.scan_bytes < 3 * MiB); /* not the 3 MiB object's data */
    t_assert_err(restore(sp, &objs[0]), -EBADMSG);
    for (int i = 1; i < n; i++)
        if (objs[i].live)
            t_assert_ok(restore(sp, &objs[i]));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 3);
    /* dropped (as the store does): its file had nothing else, it goes */
    t_assert_ok(ss__spill_delete(sp, &objs[0].loc));
    t_assert_ok(ss__spill_wait(sp, 30000));
    {
        char path[300];

        file_path(path, sizeof(path), dir, objs[0].loc.file);
        assert_int_equal(access(path, F_OK), -1);
    }
    ss__spill_close(sp);
    for (int i = 0; i < n; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* Truncated files: a file of its own loses its object, a fused file the
 * records from the cut on; everything else is fine; .tmp leftovers go. */
static void test_truncated(void **state)
{
    const struct mode *m = *state;
    struct obj objs[10];
    struct seen seen = { 0 };
    ss__spill *sp;
    char buf[256], path[300];
    const char *dir;
    int n = 10, fd;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    obj_make(&objs[0], 0, 2 * MiB + 1, 0, 0);
    obj_make(&objs[1], 1, MiB, 1, 0);
    for (int i = 2; i < n; i++)
        obj_make(&objs[i], (uint32_t)i, 3000 * (uint64_t)i, 2, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, n, NULL);
    ss__spill_close(sp);
    for (int i = 3; i < n; i++)
        assert_int_equal(objs[i].loc.file, objs[2].loc.file);

    file_path(path, sizeof(path), dir, objs[0].loc.file);
    assert_int_equal(truncate(path, (off_t)(objs[0].loc.data_off + MiB)), 0);
    file_path(path, sizeof(path), dir, objs[6].loc.file);
    assert_int_equal(truncate(path, (off_t)(objs[6].loc.offset + 200)), 0);
    objs[0].live = false;
    for (int i = 6; i < n; i++)
        objs[i].live = false;
    /* what a crash mid-spill leaves */
    snprintf(path, sizeof(path), "%s/00000000000000aa.tmp", dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "partial", 7), 7);
    close(fd);

    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), 5);
    check_seen(&seen, objs, n);
    assert_int_equal(count_files(dir, ".tmp"), 0);
    for (int i = 0; i < n; i++)
        if (objs[i].live)
            t_assert_ok(restore(sp, &objs[i]));
    ss__spill_close(sp);
    for (int i = 0; i < n; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* Injected errors: each failing op fails its spill or restore cleanly with
 * that error, leaves no partial file, and the next request works. */
struct inj {
    unsigned kind, nth;
    const char *what;
};

static void test_inject(void **state)
{
    const struct mode *m = *state;
    /* a large spill: open, 5 chunks + tail (or 6 chunks), header, fdatasync,
     * rename, directory fsync */
    static const struct inj big_cases[] = {
        { SS_SPILL_INJ_OPEN, 1, "open" },     { SS_SPILL_INJ_WRITE, 1, "first chunk" },
        { SS_SPILL_INJ_WRITE, 3, "a chunk" }, { SS_SPILL_INJ_WRITE, 7, "the header" },
        { SS_SPILL_INJ_SYNC, 1, "fdatasync" }, { SS_SPILL_INJ_SYNC, 2, "directory fsync" },
    };
    /* a small spill into a new fused file: open, write, fdatasync, rename,
     * directory fsync */
    static const struct inj small_cases[] = {
        { SS_SPILL_INJ_OPEN, 1, "open" },
        { SS_SPILL_INJ_WRITE, 1, "batch write" },
        { SS_SPILL_INJ_SYNC, 1, "fdatasync" },
        { SS_SPILL_INJ_SYNC, 2, "directory fsync" },
    };
    struct obj objs[2];
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256];
    const char *dir;
    int want = -EIO;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    obj_make(&objs[0], 1, 5 * MiB + 3, 9, 0);
    obj_make(&objs[1], 2, 777, 9, 0);
    sp = eng_open(dir, m->flags);
    for (int o = 0; o < 2; o++) {
        const struct inj *cases = o ? small_cases : big_cases;
        size_t ncases = o ? SS_ARRAY_SIZE(small_cases) : SS_ARRAY_SIZE(big_cases);

        for (size_t k = 0; k < ncases; k++) {
            print_message("inject -EIO into %s of a %s spill\n", cases[k].what,
                          o ? "small" : "large");
            ss__spill_inject(sp, cases[k].kind, cases[k].nth, -EIO);
            objs[o].live = false;
            spill_all(sp, &objs[o], 1, &want);
            assert_false(objs[o].live);
            ss__spill_inject(sp, 0, 0, 0);
            t_assert_ok(ss__spill_wait(sp, 30000));
            assert_int_equal(count_files(dir, ".tmp"), 0);
            assert_int_equal(count_files(dir, ".spill"), 0);
            spill_all(sp, &objs[o], 1, NULL);
            t_assert_ok(restore(sp, &objs[o]));
            t_assert_ok(ss__spill_delete(sp, &objs[o].loc));
            t_assert_ok(ss__spill_wait(sp, 30000));
            assert_int_equal(count_files(dir, ".spill"), 0);
        }
    }
    /* restores: a failed chunk read, a failed open */
    spill_all(sp, &objs[0], 1, NULL);
    ss__spill_inject(sp, SS_SPILL_INJ_READ, 3, -EIO);
    t_assert_err(restore(sp, &objs[0]), -EIO);
    ss__spill_inject(sp, SS_SPILL_INJ_OPEN, 1, -EMFILE);
    t_assert_err(restore(sp, &objs[0]), -EMFILE);
    t_assert_ok(restore(sp, &objs[0]));
    t_assert_ok(ss__spill_wait(sp, 30000));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.restore_errors, 2);
    assert_int_equal(st.spill_errors, SS_ARRAY_SIZE(big_cases) + SS_ARRAY_SIZE(small_cases));
    assert_int_equal(st.damaged, 0);
    assert_int_equal(st.live_objects, 1);
    ss__spill_close(sp);
    obj_free(&objs[0]);
    obj_free(&objs[1]);
    mode_done();
}

/* Spill o with an injection armed: its completion (status < 0 wanted), or
 * one made up when the write is refused at once. */
static ss__spill_done spill_injected(ss__spill *sp, struct obj *o, unsigned mask, unsigned nth,
                                     int err)
{
    ss__spill_done d = { .cookie = 1, .op = SS_SPILL_OP_WRITE };
    int rc;

    ss__spill_inject(sp, mask, nth, err);
    rc = ss__spill_write(sp, &o->id, o->uid, o->data, o->size, o->meta, o->meta_size, 1);
    if (rc < 0)
        d.status = rc;
    else
        collect(sp, &d, 1);
    ss__spill_inject(sp, 0, 0, 0);
    assert_int_equal(d.op, SS_SPILL_OP_WRITE);
    assert_int_equal(d.cookie, 1);
    assert_true(d.status < 0);
    o->live = false;
    return d;
}

/* A failed spill whose cleanup failed too reports the record it may have
 * left; deleting that (notified) makes it dead on disk. */
static void drop_copy(ss__spill *sp, const char *dir, const struct obj *o, const ss__spill_done *w,
                      const char *what)
{
    ss__spill_done d;

    if (!w->copy)
        fail_msg("%s: the failed spill's cleanup failed, but no copy was reported", what);
    assert_memory_equal(w->loc.id.b, o->id.b, SS_ID_SIZE);
    assert_int_equal(w->loc.size, o->size);
    t_assert_ok(ss__spill_delete_notify(sp, &w->loc, 2));
    collect_one(sp, &d);
    assert_int_equal(d.op, SS_SPILL_OP_DELETE);
    t_assert_ok(d.status);
    assert_true(dead_on_disk(dir, &w->loc));
}

/* A spill reported as failed leaves no record a restart's scan accepts:
 * its bookkeeping is reserved before its I/O (no memory for it used to
 * leave a durable file or fused records behind, found after a restart);
 * a failed append is truncated away and the truncation fdatasync'ed, a
 * renamed file unlinked and the directory fsync'ed, before the failure is
 * reported (an injected failure of that sync is seen: a copy is
 * reported); and when the cleanup fails, the record is reported as a copy
 * and can be deleted durably. A fresh engine's scan then finds exactly the
 * objects that spilled. */
static void test_failed_spill(void **state)
{
    enum { N = 12 };
    const struct mode *m = *state;
    const unsigned STICKY = SS_SPILL_INJ_STICKY;
    struct obj objs[N];
    struct seen seen = { 0 };
    ss__spill_done d, ds[4];
    ss__spill *sp;
    char buf[256];
    const char *dir;
    int failed = 0;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < N; i++) /* 1, 8, 9: files of their own */
        obj_make(&objs[i], (uint32_t)i, i == 1 || i == 8 || i == 9 ? 300 * KiB + (uint64_t)i
                                                                   : 900 + 13 * (uint64_t)i, 6, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, 1, NULL); /* objs[0]: the fused file's first record */

    /* no memory for a file of its own's record slot */
    d = spill_injected(sp, &objs[1], SS_SPILL_INJ_RECS, 1, -ENOMEM);
    t_assert_err(d.status, -ENOMEM);
    assert_false(d.copy);

    /* no memory for fused records' slots (the fused file's table grows) */
    ss__spill_inject(sp, SS_SPILL_INJ_RECS, 1, -ENOMEM);
    for (int i = 2; i < 6; i++)
        t_assert_ok(ss__spill_write(sp, &objs[i].id, objs[i].uid, objs[i].data, objs[i].size,
                                    objs[i].meta, objs[i].meta_size, (uint64_t)i));
    collect(sp, ds, 4);
    ss__spill_inject(sp, 0, 0, 0);
    for (int k = 0; k < 4; k++) {
        struct obj *o = &objs[ds[k].cookie];

        assert_false(ds[k].copy);
        if (ds[k].status == 0) {
            o->loc = ds[k].loc;
            o->live = true;
        } else {
            t_assert_err(ds[k].status, -ENOMEM);
            failed++;
        }
    }
    assert_true(failed > 0);

    /* an append whose fdatasync fails, then its truncation too */
    d = spill_injected(sp, &objs[6], STICKY | SS_SPILL_INJ_SYNC | SS_SPILL_INJ_TRUNCATE, 1, -EIO);
    t_assert_err(d.status, -EIO);
    drop_copy(sp, dir, &objs[6], &d, "append, truncate failed");

    /* an append whose fdatasync fails, and the truncation's too */
    spill_all(sp, &objs[7], 1, NULL); /* a new fused file to append to */
    d = spill_injected(sp, &objs[11], STICKY | SS_SPILL_INJ_SYNC, 1, -EIO);
    t_assert_err(d.status, -EIO);
    drop_copy(sp, dir, &objs[11], &d, "append, its truncation's fdatasync failed");

    /* a file of its own: the directory fsync after the rename fails, then
     * the one after its unlink */
    d = spill_injected(sp, &objs[8], STICKY | SS_SPILL_INJ_SYNC, 2, -EIO);
    t_assert_err(d.status, -EIO);
    drop_copy(sp, dir, &objs[8], &d, "own file, directory fsync after the unlink failed");

    /* ... then its unlink */
    d = spill_injected(sp, &objs[9], STICKY | SS_SPILL_INJ_SYNC | SS_SPILL_INJ_UNLINK, 2, -EIO);
    t_assert_err(d.status, -EIO);
    drop_copy(sp, dir, &objs[9], &d, "own file, unlink failed");

    /* a new fused file: the same (objs[11]'s file takes no more appends) */
    d = spill_injected(sp, &objs[10], STICKY | SS_SPILL_INJ_SYNC | SS_SPILL_INJ_UNLINK, 2, -EIO);
    t_assert_err(d.status, -EIO);
    drop_copy(sp, dir, &objs[10], &d, "new fused file, unlink failed");

    /* the plain failures: cleaned up, nothing reported left */
    objs[11].live = false;
    d = spill_injected(sp, &objs[11], SS_SPILL_INJ_SYNC, 1, -EIO);
    assert_false(d.copy);
    d = spill_injected(sp, &objs[9], SS_SPILL_INJ_SYNC, 2, -EIO);
    assert_false(d.copy);
    t_assert_ok(ss__spill_wait(sp, 30000));
    assert_int_equal(count_files(dir, ".tmp"), 0);
    ss__spill_close(sp);

    sp = eng_open(dir, m->flags);
    t_assert_ok(ss__spill_scan(sp, on_scan, &seen));
    check_seen(&seen, objs, N);
    for (int i = 0; i < N; i++)
        if (objs[i].live)
            t_assert_ok(restore(sp, &objs[i]));
    ss__spill_close(sp);
    for (int i = 0; i < N; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* Disk full on an 8 MiB tmpfs: the failing spills say -ENOSPC, leave no
 * partial file, and once space is freed the same objects spill fine. */
static void test_enospc(void **state)
{
    enum { NBIG = 3, NSMALL = 40, N = NBIG + NSMALL };
    const struct mode *m = *state;
    struct obj objs[N];
    struct seen seen = { 0 };
    ss__spill_done d[N];
    ss__spill_stats st;
    ss__spill *sp;
    const char *mnt;
    char dir[300];
    int failed = 0;

    MODE_SKIPS(m);
    T_SKIP_IF(!can_mount, NULL, no_mount_why);
    mnt = mount_tmpfs(m->name, "8m");
    T_SKIP_IF(!mnt, NULL, no_mount_why);
    snprintf(dir, sizeof(dir), "%s/spill", mnt);
    for (int i = 0; i < N; i++)
        obj_make(&objs[i], (uint32_t)i, i < NBIG ? 3 * MiB : 60 * KiB, 0, 0);
    sp = eng_open(dir, m->flags);
    /* two of three fit; which one fails depends on which fallocate runs
     * last (several may run at once) */
    for (int i = 0; i < N; i++)
        t_assert_ok(ss__spill_write(sp, &objs[i].id, objs[i].uid, objs[i].data, objs[i].size, NULL, 0,
                                    (uint64_t)i));
    collect(sp, d, N);
    for (int i = 0; i < N; i++) {
        if (d[i].status == 0) {
            objs[d[i].cookie].loc = d[i].loc;
            objs[d[i].cookie].live = true;
        } else {
            t_assert_err(d[i].status, -ENOSPC);
            failed++;
        }
    }
    assert_true(failed > 0);
    assert_int_equal(count_files(dir, ".tmp"), 0);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.spill_errors, failed);

    /* free space: what failed now spills */
    {
        int keep = 0; /* one big object stays (or is spilled again) */

        while (keep < NBIG - 1 && !objs[keep].live)
            keep++;
        for (int i = 0; i < NBIG; i++) {
            if (i == keep)
                continue;
            if (objs[i].live)
                t_assert_ok(ss__spill_delete(sp, &objs[i].loc));
            objs[i].live = false;
            objs[i].size = 0; /* not to be spilled again */
        }
    }
    t_assert_ok(ss__spill_wait(sp, 30000));
    for (int i = 0; i < N; i++)
        if (!objs[i].live && objs[i].size)
            spill_all(sp, &objs[i], 1, NULL);
    for (int i = 0; i < N; i++)
        if (objs[i].live)
            t_assert_ok(restore(sp, &objs[i]));
    ss__spill_close(sp);

    /* and the directory holds exactly those */
    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), N - 2);
    check_seen(&seen, objs, N);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 0);
    ss__spill_close(sp);
    for (int i = 0; i < N; i++)
        obj_free(&objs[i]);
    umount_one(mnt);
}

/* reap hands out at most `max` and keeps the eventfd readable for more. */
static void test_reap_max(void **state)
{
    const struct mode *m = *state;
    struct obj objs[6];
    ss__spill_done d;
    ss__spill *sp;
    char buf[256];
    const char *dir;
    int got = 0;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    sp = eng_open(dir, m->flags);
    for (int i = 0; i < 6; i++) {
        obj_make(&objs[i], (uint32_t)i, 10 * (uint64_t)i, 0, 0);
        t_assert_ok(ss__spill_write(sp, &objs[i].id, objs[i].uid, objs[i].data, objs[i].size, NULL, 0,
                                    (uint64_t)i));
    }
    t_assert_ok(ss__spill_wait(sp, 30000));
    while (got < 6) {
        struct pollfd pfd = { .fd = ss__spill_event_fd(sp), .events = POLLIN };

        assert_int_equal(poll(&pfd, 1, 0), 1); /* readable while any is left */
        assert_int_equal(ss__spill_reap(sp, &d, 1), 1);
        t_assert_ok(d.status);
        got++;
    }
    assert_int_equal(ss__spill_reap(sp, &d, 1), 0);
    t_assert_err(ss__spill_write(sp, NULL, 0, "x", 1, NULL, 0, 0), -EINVAL);
    t_assert_err(ss__spill_write(sp, &objs[0].id, 0, "x", 1, "m", SS_SPILL_META_MAX + 1, 0),
                 -EINVAL);
    ss__spill_close(sp);
    for (int i = 0; i < 6; i++)
        obj_free(&objs[i]);
}

/* The room for every completion is taken when its request is queued: when
 * the completion queue cannot grow, a write, a read and a notified delete
 * fail with -ENOMEM at once and change nothing, and every request that was
 * accepted completes exactly once (the loop never waits for memory). */
static void test_doneq(void **state)
{
    enum { N = 65 }; /* the queue's first size is 64 */
    const struct mode *m = *state;
    struct obj objs[N];
    ss__spill_done d[N];
    ss__spill_stats st;
    uint8_t dst[128];
    bool seen[N] = { false };
    ss__spill *sp;
    char buf[256];
    const char *dir;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    sp = eng_open(dir, m->flags);
    for (int i = 0; i < N; i++)
        obj_make(&objs[i], (uint32_t)i, 16 + (uint64_t)i, 0, 0);
    spill_all(sp, objs, 1, NULL);
    /* 64 spills complete and stay unreaped: the queue is full */
    for (int i = 1; i < N; i++)
        t_assert_ok(ss__spill_write(sp, &objs[i].id, objs[i].uid, objs[i].data, objs[i].size,
                                    NULL, 0, (uint64_t)i));
    t_assert_ok(ss__spill_wait(sp, 60000));

    ss__spill_inject(sp, SS_SPILL_INJ_DONEQ, 1, 0);
    t_assert_err(ss__spill_delete_notify(sp, &objs[0].loc, 100), -ENOMEM);
    ss__spill_inject(sp, SS_SPILL_INJ_DONEQ, 1, 0);
    t_assert_err(ss__spill_read(sp, &objs[0].loc, dst, NULL, 101), -ENOMEM);
    ss__spill_inject(sp, SS_SPILL_INJ_DONEQ, 1, 0);
    t_assert_err(ss__spill_write(sp, &objs[0].id, objs[0].uid, objs[0].data, objs[0].size,
                                 NULL, 0, 102), -ENOMEM);
    ss__spill_inject(sp, 0, 0, 0);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.live_objects, N); /* the refused delete did nothing */
    assert_int_equal(st.deletes, 0);

    collect(sp, d, N - 1); /* each accepted spill once, the refused ones never */
    for (int i = 0; i < N - 1; i++) {
        assert_int_equal(d[i].op, SS_SPILL_OP_WRITE);
        t_assert_ok(d[i].status);
        assert_true(d[i].cookie >= 1 && d[i].cookie < N && !seen[d[i].cookie]);
        seen[d[i].cookie] = true;
    }

    /* with room again the same requests go through, one completion each */
    t_assert_ok(ss__spill_read(sp, &objs[0].loc, dst, NULL, 101));
    collect(sp, d, 1);
    assert_int_equal(d[0].op, SS_SPILL_OP_READ);
    t_assert_ok(d[0].status);
    assert_memory_equal(dst, objs[0].data, objs[0].size);
    t_assert_ok(ss__spill_delete_notify(sp, &objs[0].loc, 100));
    collect(sp, d, 1);
    assert_int_equal(d[0].op, SS_SPILL_OP_DELETE);
    assert_int_equal(d[0].cookie, 100);
    t_assert_ok(d[0].status);
    ss__spill_close(sp);
    for (int i = 0; i < N; i++)
        obj_free(&objs[i]);
}

/* Everything at once: many spills of mixed sizes queued together, then
 * every restore queued together (the queue depth is shared round-robin),
 * and deletes racing restores of the same objects. */
static void test_concurrent(void **state)
{
    enum { N = 30 };
    const struct mode *m = *state;
    struct obj objs[N];
    uint8_t *dst[N];
    uint64_t len[N];
    ss__spill_done d[N];
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256];
    const char *dir;
    int ok = 0;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < N; i++) {
        /* sizes spread over 0 .. ~3 MiB, meta up to 250 bytes */
        uint64_t size = (uint64_t)(i * 2654435761u % (3 * MiB)) >> (i % 3 * 4);

        obj_make(&objs[i], (uint32_t)i, i == 0 ? 0 : size, (uint32_t)(i * 13 % 250), 0);
    }
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, N, NULL);
    for (int i = 0; i < N; i++) {
        len[i] = SS_ALIGN_UP(objs[i].size ? objs[i].size : 1, PAGE);
        dst[i] = mmap(NULL, len[i], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(dst[i] != MAP_FAILED);
        t_assert_ok(ss__spill_read(sp, &objs[i].loc, dst[i], NULL, (uint64_t)i));
    }
    collect(sp, d, N);
    for (int i = 0; i < N; i++) {
        const struct obj *o = &objs[d[i].cookie];
        uint8_t *want = malloc(o->size + 1);

        t_assert_ok(d[i].status);
        fill(want, o->size, o->seed);
        assert_memory_equal(dst[d[i].cookie], want, o->size);
        free(want);
    }
    /* restores racing deletes of the same objects: each restore either
     * completes intact or says the object is gone; never damage */
    for (int i = 0; i < N; i++) {
        t_assert_ok(ss__spill_read(sp, &objs[i].loc, dst[i], NULL, (uint64_t)i));
        t_assert_ok(ss__spill_delete(sp, &objs[i].loc));
    }
    collect(sp, d, N);
    for (int i = 0; i < N; i++) {
        if (d[i].status == 0)
            ok++;
        else
            t_assert_err(d[i].status, -ENOENT);
    }
    print_message("%d of %d restores racing their delete completed\n", ok, N);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 0);
    assert_int_equal(st.live_objects, 0);
    assert_int_equal(st.files, 0);
    assert_int_equal(count_files(dir, ".spill"), 0);
    ss__spill_close(sp);
    for (int i = 0; i < N; i++) {
        munmap(dst[i], len[i]);
        obj_free(&objs[i]);
    }
    mode_done();
}

/* A restore of a record deleted while it was read may read the tombstone
 * half written (page-cache copies are not atomic): that restore says the
 * object is gone, and nothing is counted damaged. The tombstone here is
 * torn on disk before the read, and its write fails, so the restore sees
 * the torn bytes whatever the order of the two I/Os; the old code called
 * the record damaged. A torn tombstone on a record nobody deleted is
 * still damage. */
static void test_restore_torn_tombstone(void **state)
{
    const struct mode *m = *state;
    struct obj objs[3];
    uint8_t dst[4096];
    ss__spill_done d;
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256];
    const char *dir;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < 3; i++) /* one fused file */
        obj_make(&objs[i], (uint32_t)i, 1000 + 1000 * (uint64_t)i, 8, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, 3, NULL);
    assert_int_equal(objs[0].loc.file, objs[1].loc.file);

    tear_tombstone(dir, &objs[1].loc, 4);
    ss__spill_inject(sp, SS_SPILL_INJ_WRITE | SS_SPILL_INJ_STICKY, 1, -EIO);
    t_assert_ok(ss__spill_read(sp, &objs[1].loc, dst, NULL, 1));
    t_assert_ok(ss__spill_delete(sp, &objs[1].loc));
    objs[1].live = false;
    collect_one(sp, &d);
    assert_int_equal(d.op, SS_SPILL_OP_READ);
    assert_int_equal(d.cookie, 1);
    t_assert_err(d.status, -ENOENT);
    t_assert_ok(ss__spill_wait(sp, 30000));
    ss__spill_inject(sp, 0, 0, 0);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 0);

    tear_tombstone(dir, &objs[2].loc, 4);
    t_assert_err(restore(sp, &objs[2]), -EBADMSG);
    t_assert_ok(restore(sp, &objs[0]));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 1);
    ss__spill_close(sp);
    for (int i = 0; i < 3; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* The ring's SQ with no free entry (the kernel gives a batch's slots back
 * only when the io_uring_enter that took it returns, and its ops may be
 * reaped before that): the ops that find it full wait for a slot, however
 * long, and then run; none fails. The old engine made each such op
 * complete with -EAGAIN: a write retried 16 times at once and then
 * failed, a sync failed outright, and the spill with it. */
static void test_sq_full(void **state)
{
    enum { N = 6 };
    const struct mode *m = *state;
    struct obj objs[N];
    ss__spill_done d[N];
    ss__spill *sp;
    char buf[256];
    const char *dir;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < N; i++) /* fused, and in files of their own */
        obj_make(&objs[i], (uint32_t)i, i % 2 ? 700 * KiB + (uint64_t)i : 2000 + (uint64_t)i, 8, 0);
    sp = eng_open(dir, m->flags);
    ss__spill_inject(sp, SS_SPILL_INJ_SQFULL | SS_SPILL_INJ_STICKY, 2, 0);
    for (int i = 0; i < N; i++)
        t_assert_ok(ss__spill_write(sp, &objs[i].id, objs[i].uid, objs[i].data, objs[i].size,
                                    objs[i].meta, objs[i].meta_size, (uint64_t)i));
    /* many turns of the loop while no slot frees: nothing completes */
    for (int k = 0; k < 200; k++) {
        struct pollfd pfd = { .fd = ss__spill_event_fd(sp), .events = POLLIN };
        ss__spill_done x;
        int got;

        (void)poll(&pfd, 1, k < 20 ? 10 : 0);
        got = ss__spill_reap(sp, &x, 1);
        t_assert_ok(got);
        if (got)
            fail_msg("a spill completed (status %d) while the SQ was full", x.status);
    }
    ss__spill_inject(sp, 0, 0, 0);
    collect(sp, d, N);
    for (int i = 0; i < N; i++) {
        t_assert_ok(d[i].status);
        objs[d[i].cookie].loc = d[i].loc;
    }
    for (int i = 0; i < N; i++)
        t_assert_ok(restore(sp, &objs[i]));
    ss__spill_close(sp);
    for (int i = 0; i < N; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* ------------------------------------------------------- hostile files */

#define GiB (1024ull * MiB)
#define SPARSE (64 * GiB)

/* A sparse file of `size` bytes named like spill file `file`, starting
 * with `hdr` (hdr_len bytes). */
static void sparse_file(const char *dir, uint64_t file, uint64_t size, const void *hdr,
                        size_t hdr_len)
{
    char path[300];
    int fd;

    file_path(path, sizeof(path), dir, file);
    fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, hdr, hdr_len, 0), (ssize_t)hdr_len);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

/* Things named like spill files that are not: a FIFO (an open would block
 * for ever), a symlink, a directory; and two 64 GiB sparse files, one of
 * garbage, one whose header is valid and claims the whole file as one
 * object. The scan completes, leaves the FIFO, symlink and directory alone
 * (one warning each), gives up on the garbage after the longest record
 * and indexes the plausible object from its header, without reading more
 * than a few MiB in all; the real objects are all found and restored. The
 * old reader blocked in open() on the FIFO (alarm() makes that a failure)
 * and read both sparse files to their ends. */
static void test_scan_hostile(void **state)
{
    const struct mode *m = *state;
    struct obj objs[6];
    struct seen seen = { 0 };
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256], path[300], target[300];
    const char *dir;
    uint8_t garbage[8192];
    ss__spill_rec r;
    ss_id fake;
    int n = 6, found = 0;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < n; i++)
        obj_make(&objs[i], (uint32_t)i, i < 2 ? 2 * MiB + (uint64_t)i : 3000 * (uint64_t)i + 1,
                 8, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, n, NULL);
    ss__spill_close(sp);

    /* named like files of this engine (it scans the names it saw at open) */
    file_path(path, sizeof(path), dir, 0xf1);
    assert_int_equal(mkfifo(path, 0600), 0);
    file_path(target, sizeof(target), dir, objs[0].loc.file);
    file_path(path, sizeof(path), dir, 0xf2);
    assert_int_equal(symlink(target, path), 0);
    file_path(path, sizeof(path), dir, 0xf3);
    assert_int_equal(mkdir(path, 0700), 0);
    fill(garbage, sizeof(garbage), 99);
    sparse_file(dir, 0xf4, SPARSE, garbage, sizeof(garbage));
    memset(&fake, 0, sizeof(fake));
    memcpy(fake.b, "sparse-fake", 11);
    ss__spill_rec_fill(&r, SS_SPILL_REC_OBJECT, &fake, 0, 0, SPARSE - PAGE, (uint32_t)PAGE, SPARSE,
                       1, 0, ss__spill_hash64("", 0, SS_SPILL_SEED));
    sparse_file(dir, 0xf5, SPARSE, &r, sizeof(r));

    alarm(120); /* the old reader never came back from the FIFO */
    sp = eng_open(dir, m->flags);
    assert_int_equal(ss__spill_scan(sp, on_scan, &seen), n + 1);
    alarm(0);
    for (int i = 0; i < seen.n; i++) {
        if (memcmp(seen.loc[i].id.b, fake.b, SS_ID_SIZE) != 0)
            continue;
        found++;
        assert_int_equal(seen.loc[i].size, SPARSE - PAGE);
        assert_int_equal(seen.loc[i].file, 0xf5);
        seen.loc[i] = seen.loc[--seen.n]; /* check_seen: the real ones */
    }
    assert_int_equal(found, 1);
    check_seen(&seen, objs, n);
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.damaged, 1);          /* the garbage file, once */
    assert_true(st.scan_bytes < 8 * MiB);     /* headers, small records, no sparse data */
    assert_false(st.scanning);
    for (int i = 0; i < n; i++)
        t_assert_ok(restore(sp, &objs[i]));
    /* left alone: not ours to remove */
    file_path(path, sizeof(path), dir, 0xf1);
    assert_int_equal(access(path, F_OK), 0);
    file_path(path, sizeof(path), dir, 0xf2);
    assert_int_equal(faccessat(AT_FDCWD, path, F_OK, AT_SYMLINK_NOFOLLOW), 0);
    t_assert_ok(ss__spill_wait(sp, 30000));
    /* the garbage file held nothing readable: removed like any such file */
    file_path(path, sizeof(path), dir, 0xf4);
    assert_int_equal(access(path, F_OK), -1);
    ss__spill_close(sp);
    file_path(path, sizeof(path), dir, 0xf1);
    unlink(path);
    file_path(path, sizeof(path), dir, 0xf2);
    unlink(path);
    file_path(path, sizeof(path), dir, 0xf3);
    rmdir(path);
    file_path(path, sizeof(path), dir, 0xf5);
    unlink(path);
    for (int i = 0; i < n; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* The scan runs in its own thread while the engine serves, and a cancel
 * (or a close) stops it wherever it is: here stalled before its first file
 * (a test hook), as a scan stuck on a slow disk would be. */
static void test_scan_async_cancel(void **state)
{
    const struct mode *m = *state;
    struct obj objs[4];
    struct seen seen = { 0 };
    ss__spill_stats st;
    ss__spill *sp;
    char buf[256];
    const char *dir;
    ss__spill_done d[4];
    int n = 4;

    MODE_SKIPS(m);
    dir = mode_dir(m, buf, sizeof(buf));
    T_SKIP_IF(!dir, NULL, no_mount_why);
    for (int i = 0; i < n; i++)
        obj_make(&objs[i], (uint32_t)i, 300 * KiB + (uint64_t)i, 4, 0);
    sp = eng_open(dir, m->flags);
    spill_all(sp, objs, n, NULL);
    ss__spill_close(sp);

    /* stalled: running, nothing found; cancel ends it */
    sp = eng_open(dir, m->flags);
    ss__spill_inject(sp, SS_SPILL_INJ_SCAN_STALL, 1, 0);
    t_assert_ok(ss__spill_scan_start(sp, on_scan, &seen));
    t_assert_err(ss__spill_scan_start(sp, on_scan, &seen), -EBUSY);
    assert_int_equal(ss__spill_reap(sp, d, 4), 0);
    assert_int_equal(ss__spill_scan_status(sp), 0);
    ss__spill_stats_get(sp, &st);
    assert_true(st.scanning);
    alarm(60);
    ss__spill_scan_cancel(sp);
    alarm(0);
    t_assert_err(ss__spill_scan_status(sp), -ECANCELED);
    assert_int_equal(seen.n, 0);
    ss__spill_stats_get(sp, &st);
    assert_false(st.scanning);
    ss__spill_close(sp);
    assert_int_equal(count_files(dir, ".spill"), n); /* nothing touched */

    /* stalled, and closed as it is */
    sp = eng_open(dir, m->flags);
    ss__spill_inject(sp, SS_SPILL_INJ_SCAN_STALL, 1, 0);
    t_assert_ok(ss__spill_scan_start(sp, on_scan, &seen));
    alarm(60);
    ss__spill_close(sp);
    alarm(0);

    /* not stalled: the results arrive through reap */
    sp = eng_open(dir, m->flags);
    t_assert_ok(ss__spill_scan_start(sp, on_scan, &seen));
    for (int i = 0; i < 6000 && ss__spill_scan_status(sp) == 0; i++) {
        struct pollfd pfd = { .fd = ss__spill_event_fd(sp), .events = POLLIN };

        poll(&pfd, 1, 10);
        assert_int_equal(ss__spill_reap(sp, d, 4), 0);
    }
    assert_int_equal(ss__spill_scan_status(sp), 1);
    assert_int_equal(ss__spill_scan_kept(sp), (uint64_t)n);
    check_seen(&seen, objs, n);
    for (int i = 0; i < n; i++)
        t_assert_ok(restore(sp, &objs[i]));
    ss__spill_stats_get(sp, &st);
    assert_int_equal(st.scan_files, (uint64_t)n);
    ss__spill_close(sp);
    for (int i = 0; i < n; i++)
        obj_free(&objs[i]);
    mode_done();
}

/* ------------------------------------------------ the store's scan gate */

static ss_id gate_id(int n)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "gate-%d", n);
    return id;
}

struct gate_waiter {
    const char *sock;
    _Atomic bool done;
    int contains, got;
    uint64_t size;
    uint8_t first;
};

/* Another client: a CONTAINS and a GET without timeout of a spilled id. */
static void *gate_waiter_main(void *arg)
{
    struct gate_waiter *w = arg;
    ss_client *c = NULL;
    ss_id id = gate_id(1);
    ss_object o;

    w->contains = w->got = -1;
    if (ss_connect(w->sock, 0, &c) == 0) {
        w->contains = ss_contains(c, &id);
        w->got = ss_get(c, &id, 1, -1, &o);
        if (w->got == 1) {
            w->size = o.size;
            w->first = *(const uint8_t *)o.data;
            (void)!ss_release(c, &id);
        }
        ss_disconnect(c);
    }
    atomic_store(&w->done, true);
    return NULL;
}

/* A small embedded store spilling everything idle into spill. */
static void store_options(const char *spill)
{
    t_assert_ok(ss_option_set(SS_OPT_CAPACITY, "32M"));
    t_assert_ok(ss_option_set(SS_OPT_POOL_SIZE, "0"));
    t_assert_ok(ss_option_set(SS_OPT_HUGEPAGES, "off"));
    t_assert_ok(ss_option_set(SS_OPT_SPILL_HIGH, "0")); /* everything idle goes to disk */
    t_assert_ok(ss_option_set(SS_OPT_SPILL_DIR, spill));
}

/* A store restarted on a spill directory answers HELLO and STATS while its
 * scan is held (ss__spill_scan_hold); a GET with a timeout is answered at
 * it from what is known; a CONTAINS and a GET without timeout wait until
 * the scan is over and then find the object; a stop while the scan is held
 * is prompt. */
static void test_store_scan_gate(void **state)
{
    char sock[256], spill[256];
    uint8_t data[1000];
    struct gate_waiter w = { 0 };
    pthread_t th;
    ss_client *c = NULL;
    ss_object o;
    ss_stats st;

    (void)state;
    snprintf(sock, sizeof(sock), "%s/gate.sock", t_tmpdir());
    snprintf(spill, sizeof(spill), "%s/spill-gate", t_tmpdir());
    store_options(spill);
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    for (int i = 0; i < 3; i++) {
        ss_id id = gate_id(i);

        memset(data, 'a' + i, sizeof(data));
        t_assert_ok(ss_put(c, &id, data, sizeof(data), NULL, 0));
    }
    st = t_store_stats(c);
    for (int i = 0; i < 1000 && st.spilled_objects < 3; i++) {
        usleep(10000);
        st = t_store_stats(c);
    }
    assert_int_equal(st.spilled_objects, 3);
    ss_disconnect(c);

    alarm(60);
    atomic_store(&ss__spill_scan_hold, 1);
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c)); /* HELLO: answered */
    st = t_store_stats(c);
    assert_true(st.spill_mode & SS_SPILL_MODE_SCANNING);
    assert_int_equal(st.spilled_objects, 0);
    {
        ss_id id = gate_id(0);

        assert_int_equal(ss_get(c, &id, 1, 50, &o), 0); /* its timeout: nothing known */
    }
    w.sock = sock;
    assert_int_equal(pthread_create(&th, NULL, gate_waiter_main, &w), 0);
    usleep(200000);
    assert_false(atomic_load(&w.done)); /* held while the scan is */
    atomic_store(&ss__spill_scan_hold, 0);
    pthread_join(th, NULL);
    assert_int_equal(w.contains, 1);
    assert_int_equal(w.got, 1);
    assert_int_equal(w.size, sizeof(data));
    assert_int_equal(w.first, 'b');
    st = t_store_stats(c);
    assert_false(st.spill_mode & SS_SPILL_MODE_SCANNING);
    assert_int_equal(st.objects, 3);
    ss_disconnect(c);

    /* stopped while the scan is held: at once, the files stay */
    atomic_store(&ss__spill_scan_hold, 1);
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    ss_disconnect(c);
    atomic_store(&ss__spill_scan_hold, 0);
    alarm(0);

    /* and everything is still there */
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    for (int i = 0; i < 3; i++) {
        ss_id id = gate_id(i);

        assert_int_equal(ss_contains(c, &id), 1);
        t_assert_ok(ss_delete(c, &id));
    }
    ss_disconnect(c);
}

/* The one "<16 hex>.spill" file in dir: its name and bytes (malloc'ed). */
static uint8_t *only_spill_file(const char *dir, char name[64], size_t *len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    struct stat sb;
    uint8_t *buf;
    int fd, n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);

        if (l > 6 && !strcmp(e->d_name + l - 6, ".spill")) {
            snprintf(name, 64, "%s", e->d_name);
            n++;
        }
    }
    closedir(d);
    assert_int_equal(n, 1);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &sb), 0);
    *len = (size_t)sb.st_size;
    buf = malloc(*len);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, *len, 0), (ssize_t)*len);
    close(fd);
    return buf;
}

/* Put `id` with size bytes of `fill` and wait until it is on disk only. */
static void put_spilled(ss_client *c, const ss_id *id, size_t size, int fill)
{
    uint8_t *data = malloc(size);
    ss_stats st;

    assert_non_null(data);
    memset(data, fill, size);
    t_assert_ok(ss_put(c, id, data, size, NULL, 0));
    free(data);
    st = t_store_stats(c);
    for (int i = 0; i < 1000 && st.spilled_objects < 1; i++) {
        usleep(10000);
        st = t_store_stats(c);
    }
    assert_int_equal(st.spilled_objects, 1);
}

/* A store embedded in a child process (to be SIGKILLed) that loses the
 * removals nobody waits on (ss__spill_unwaited_lost), as a crash right
 * after them would: returns once it serves sock. */
static pid_t fork_lossy_store(const char *sock)
{
    ss_client *c = NULL;
    int p[2];
    uint8_t b = 0;
    pid_t pid;

    assert_int_equal(pipe(p), 0);
    atomic_store(&ss__spill_unwaited_lost, 1);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (ss_connect(sock, SS_CONNECT_EMBED, &c) < 0 || write(p[1], &b, 1) != 1)
            _exit(T_EXIT_ERROR);
        for (;;)
            pause();
    }
    atomic_store(&ss__spill_unwaited_lost, 0);
    close(p[1]);
    assert_int_equal(read(p[0], &b, 1), 1);
    close(p[0]);
    return pid;
}

static void kill_store(pid_t pid)
{
    int st = 0;

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* After a crash: id is not back, and nothing else is there. */
static void check_not_back(const char *sock, const ss_id *id, const char *what)
{
    ss_client *c = NULL;

    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    if (ss_contains(c, id) != 0)
        fail_msg("a deleted object is back after a crash (%s)", what);
    assert_int_equal(t_store_stats(c).objects, 0);
    ss_disconnect(c);
}

/* Two records of one id on disk (an older copy that a crash kept, as the
 * old file put back): the restarted store keeps the newer and removes the
 * older; a DELETE of the id then answers only once that removal is durable
 * too. The store runs in a child killed right after the DELETE answered,
 * with removals nobody waits on lost (ss__spill_unwaited_lost), as a crash
 * right after them would lose them: after a restart the id is gone. (The
 * older copy's removal used to be one nobody waited on: the DELETE
 * answered 0 and the old object was back after the crash.) */
static void test_store_dup_delete(void **state)
{
    char sock[256], spill[256], sub[512], name[64], path[600];
    ss_id id;
    ss_client *c = NULL;
    uint8_t *old;
    size_t old_len;
    int fd;
    pid_t pid;
    DIR *d;
    struct dirent *e;

    (void)state;
    memset(&id, 0, sizeof(id));
    memcpy(id.b, "dup-delete", 10);
    snprintf(sock, sizeof(sock), "%s/dup.sock", t_tmpdir());
    snprintf(spill, sizeof(spill), "%s/spill-dup", t_tmpdir());
    store_options(spill);

    /* the old copy: spilled, its file kept aside */
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    put_spilled(c, &id, 300 * KiB, 'o');
    ss_disconnect(c);
    d = opendir(spill);
    assert_non_null(d);
    sub[0] = '\0';
    while ((e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, "store-", 6))
            snprintf(sub, sizeof(sub), "%s/%s", spill, e->d_name);
    closedir(d);
    assert_true(sub[0] != '\0');
    old = only_spill_file(sub, name, &old_len);

    /* deleted, created again and spilled: the new copy */
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    t_assert_ok(ss_delete(c, &id));
    put_spilled(c, &id, 400 * KiB, 'n');
    ss_disconnect(c);

    /* the old file back, as a crash before its unlink would leave it */
    snprintf(path, sizeof(path), "%s/%s", sub, name);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, old, old_len), (ssize_t)old_len);
    close(fd);
    free(old);

    /* a store that loses removals nobody waits on; killed after the DELETE */
    pid = fork_lossy_store(sock);
    t_assert_ok(ss_connect(sock, 0, &c));
    {
        ss_object o;

        assert_int_equal(ss_get(c, &id, 1, 20000, &o), 1); /* the newer copy won */
        assert_int_equal(o.size, 400 * KiB);
        t_assert_ok(ss_release(c, &id));
    }
    t_assert_ok(ss_delete(c, &id));
    kill_store(pid);
    ss_disconnect(c);
    check_not_back(sock, &id, "an older copy of its id");
}

/* A restored object (it keeps its disk copy) evicted (SEALSTORE_EVICT),
 * created again in memory and deleted: the DELETE answers only once the
 * evicted copy's removal is durable, so after a crash right after it the
 * object is not back. (The evicted copy's removal was one nobody waited
 * on, and the DELETE of the new object, with no disk copy, answered at
 * once.) */
static void test_store_evict_delete(void **state)
{
    char sock[256], spill[256];
    ss_client *c = NULL;
    ss_object o;
    ss_id id, other;
    pid_t pid;
    uint8_t *data = malloc(MiB);
    int n = 0;

    (void)state;
    assert_non_null(data);
    memset(data, 'e', MiB);
    memset(&id, 0, sizeof(id));
    memcpy(id.b, "evict-delete", 12);
    snprintf(sock, sizeof(sock), "%s/evict.sock", t_tmpdir());
    snprintf(spill, sizeof(spill), "%s/spill-evict", t_tmpdir());
    store_options(spill);
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    put_spilled(c, &id, 300 * KiB, 'o');
    ss_disconnect(c);

    t_assert_ok(ss_option_set(SS_OPT_EVICT, "on"));
    pid = fork_lossy_store(sock);
    t_assert_ok(ss_connect(sock, 0, &c));
    assert_int_equal(ss_get(c, &id, 1, 20000, &o), 1); /* restored */
    t_assert_ok(ss_release(c, &id));
    /* fill the store until the restored object is evicted */
    memset(&other, 0, sizeof(other));
    while (ss_contains(c, &id) == 1) {
        assert_true(n < 256);
        memcpy(other.b, &n, sizeof(n));
        n++;
        t_assert_ok(ss_put(c, &other, data, MiB, NULL, 0));
    }
    t_assert_ok(ss_put(c, &id, data, 1000, NULL, 0)); /* in memory only */
    t_assert_ok(ss_delete(c, &id));
    kill_store(pid);
    ss_disconnect(c);
    t_assert_ok(ss_option_set(SS_OPT_EVICT, "off"));
    check_not_back(sock, &id, "its evicted copy");
    free(data);
}

/* A store's spill fails and so does its cleanup (the directory fsync
 * after the rename, then the unlink of the file): the engine reports the
 * record it may have left, and the store removes it, so after a DELETE of
 * the object (still in memory) and a restart the object is not back. (The
 * store used to ignore such a record: the DELETE answered at once and the
 * object came back with the next start.) */
static void test_store_failed_spill(void **state)
{
    char sock[256], spill[256];
    ss_client *c = NULL;
    ss_stats st;
    ss_id id;
    uint8_t *data = malloc(300 * KiB);

    (void)state;
    assert_non_null(data);
    memset(data, 'f', 300 * KiB);
    memset(&id, 0, sizeof(id));
    memcpy(id.b, "failed-spill", 12);
    snprintf(sock, sizeof(sock), "%s/fail.sock", t_tmpdir());
    snprintf(spill, sizeof(spill), "%s/spill-fail", t_tmpdir());
    store_options(spill);
    ss__spill_inject_on_open = (ss__spill_inj_spec){
        .mask = SS_SPILL_INJ_STICKY | SS_SPILL_INJ_SYNC | SS_SPILL_INJ_UNLINK,
        .nth = 2, .hits = 2, .err = -EIO };
    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    memset(&ss__spill_inject_on_open, 0, sizeof(ss__spill_inject_on_open));
    t_assert_ok(ss_put(c, &id, data, 300 * KiB, NULL, 0));
    st = t_store_stats(c);
    for (int i = 0; i < 1000 && st.spill_errors < 1; i++) {
        usleep(10000);
        st = t_store_stats(c);
    }
    assert_true(st.spill_errors >= 1);
    t_assert_ok(ss_delete(c, &id));
    ss_disconnect(c);

    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    if (ss_contains(c, &id) != 0)
        fail_msg("a deleted object is back after a restart (a failed spill's record)");
    assert_int_equal(t_store_stats(c).objects, 0);
    ss_disconnect(c);
    free(data);
}

/* ------------------------------------------------------------------ main */

static bool probe_uring(void)
{
    struct io_uring ring;
    int rc = io_uring_queue_init(2, &ring, 0);

    if (rc == 0) {
        io_uring_queue_exit(&ring);
        return true;
    }
    if (rc != -ENOSYS && rc != -EPERM && rc != -EINVAL)
        fprintf(stderr, "t_spill: io_uring_queue_init: %s\n", strerror(-rc));
    return false;
}

#define MODES(f)                                                                \
    cmocka_unit_test_prestate(f, (void *)&M_EXT4),                              \
        cmocka_unit_test_prestate(f, (void *)&M_EXT4_FB),                       \
        cmocka_unit_test_prestate(f, (void *)&M_TMPFS),                         \
        cmocka_unit_test_prestate(f, (void *)&M_TMPFS_FB)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_dir_list_cloexec),
        MODES(test_roundtrip),
        cmocka_unit_test_prestate(test_roundtrip, (void *)&M_EXT4_SQPOLL),
        cmocka_unit_test_prestate(test_roundtrip, (void *)&M_EXT4_INLINE),
        cmocka_unit_test_prestate(test_delete_scan, (void *)&M_EXT4_SQPOLL),
        MODES(test_delete_scan),
        cmocka_unit_test_prestate(test_v1_records, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_v1_records, (void *)&M_TMPFS_FB),
        MODES(test_delete_notify),
        MODES(test_restore_torn_tombstone),
        cmocka_unit_test_prestate(test_sq_full, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_sq_full, (void *)&M_TMPFS),
        MODES(test_delete_during_append),
        cmocka_unit_test_prestate(test_fused_reclaim, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_fused_reclaim, (void *)&M_TMPFS_FB),
        MODES(test_corrupt),
        cmocka_unit_test_prestate(test_truncated, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_truncated, (void *)&M_TMPFS_FB),
        cmocka_unit_test_prestate(test_inject, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_inject, (void *)&M_EXT4_FB),
        MODES(test_failed_spill),
        cmocka_unit_test_prestate(test_enospc, (void *)&M_TMPFS),
        cmocka_unit_test_prestate(test_enospc, (void *)&M_TMPFS_FB),
        cmocka_unit_test_prestate(test_reap_max, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_doneq, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_doneq, (void *)&M_TMPFS_FB),
        cmocka_unit_test_prestate(test_concurrent, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_concurrent, (void *)&M_EXT4_FB),
        cmocka_unit_test_prestate(test_concurrent, (void *)&M_TMPFS),
        cmocka_unit_test_prestate(test_scan_hostile, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_scan_hostile, (void *)&M_TMPFS_FB),
        cmocka_unit_test_prestate(test_scan_async_cancel, (void *)&M_EXT4),
        cmocka_unit_test_prestate(test_scan_async_cancel, (void *)&M_EXT4_FB),
        cmocka_unit_test(test_store_scan_gate),
        cmocka_unit_test(test_store_dup_delete),
        cmocka_unit_test(test_store_failed_spill),
        cmocka_unit_test(test_store_evict_delete),
    };

    t_tmpdir(); /* made now (exits 99 if it cannot be), so its cleanup runs last */
    atexit(umount_all); /* after t_tmpdir's: runs before its cleanup */
    have_uring = probe_uring();
    return t_run(tests, NULL, NULL);
}
