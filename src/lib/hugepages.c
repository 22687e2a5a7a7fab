/* SPDX-License-Identifier: MIT */
/*
 * Hugetlb pools: reading, the "configured?" question the backing chain's
 * log lines ask, and reservations for a process's lifetime with a crash
 * record (hugepages.h has the design). The give-back path runs in signal
 * handlers, so it uses only the sys.h wrappers of open/read/write/
 * ftruncate/fsync/close (each one system call) and formats numbers and
 * paths by hand.
 */
#include "hugepages.h"

#include "options.h"
#include "sys.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>

#define POOL_DIR "/sys/kernel/mm/hugepages/hugepages-"
#define BOOT_ID "/proc/sys/kernel/random/boot_id"
#define RECORD_MAGIC "sealstore-hugepages"

/* ------------------------------------------- async-signal-safe numbers */

/* Decimal of v into buf (at least 21 bytes), NUL-terminated; its length. */
static size_t fmt_u64(uint64_t v, char *buf)
{
    char tmp[21];
    size_t n = 0, i = 0;

    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        buf[i++] = tmp[--n];
    buf[i] = '\0';
    return i;
}

/* POOL_DIR<size>kB/<file> into buf (POOL_PATH_MAX bytes), by hand: the
 * give-back runs in signal handlers, where snprintf is not allowed. */
#define POOL_PATH_MAX 160
static void pool_path(uint64_t page_size, const char *file, char *buf)
{
    char num[24];
    size_t n = sizeof(POOL_DIR) - 1, k;

    memcpy(buf, POOL_DIR, n);
    k = fmt_u64(page_size / 1024, num);
    memcpy(buf + n, num, k);
    n += k;
    memcpy(buf + n, "kB/", 3);
    n += 3;
    k = strlen(file);
    if (n + k >= POOL_PATH_MAX)
        k = POOL_PATH_MAX - 1 - n;
    memcpy(buf + n, file, k);
    buf[n + k] = '\0';
}

/* ------------------------------------------------------------- reading */

ss__hpool ss__hpool_read(uint64_t page_size)
{
    static const char *const files[] = {"free_hugepages", "resv_hugepages",
                                        "surplus_hugepages", "nr_overcommit_hugepages"};
    ss__hpool h = {0};
    uint64_t *dst[] = {&h.free, &h.resv, &h.surplus, &h.overcommit};
    char path[POOL_PATH_MAX];

    pool_path(page_size, "nr_hugepages", path);
    if (ss__sys_read_u64(path, &h.nr) < 0)
        return h;
    h.present = true;
    for (size_t i = 0; i < SS_ARRAY_SIZE(files); i++) {
        pool_path(page_size, files[i], path);
        (void)ss__sys_read_u64(path, dst[i]);
    }
    return h;
}

uint64_t ss__hpool_avail(const ss__hpool *h)
{
    return h->free > h->resv ? h->free - h->resv : 0;
}

bool ss__hpool_configured(uint64_t page_size)
{
    char path[POOL_PATH_MAX];
    uint64_t v;

    /* two reads, not ss__hpool_read's five: the backing chain asks on
     * every fallback until it has said what it has to say */
    pool_path(page_size, "nr_hugepages", path);
    if (ss__sys_read_u64(path, &v) == 0 && v > 0)
        return true;
    pool_path(page_size, "nr_overcommit_hugepages", path);
    return ss__sys_read_u64(path, &v) == 0 && v > 0;
}

/* ------------------------------------------- async-signal-safe file I/O */

static int read_u64_raw(const char *path, uint64_t *out)
{
    char buf[32];
    ssize_t n;
    uint64_t v = 0;
    int fd = ss__sys_open(path, O_RDONLY | O_CLOEXEC, 0);

    if (fd < 0)
        return fd;
    n = ss__sys_read(fd, buf, sizeof(buf) - 1);
    ss__sys_close(fd);
    if (n <= 0 || buf[0] < '0' || buf[0] > '9')
        return -EIO;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(buf[i] - '0');
    *out = v;
    return 0;
}

static int write_u64_raw(const char *path, uint64_t v)
{
    char buf[24];
    size_t n = fmt_u64(v, buf);
    ssize_t w;
    int fd = ss__sys_open(path, O_WRONLY | O_CLOEXEC, 0);

    if (fd < 0)
        return fd;
    w = ss__sys_write(fd, buf, n);
    ss__sys_close(fd);
    return w < 0 ? (int)w : 0;
}

/*
 * The pool's persistent pages: nr_hugepages less surplus_hugepages. Writing
 * nr_hugepages sets this count, while reading it counts the surplus pages
 * too (pages still mapped when the pool was lowered below what is in use,
 * or made for nr_overcommit_hugepages), which the kernel frees when they
 * are unmapped; a raise first turns surplus pages into persistent ones.
 * Arithmetic on what nr_hugepages reads would therefore keep other
 * processes' surplus pages in the pool for good. A surplus page freed
 * between the reads changes both counts: the surplus is read on both sides
 * of nr_hugepages until the two agree.
 */
