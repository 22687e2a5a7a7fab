/* SPDX-License-Identifier: MIT */
/*
 * hugepages.c without touching the machine's pools: the --reserve-hugepages
 * value parser, and the crash record's handling of what it finds (nothing,
 * garbage, a record of another boot, a record of nothing added, a record
 * held by a live owner). Records that would resize the pool are exercised
 * as root by tests/integration/t_service.
 */
#include "config.h"

#include "t_helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "hugepages.h"

#define MiB2 (2ull << 20)

static void t_parse(void **state)
{
    static const struct {
        const char *spec;
        uint64_t page, pages;
    } ok[] = {
        {"2G", MiB2, 1024},   {"3M", MiB2, 2},        {"1", MiB2, 1},
        {"0", MiB2, 0},       {"2G:1G", SS_GiB, 2},   {"1536M:1G", SS_GiB, 2},
        {"4M:2M", MiB2, 2},   {"1G:2MiB", MiB2, 512},
    };
    static const char *const bad[] = {"", ":1G", "2G:", "2G:4M", "1.5G", "-1", "2G:1G:1G",
                                      "x", "2 G"};
    uint64_t page, pages;

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(ok); i++) {
        page = pages = 99;
        if (ss__hp_parse(ok[i].spec, &page, &pages) != 0 || page != ok[i].page ||
            pages != ok[i].pages)
            fail_msg("\"%s\": page %llu pages %llu", ok[i].spec, (unsigned long long)page,
                     (unsigned long long)pages);
    }
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++)
        if (ss__hp_parse(bad[i], &page, &pages) != -EINVAL)
            fail_msg("\"%s\" was accepted", bad[i]);
}

/* Write `text` as the record at `path`. */
static void plant(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static off_t size_of(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void t_record(void **state)
{
    char path[512], msg[400], boot[64], text[256];
    ss__hp_reservation r;
    FILE *f;

    (void)state;
    snprintf(path, sizeof(path), "%s/rec", t_tmpdir());

    /* none, not asked to create: -ENOENT; asked: an empty record */
    ss__hp_init(&r);
    assert_int_equal(ss__hp_record_take(&r, path, false, msg, sizeof(msg)), -ENOENT);
    assert_int_equal(r.record_fd, -1);
    assert_int_equal(ss__hp_record_take(&r, path, true, msg, sizeof(msg)), 0);
    assert_true(r.record_fd >= 0);
    assert_string_equal(msg, "");

    /* a live owner holds it: -EBUSY, the owner keeps it */
    {
        ss__hp_reservation other;

        ss__hp_init(&other);
        assert_int_equal(ss__hp_record_take(&other, path, true, msg, sizeof(msg)), -EBUSY);
        assert_int_equal(other.record_fd, -1);
    }
    ss__hp_record_release(&r);
    assert_int_equal(r.record_fd, -1);

    /* garbage: emptied, nothing given back */
    plant(path, "hello\n");
    assert_int_equal(ss__hp_record_take(&r, path, false, msg, sizeof(msg)), 0);
    assert_non_null(strstr(msg, "not a hugepage record"));
    assert_int_equal(size_of(path), 0);
    ss__hp_record_release(&r);

    /* another boot: emptied, pool untouched (the page count is absurd on
     * purpose: giving it back would empty the pool) */
    plant(path, "sealstore-hugepages boot=00000000-0000-0000-0000-000000000000 "
                "page=2097152 added=999999 pid=1\n");
    assert_int_equal(ss__hp_record_take(&r, path, false, msg, sizeof(msg)), 0);
    assert_non_null(strstr(msg, "earlier boot"));
    assert_int_equal(size_of(path), 0);
    ss__hp_record_release(&r);

    /* this boot, nothing added: emptied quietly */
    f = fopen("/proc/sys/kernel/random/boot_id", "r");
    T_SKIP_IF(!f, NULL, "no /proc/sys/kernel/random/boot_id");
    assert_non_null(fgets(boot, sizeof(boot), f));
    fclose(f);
    boot[strcspn(boot, "\n")] = '\0';
    snprintf(text, sizeof(text), "sealstore-hugepages boot=%s page=2097152 added=0 pid=1\n",
             boot);
    plant(path, text);
    assert_int_equal(ss__hp_record_take(&r, path, false, msg, sizeof(msg)), 0);
    assert_string_equal(msg, "");
    assert_int_equal(size_of(path), 0);
    ss__hp_record_release(&r);

    /* this boot, a page size the machine has no pool for is not a record */
    snprintf(text, sizeof(text), "sealstore-hugepages boot=%s page=4096 added=3 pid=1\n", boot);
    plant(path, text);
    assert_int_equal(ss__hp_record_take(&r, path, false, msg, sizeof(msg)), 0);
    assert_non_null(strstr(msg, "not a hugepage record"));
    ss__hp_record_release(&r);
}

/* Giving back what was never added, or from another process, is a no-op. */
static void t_give_back_noop(void **state)
{
    ss__hp_reservation r;

    (void)state;
    ss__hp_init(&r);
    ss__hp_give_back(&r);
    r.page_size = MiB2;
    r.added = 5;
    r.owner = getpid() + 1; /* not us: a forked child must not give back */
    ss__hp_give_back(&r);
    assert_int_equal(r.added, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_parse),
        cmocka_unit_test(t_record),
        cmocka_unit_test(t_give_back_noop),
    };

    return t_run(tests, NULL, NULL);
}