static int pool_persistent(uint64_t page_size, uint64_t *out, uint64_t *surplus)
{
    char nr_path[POOL_PATH_MAX], sur_path[POOL_PATH_MAX];
    uint64_t nr = 0, s1 = 0, s2 = 0;
    int rc = 0;

    pool_path(page_size, "nr_hugepages", nr_path);
    pool_path(page_size, "surplus_hugepages", sur_path);
    for (int i = 0; i < 8; i++) {
        rc = read_u64_raw(sur_path, &s1);
        if (rc == 0)
            rc = read_u64_raw(nr_path, &nr);
        if (rc == 0)
            rc = read_u64_raw(sur_path, &s2);
        if (rc < 0 || s1 == s2)
            break;
    }
    if (rc < 0)
        return rc;
    *out = nr > s2 ? nr - s2 : 0;
    if (surplus)
        *surplus = s2;
    return 0;
}

/* Lower the pool's persistent pages by `pages` from whatever they are now. */
static int pool_lower(uint64_t page_size, uint64_t pages)
{
    char path[POOL_PATH_MAX];
    uint64_t nr = 0;
    int rc;

    rc = pool_persistent(page_size, &nr, NULL);
    if (rc < 0)
        return rc;
    pool_path(page_size, "nr_hugepages", path);
    return write_u64_raw(path, nr > pages ? nr - pages : 0);
}

/* --------------------------------------------------------- reservation */

void ss__hp_init(ss__hp_reservation *r)
{
    memset(r, 0, sizeof(*r));
    r->record_fd = -1;
}

static const char *page_name(uint64_t page_size)
{
    return page_size >= SS_GiB ? "1 GiB" : "2 MiB";
}

static int boot_id(char *buf, size_t len)
{
    int n = ss__sys_read_file(BOOT_ID, buf, len);

    if (n <= 0)
        return n < 0 ? n : -EIO;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

/* The record says what this process added; written whole, then synced. */
static int record_write(const ss__hp_reservation *r)
{
    char line[200], boot[64];
    ssize_t w;
    int n, rc;

    if (boot_id(boot, sizeof(boot)) < 0)
        boot[0] = '\0';
    n = snprintf(line, sizeof(line), RECORD_MAGIC " boot=%s page=%llu added=%llu pid=%d\n",
                 boot, (unsigned long long)r->page_size, (unsigned long long)r->added,
                 (int)r->owner);
    rc = ss__sys_ftruncate(r->record_fd, 0);
    if (rc < 0)
        return rc;
    w = ss__sys_pwrite(r->record_fd, line, (size_t)n, 0);
    if (w != n)
        return w < 0 ? (int)w : -EIO;
    return ss__sys_fsync(r->record_fd);
}

int ss__hp_reserve(ss__hp_reservation *r, uint64_t page_size, uint64_t pages, char *msg,
                   size_t len)
{
    ss__hpool h = ss__hpool_read(page_size);
    uint64_t avail = ss__hpool_avail(&h), target, persistent = 0, surplus = 0, now = 0;
    char path[POOL_PATH_MAX];
    int rc;

    r->page_size = page_size;
    if (!h.present || pool_persistent(page_size, &persistent, &surplus) < 0) {
        snprintf(msg, len, "no %s hugepage pool in this kernel", page_name(page_size));
        return -ENOENT;
    }
    if (avail >= pages) {
        snprintf(msg, len, "%llu %s hugepages already free: nothing reserved",
                 (unsigned long long)avail, page_name(page_size));
        return 0;
    }
    /* the raise turns the surplus pages (in use, not free) into persistent
     * ones before it makes new pages: the new pages come on top of both,
     * and `added` counts both, so that the give-back leaves the surplus
     * pages surplus again (pool_persistent) */
    target = persistent + surplus + (pages - avail);
    pool_path(page_size, "nr_hugepages", path);
    rc = write_u64_raw(path, target);
    /* the kernel grants what it finds contiguous, and may take the pages
     * before failing the write: what counts is what it reports now */
    r->before = persistent;
    r->after = pool_persistent(page_size, &now, NULL) == 0 ? now : persistent;
    if (r->after > persistent) {
        r->added = r->after - persistent;
        r->owner = ss__sys_getpid();
    }
    if (r->added && r->record_fd >= 0) {
        int wrc = record_write(r);

        if (wrc < 0) {
            snprintf(msg, len,
                     "reserved %llu %s hugepages (pool %llu -> %llu) but cannot record "
                     "them for a crash (%s): given back at exit only",
                     (unsigned long long)r->added, page_name(page_size),
                     (unsigned long long)r->before, (unsigned long long)r->after,
                     strerror(-wrc));
            return r->after >= target ? 0 : -ENOMEM;
        }
    }
    if (rc < 0 && !r->added) {
        snprintf(msg, len, "cannot raise %s to %llu: %s (%llu free)", path,
                 (unsigned long long)target, strerror(-rc), (unsigned long long)avail);
        return rc;
    }
    h = ss__hpool_read(page_size);
    snprintf(msg, len,
             "reserved %llu more %s hugepages (pool %llu -> %llu, %llu asked), %llu free "
             "now, given back at exit",
             (unsigned long long)r->added, page_name(page_size), (unsigned long long)r->before,
             (unsigned long long)r->after, (unsigned long long)(pages - avail),
             (unsigned long long)ss__hpool_avail(&h));
    return r->after >= target ? 0 : -ENOMEM;
}

void ss__hp_give_back(ss__hp_reservation *r)
{
    if (!r->added || ss__sys_getpid() != r->owner)
        return;
    (void)pool_lower(r->page_size, r->added);
    r->added = 0;
    if (r->record_fd >= 0) {
        (void)ss__sys_ftruncate(r->record_fd, 0);
        (void)ss__sys_fsync(r->record_fd);
    }
}

/* ---------------------------------------------------------- the record */

/* "key=" value of a record line into out (up to a blank); false if absent. */
static bool record_field(const char *line, const char *key, char *out, size_t len)
{
    const char *p = strstr(line, key);
    size_t n;

    if (!p)
        return false;
    p += strlen(key);
    n = strcspn(p, " \n");
    if (n >= len)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

int ss__hp_record_take(ss__hp_reservation *r, const char *path, bool create, char *msg,
                       size_t len)
{
    char line[256], boot[64], now[64], page[32], added[32];
    uint64_t ps, pages;
    ssize_t n;
    int fd, rc;

    if (len)
        msg[0] = '\0';
    fd = ss__sys_open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
    if (fd < 0)
        return fd;
    rc = ss__sys_flock(fd, LOCK_EX | LOCK_NB);
    if (rc < 0) {
        ss__sys_close(fd);
        return rc == -EWOULDBLOCK ? -EBUSY : rc;
    }
    r->record_fd = fd;
    n = ss__sys_pread(fd, line, sizeof(line) - 1, 0);
    if (n <= 0)
        return (int)n;
    line[n] = '\0';
    if (strncmp(line, RECORD_MAGIC " ", sizeof(RECORD_MAGIC)) ||
        !record_field(line, "boot=", boot, sizeof(boot)) ||
        !record_field(line, "page=", page, sizeof(page)) ||
        !record_field(line, "added=", added, sizeof(added)) ||
        ss__parse_size(page, &ps) < 0 || ss__parse_size(added, &pages) < 0 ||
        (ps != 2 * SS_MiB && ps != SS_GiB)) {
        snprintf(msg, len, "%s is not a hugepage record: emptied, pool untouched", path);
        (void)ss__sys_ftruncate(fd, 0);
        return 0;
    }
    if (boot_id(now, sizeof(now)) < 0 || strcmp(now, boot) != 0) {
        snprintf(msg, len,
                 "%s is from an earlier boot: emptied, pool untouched (the boot rebuilt it)",
                 path);
        (void)ss__sys_ftruncate(fd, 0);
        return 0;
    }
    if (pages == 0) {
        (void)ss__sys_ftruncate(fd, 0);
        return 0;
    }
    rc = pool_lower(ps, pages);
    if (rc < 0) {
        snprintf(msg, len, "cannot give back %llu %s hugepages a stopped run added (%s): "
                 "record kept", (unsigned long long)pages, page_name(ps), strerror(-rc));
        return rc;
    }
    (void)ss__sys_ftruncate(fd, 0);
    (void)ss__sys_fsync(fd);
    snprintf(msg, len, "gave back %llu %s hugepages that a run which did not stop cleanly "
             "had added (pool now %llu)", (unsigned long long)pages, page_name(ps),
             (unsigned long long)ss__hpool_read(ps).nr);
    return (int)(pages > INT_MAX ? INT_MAX : pages);
}

void ss__hp_record_release(ss__hp_reservation *r)
{
    if (r->record_fd >= 0)
        ss__sys_close(r->record_fd);
    r->record_fd = -1;
}

/* ------------------------------------------------------------- parsing */

int ss__hp_parse(const char *spec, uint64_t *page_size, uint64_t *pages)
{
    char size[64];
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    uint64_t bytes, ps = 2 * SS_MiB;

    if (n == 0 || n >= sizeof(size))
        return -EINVAL;
    memcpy(size, spec, n);
    size[n] = '\0';
    if (ss__parse_size(size, &bytes) < 0)
        return -EINVAL;
    if (colon) {
        if (ss__parse_size(colon + 1, &ps) < 0 || (ps != 2 * SS_MiB && ps != SS_GiB))
            return -EINVAL;
    }
    *page_size = ps;
    *pages = bytes / ps + (bytes % ps != 0);
    return 0;
}
