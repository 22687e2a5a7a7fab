/* SPDX-License-Identifier: MIT */
/*
 * NUMA placement (src/lib/numa.c).
 *
 * The placement logic runs on fake topologies and never skips: synthetic
 * 1-, 2- and 4-node machines, sparse node numbers, an XML file exported
 * from a synthetic topology (read through HWLOC_XMLFILE) and a hand-written
 * XML with a node shared by every CPU. Fakes cannot bind: ss__numa_bind()
 * must return 0 and leave the kernel policy alone.
 *
 * Real binding runs on the real topology's first node: anon and memfd
 * ranges bound before the touch, pages checked with move_pages (through
 * ss__numa_node_of_addr) and the policy with get_mempolicy(MPOL_F_ADDR),
 * including the shmem fact placement relies on (the policy belongs
 * to the file, so a second mapping reports it too). These cases skip only
 * when hwloc says binding is unsupported here (feature "numa"); a
 * multi-node placement check is impossible on a 1-node machine and is not
 * attempted. HWLOC_THISSYSTEM=1 on a fake topology sends the binding to the
 * kernel, which rejects a node it does not have: that checks the -errno
 * conversion.
 */
#include "config.h" /* _GNU_SOURCE, before any system header */

#include "../t_helpers.h"

#include <hwloc.h>
#include <limits.h>
#include <linux/mempolicy.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "numa.h"

#define T_LEN (8 * SS_MiB)
#define MASK_BITS 1024 /* >= the kernel's MAX_NUMNODES on every config */

static long page_size;

/* ---------------------------------------------------------------- helpers */

static ss__numa *open_syn(const char *desc)
{
    ss__numa *n = NULL;
    int rc = ss__numa_open_synthetic(&n, desc);

    if (rc < 0)
        fail_msg("ss__numa_open_synthetic(\"%s\") = %d (%s)", desc, rc, t_strerror(rc));
    assert_non_null(n);
    return n;
}

static ss__numa *open_real(void)
{
    ss__numa *n = NULL;

    t_assert_ok(ss__numa_open(&n));
    assert_non_null(n);
    return n;
}

static int place(const ss__numa *n, int mode, int node, int client)
{
    ss__numa_policy p = {.mode = mode, .node = node};

    return ss__numa_place(n, &p, client);
}

/* get_mempolicy(MPOL_F_ADDR): the policy of the range holding addr. 0 or
 * -errno. */
static int policy_of(void *addr, int *mode, unsigned long *mask)
{
    memset(mask, 0, MASK_BITS / 8);
    if (syscall(SYS_get_mempolicy, mode, mask, (unsigned long)MASK_BITS, addr,
                (unsigned long)MPOL_F_ADDR) < 0)
        return -errno;
    return 0;
}

static bool mask_has(const unsigned long *mask, int node)
{
    return (mask[node / (8 * sizeof(long))] >> (node % (8 * sizeof(long)))) & 1;
}

static int mask_weight(const unsigned long *mask)
{
    int w = 0;

    for (size_t i = 0; i < MASK_BITS / (8 * sizeof(long)); i++)
        w += __builtin_popcountl(mask[i]);
    return w;
}

static void *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        fail_msg("mmap anon: %s", strerror(errno));
    return p;
}

static int make_memfd(size_t len)
{
    int fd = memfd_create("t_numa", MFD_CLOEXEC);

    if (fd < 0)
        fail_msg("memfd_create: %s", strerror(errno));
    if (ftruncate(fd, (off_t)len) < 0)
        fail_msg("ftruncate: %s", strerror(errno));
    return fd;
}

static void *map_shared(int fd, size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    if (p == MAP_FAILED)
        fail_msg("mmap memfd: %s", strerror(errno));
    return p;
}

/* Every page of [p, p+len) must be present on `node`. */
static void assert_pages_on(const void *p, size_t len, int node)
{
    for (size_t off = 0; off < len; off += (size_t)page_size) {
        int got = ss__numa_node_of_addr((const char *)p + off);
        if (got != node)
            fail_msg("page at +%zu: node %d (%s), expected %d", off, got,
                     got < 0 ? t_strerror(got) : "", node);
    }
}

/* A fake topology must not touch the kernel policy: the range stays DEFAULT. */
static void assert_bind_noop(ss__numa *n, int node)
{
    void *p = map_anon(2 * SS_MiB);
    unsigned long mask[MASK_BITS / (8 * sizeof(long))];
    int mode = -1;

    t_assert_ok(ss__numa_bind(n, p, 2 * SS_MiB, node));
    t_assert_ok(policy_of(p, &mode, mask));
    assert_int_equal(mode, MPOL_DEFAULT);
    munmap(p, 2 * SS_MiB);
}

/* Pin the calling thread to `cpu` if the affinity mask allows it; the old
 * mask goes to *old. Returns false if the CPU is not available. */
static bool pin_cpu(int cpu, cpu_set_t *old)
{
    cpu_set_t one;

    if (sched_getaffinity(0, sizeof(*old), old) < 0)
        fail_msg("sched_getaffinity: %s", strerror(errno));
    if (cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, old))
        return false;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof(one), &one) < 0)
        fail_msg("sched_setaffinity(%d): %s", cpu, strerror(errno));
    /* sched_setaffinity migrates the caller before it returns */
    assert_int_equal(sched_getcpu(), cpu);
    return true;
}

static void unpin(const cpu_set_t *old)
{
    if (sched_setaffinity(0, sizeof(*old), old) < 0)
        fail_msg("sched_setaffinity(restore): %s", strerror(errno));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f)
        fail_msg("fopen %s: %s", path, strerror(errno));
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Open the topology in `path` through HWLOC_XMLFILE, as the store would. */
static ss__numa *open_xml(const char *path)
{
    ss__numa *n = NULL;
    int rc;

    assert_int_equal(setenv("HWLOC_XMLFILE", path, 1), 0);
    rc = ss__numa_open(&n);
    unsetenv("HWLOC_XMLFILE");
    t_assert_ok(rc);
    assert_non_null(n);
    return n;
}

/* Client node numbers that are never valid on the fakes used here. */
static const int bad_clients[] = {-1, -2, -3, INT_MIN, INT_MAX, 64, 1000000};

/* LOCAL with an invalid client falls back to the current node, the same
 * answer as ss__numa_current_node(), which must be a node. Pinned, so the
 * answer cannot change between the two calls. */
static void check_local_fallback(const ss__numa *n)
{
    cpu_set_t old;
    int cpu;

    if (sched_getaffinity(0, sizeof(old), &old) < 0)
        fail_msg("sched_getaffinity: %s", strerror(errno));
    for (cpu = 0; cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &old); cpu++)
        ;
    assert_true(pin_cpu(cpu, &old));
    {
        int cur = ss__numa_current_node(n);
        int want = ss__numa_node_of_cpu(n, cpu);

        if (want < 0)
            want = ss__numa_node_id(n, 0);
        assert_int_equal(cur, want);
        assert_true(ss__numa_node_index(n, cur) >= 0);
        for (size_t i = 0; i < SS_ARRAY_SIZE(bad_clients); i++)
            if (ss__numa_node_index(n, bad_clients[i]) < 0)
                assert_int_equal(place(n, SS_NUMA_LOCAL, 0, bad_clients[i]), cur);
    }
    unpin(&old);
}

/* Checks shared by every fake 2-node topology with nodes 0 and 1 and PUs
 * 0-1 on node 0, 2-3 on node 1 ("pack:2 [numa] core:2 pu:1"). */
static void check_two_nodes(ss__numa *n)
{
    assert_int_equal(ss__numa_nodes(n), 2);
    assert_int_equal(ss__numa_node_id(n, 0), 0);
    assert_int_equal(ss__numa_node_id(n, 1), 1);
    t_assert_err(ss__numa_node_id(n, 2), -EINVAL);
    t_assert_err(ss__numa_node_id(n, -1), -EINVAL);
    assert_int_equal(ss__numa_node_index(n, 1), 1);
    t_assert_err(ss__numa_node_index(n, 2), -EINVAL);
    assert_false(ss__numa_can_bind(n));

    assert_int_equal(ss__numa_node_of_cpu(n, 0), 0);
    assert_int_equal(ss__numa_node_of_cpu(n, 1), 0);
    assert_int_equal(ss__numa_node_of_cpu(n, 2), 1);
    assert_int_equal(ss__numa_node_of_cpu(n, 3), 1);
    assert_int_equal(ss__numa_node_of_cpu(n, 4), -1);
    assert_int_equal(ss__numa_node_of_cpu(n, -1), -1);
    assert_int_equal(ss__numa_node_of_cpu(n, INT_MAX), -1);

    /* LOCAL: a valid client node wins */
    assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 0), 0);
    assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 1), 1);
    check_local_fallback(n);
    /* INTERLEAVE and OFF ignore the client */
    for (int c = -3; c <= 3; c++) {
        assert_int_equal(place(n, SS_NUMA_INTERLEAVE, 0, c), SS_NODE_INTERLEAVE);
        assert_int_equal(place(n, SS_NUMA_OFF, 0, c), SS_NODE_ANY);
    }
    assert_int_equal(place(n, SS_NUMA_INTERLEAVE, 0, INT_MIN), SS_NODE_INTERLEAVE);
    assert_int_equal(place(n, SS_NUMA_OFF, 0, INT_MAX), SS_NODE_ANY);
    /* NODE:N */
    assert_int_equal(place(n, SS_NUMA_NODE, 0, 1), 0);
    assert_int_equal(place(n, SS_NUMA_NODE, 1, 0), 1);
    assert_int_equal(place(n, SS_NUMA_NODE, 1, INT_MIN), 1);
    t_assert_err(place(n, SS_NUMA_NODE, 2, 0), -EINVAL);
    t_assert_err(place(n, SS_NUMA_NODE, -1, 0), -EINVAL);
    t_assert_err(place(n, SS_NUMA_NODE, INT_MAX, 0), -EINVAL);
    t_assert_err(place(n, SS_NUMA_NODE, INT_MIN, 0), -EINVAL);

    /* bind on a fake: 0 and nothing done; unknown nodes still -EINVAL */
    assert_bind_noop(n, 0);
    assert_bind_noop(n, 1);
    assert_bind_noop(n, SS_NODE_INTERLEAVE);
    assert_bind_noop(n, SS_NODE_ANY);
    {
        void *p = map_anon(SS_MiB);
        t_assert_err(ss__numa_bind(n, p, SS_MiB, 2), -EINVAL);
        t_assert_err(ss__numa_bind(n, p, SS_MiB, -3), -EINVAL);
        t_assert_err(ss__numa_bind(n, p, SS_MiB, INT_MIN), -EINVAL);
        t_assert_err(ss__numa_bind(n, p, SS_MiB, INT_MAX), -EINVAL);
        munmap(p, SS_MiB);
    }
}

/* ------------------------------------------------------- fake topologies */

static void test_synthetic_2node(void **state)
{
    ss__numa *n = open_syn("pack:2 [numa] core:2 pu:1");

    (void)state;
    check_two_nodes(n);
    ss__numa_close(n);
}

static void test_xml_2node(void **state)
{
    hwloc_topology_t t;
    char path[4096];
    ss__numa *n;

    (void)state;
    snprintf(path, sizeof(path), "%s/two-nodes.xml", t_tmpdir());
    assert_int_equal(hwloc_topology_init(&t), 0);
    assert_int_equal(hwloc_topology_set_synthetic(t, "pack:2 [numa] core:2 pu:1"), 0);
    assert_int_equal(hwloc_topology_load(t), 0);
    if (hwloc_topology_export_xml(t, path, 0) < 0)
        fail_msg("hwloc_topology_export_xml(%s): %s", path, strerror(errno));
    hwloc_topology_destroy(t);

    n = open_xml(path);
    /* can_bind is false: this is the XML, not a hwloc fallback to the
     * real machine (hwloc falls back silently on an unreadable file) */
    check_two_nodes(n);
    ss__numa_close(n);
}

static void test_synthetic_4node(void **state)
{
    ss__numa *n = open_syn("node:4 core:4 pu:1");

    (void)state;
    assert_int_equal(ss__numa_nodes(n), 4);
    assert_false(ss__numa_can_bind(n));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ss__numa_node_id(n, i), i);
        assert_int_equal(ss__numa_node_index(n, i), i);
    }
    for (int cpu = 0; cpu < 16; cpu++)
        assert_int_equal(ss__numa_node_of_cpu(n, cpu), cpu / 4);
    assert_int_equal(ss__numa_node_of_cpu(n, 16), -1);

    for (int c = 0; c < 4; c++) {
        assert_int_equal(place(n, SS_NUMA_LOCAL, 0, c), c);
        assert_int_equal(place(n, SS_NUMA_NODE, c, 3 - c), c);
        assert_int_equal(place(n, SS_NUMA_INTERLEAVE, 0, c), SS_NODE_INTERLEAVE);
        assert_int_equal(place(n, SS_NUMA_OFF, 0, c), SS_NODE_ANY);
    }
    check_local_fallback(n);
    t_assert_err(place(n, SS_NUMA_NODE, 4, 0), -EINVAL);
    t_assert_err(place(n, SS_NUMA_NODE, 64, 0), -EINVAL);
    assert_bind_noop(n, 3);
    assert_bind_noop(n, SS_NODE_INTERLEAVE);
    ss__numa_close(n);
}

/* "node:4 pu:1": PU i is node i, so pinning to a CPU must move LOCAL's
 * fallback with it (on this 2-CPU machine: nodes 0 and 1). */
static void test_local_follows_cpu(void **state)
{
    ss__numa *n = open_syn("node:4 pu:1");
    int pinned = 0;

    (void)state;
    for (int cpu = 0; cpu < 4; cpu++) {
        cpu_set_t old;

        if (!pin_cpu(cpu, &old))
            continue;
        pinned++;
        assert_int_equal(ss__numa_current_node(n), cpu);
        assert_int_equal(place(n, SS_NUMA_LOCAL, 0, -1), cpu);
        assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 4), cpu);
        /* a valid hint beats the store's own CPU */
        assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 3 - cpu), 3 - cpu);
        unpin(&old);
    }
    ss__numa_close(n);
    T_SKIP_IF(pinned == 0, NULL, "none of CPUs 0-3 is in this process's affinity mask");
}

/* Node numbers are the kernel's (os_index), not hwloc's logical indexes:
 * here logical node 0 is node 5 and holds PU 0; node 2 holds PU 1. */
static void test_sparse_nodes(void **state)
{
    ss__numa *n = open_syn("pack:2 [numa(indexes=5,2)] core:1 pu:1");

    (void)state;
    assert_int_equal(ss__numa_nodes(n), 2);
    assert_int_equal(ss__numa_node_id(n, 0), 2);
    assert_int_equal(ss__numa_node_id(n, 1), 5);
    assert_int_equal(ss__numa_node_index(n, 2), 0);
    assert_int_equal(ss__numa_node_index(n, 5), 1);
    for (int node = -1; node <= 6; node++)
        if (node != 2 && node != 5)
            t_assert_err(ss__numa_node_index(n, node), -EINVAL);
    assert_int_equal(ss__numa_node_of_cpu(n, 0), 5);
    assert_int_equal(ss__numa_node_of_cpu(n, 1), 2);
    assert_int_equal(ss__numa_node_of_cpu(n, 2), -1);

    assert_int_equal(place(n, SS_NUMA_NODE, 5, 0), 5);
    assert_int_equal(place(n, SS_NUMA_NODE, 2, 0), 2);
    t_assert_err(place(n, SS_NUMA_NODE, 0, 0), -EINVAL);
    t_assert_err(place(n, SS_NUMA_NODE, 1, 0), -EINVAL);
    assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 5), 5);
    /* client 0 or 1 are not nodes here: fallback, which is 2 or 5 */
    check_local_fallback(n);
    assert_int_equal(place(n, SS_NUMA_INTERLEAVE, 0, 0), SS_NODE_INTERLEAVE);
    {
        void *p = map_anon(SS_MiB);
        t_assert_err(ss__numa_bind(n, p, SS_MiB, 0), -EINVAL);
        t_assert_err(ss__numa_bind(n, p, SS_MiB, 1), -EINVAL);
        munmap(p, SS_MiB);
    }
    assert_bind_noop(n, 5);
    ss__numa_close(n);

    /* a single node that is not node 0 */
    n = open_syn("numa:1(indexes=3) pu:1");
    assert_int_equal(ss__numa_nodes(n), 1);
    assert_int_equal(ss__numa_node_id(n, 0), 3);
    assert_int_equal(place(n, SS_NUMA_INTERLEAVE, 0, 0), 3);
    assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 0), 3);
    assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 3), 3);
    t_assert_err(place(n, SS_NUMA_NODE, 0, 0), -EINVAL);
    /* CPU 1 is not in this topology: current node is the lowest node */
    assert_int_equal(ss__numa_node_of_cpu(n, 1), -1);
    check_local_fallback(n);
    ss__numa_close(n);
}

/* Node 0 hangs off the whole machine (think CXL memory), nodes 1 and 2 off
 * one package each: a CPU's node is the most local one, not node 0. */
static void test_xml_shared_node(void **state)
{
    static const char xml[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n"
        "<topology version=\"2.0\">\n"
        " <object type=\"Machine\" os_index=\"0\" cpuset=\"0x3\" complete_cpuset=\"0x3\""
        " nodeset=\"0x7\" complete_nodeset=\"0x7\">\n"
        "  <object type=\"NUMANode\" os_index=\"0\" cpuset=\"0x3\" complete_cpuset=\"0x3\""
        " nodeset=\"0x1\" complete_nodeset=\"0x1\" local_memory=\"1073741824\"/>\n"
        "  <object type=\"Package\" os_index=\"0\" cpuset=\"0x1\" complete_cpuset=\"0x1\""
        " nodeset=\"0x2\" complete_nodeset=\"0x2\">\n"
        "   <object type=\"NUMANode\" os_index=\"1\" cpuset=\"0x1\" complete_cpuset=\"0x1\""
        " nodeset=\"0x2\" complete_nodeset=\"0x2\" local_memory=\"1073741824\"/>\n"
        "   <object type=\"PU\" os_index=\"0\" cpuset=\"0x1\" complete_cpuset=\"0x1\""
        " nodeset=\"0x2\" complete_nodeset=\"0x2\"/>\n"
        "  </object>\n"
        "  <object type=\"Package\" os_index=\"1\" cpuset=\"0x2\" complete_cpuset=\"0x2\""
        " nodeset=\"0x4\" complete_nodeset=\"0x4\">\n"
        "   <object type=\"NUMANode\" os_index=\"2\" cpuset=\"0x2\" complete_cpuset=\"0x2\""
        " nodeset=\"0x4\" complete_nodeset=\"0x4\" local_memory=\"1073741824\"/>\n"
        "   <object type=\"PU\" os_index=\"1\" cpuset=\"0x2\" complete_cpuset=\"0x2\""
        " nodeset=\"0x4\" complete_nodeset=\"0x4\"/>\n"
        "  </object>\n"
        " </object>\n"
        "</topology>\n";
    char path[4096];
    ss__numa *n;

    (void)state;
    snprintf(path, sizeof(path), "%s/shared-node.xml", t_tmpdir());
    write_file(path, xml);
    n = open_xml(path);
    assert_false(ss__numa_can_bind(n));
    assert_int_equal(ss__numa_nodes(n), 3);
    assert_int_equal(ss__numa_node_of_cpu(n, 0), 1);
    assert_int_equal(ss__numa_node_of_cpu(n, 1), 2);
    assert_int_equal(place(n, SS_NUMA_NODE, 0, 0), 0);
    assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 0), 0);
    check_local_fallback(n);
    ss__numa_close(n);
}

static void test_single_node(void **state)
{
    /* "numa:1" spelled out: hwloc 2.9 inserting the implicit NUMA level
     * itself (plain "pu:2") does an overlapping memcpy valgrind reports */
    ss__numa *n = open_syn("numa:1 pu:2");

    (void)state;
    assert_int_equal(ss__numa_nodes(n), 1);
    assert_int_equal(ss__numa_node_id(n, 0), 0);
    t_assert_err(ss__numa_node_id(n, 1), -EINVAL);
    assert_int_equal(ss__numa_node_of_cpu(n, 0), 0);
    assert_int_equal(ss__numa_node_of_cpu(n, 1), 0);
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad_clients); i++) {
        int c = bad_clients[i];
        assert_int_equal(place(n, SS_NUMA_LOCAL, 0, c), 0);
        assert_int_equal(place(n, SS_NUMA_INTERLEAVE, 0, c), 0);
        assert_int_equal(place(n, SS_NUMA_NODE, 0, c), 0);
        assert_int_equal(place(n, SS_NUMA_OFF, 0, c), SS_NODE_ANY);
    }
    assert_int_equal(place(n, SS_NUMA_LOCAL, 0, 0), 0);
    t_assert_err(place(n, SS_NUMA_NODE, 1, 0), -EINVAL);
    assert_bind_noop(n, 0);
    ss__numa_close(n);
}

static void test_bad_input(void **state)
{
    ss__numa *n = (ss__numa *)&page_size; /* sentinel: must stay untouched */
    ss__numa_policy p = {.mode = SS_NUMA_LOCAL, .node = 0};

    (void)state;
    t_assert_err(ss__numa_open_synthetic(&n, "bogus:3"), -EINVAL);
    t_assert_err(ss__numa_open_synthetic(&n, ""), -EINVAL);
    t_assert_err(ss__numa_open_synthetic(&n, NULL), -EINVAL);
    assert_ptr_equal(n, (ss__numa *)&page_size);
    t_assert_err(ss__numa_open(NULL), -EINVAL);
    t_assert_err(ss__numa_open_synthetic(NULL, "pu:2"), -EINVAL);
    ss__numa_close(NULL);

    n = open_syn("pack:2 [numa] core:1 pu:1");
    t_assert_err(ss__numa_place(n, NULL, 0), -EINVAL);
    t_assert_err(ss__numa_place(NULL, &p, 0), -EINVAL);
    t_assert_err(place(n, -1, 0, 0), -EINVAL);
    t_assert_err(place(n, SS_NUMA_OFF + 1, 0, 0), -EINVAL);
    t_assert_err(place(n, INT_MAX, 0, 0), -EINVAL);
    t_assert_err(ss__numa_bind(NULL, NULL, 0, 0), -EINVAL);
    ss__numa_close(n);
}

/* --------------------------------------------------------- real topology */

static void test_real_topology(void **state)
{
    ss__numa *n = open_real();
    int nodes = ss__numa_nodes(n);

    (void)state;
    assert_true(nodes >= 1);
    for (int i = 0; i < nodes; i++) {
        int id = ss__numa_node_id(n, i);
        assert_true(id >= 0);
        assert_int_equal(ss__numa_node_index(n, id), i);
        if (i > 0)
            assert_true(id > ss__numa_node_id(n, i - 1));
    }
    /* every CPU we may run on belongs to a node */
    {
        cpu_set_t set;
        assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
            if (CPU_ISSET(cpu, &set))
                assert_true(ss__numa_node_index(n, ss__numa_node_of_cpu(n, cpu)) >= 0);
    }
    check_local_fallback(n);
    ss__numa_close(n);
}

/* Open the real topology; skip the case (feature "numa") if hwloc says it
 * cannot bind memory here. */
#define OPEN_REAL_BINDABLE(n)                                                 \
    do {                                                                      \
        bool ok_;                                                             \
        (n) = open_real();                                                    \
        ok_ = ss__numa_can_bind(n);                                           \
        if (!ok_) {                                                           \
            ss__numa_close(n);                                                \
            (n) = NULL;                                                       \
        }                                                                     \
        T_SKIP_IF(!ok_, "numa",                                               \
                  "hwloc reports no memory binding support on this system");  \
    } while (0)

static void test_real_bind_anon(void **state)
{
    ss__numa *n;
    unsigned long mask[MASK_BITS / (8 * sizeof(long))];
    int mode = -1, node0;
    char *p;

    (void)state;
    OPEN_REAL_BINDABLE(n);
    node0 = ss__numa_node_id(n, 0);
    p = map_anon(T_LEN);
    t_assert_err(ss__numa_node_of_addr(p), -ENOENT); /* not touched yet */
    t_assert_err(ss__numa_node_of_addr(p + T_LEN - 1), -ENOENT);
    t_assert_ok(ss__numa_bind(n, p, T_LEN, node0));
    t_assert_ok(policy_of(p, &mode, mask));
    assert_int_equal(mode, MPOL_BIND);
    assert_true(mask_has(mask, node0));
    assert_int_equal(mask_weight(mask), 1);
    t_assert_err(ss__numa_node_of_addr(p), -ENOENT); /* asking did not fault it in */
    memset(p, 0x5a, T_LEN);
    assert_pages_on(p, T_LEN, node0);
    /* an unaligned address names the page holding it */
    assert_int_equal(ss__numa_node_of_addr(p + 12345), node0);
    munmap(p, T_LEN);
    t_assert_err(ss__numa_node_of_addr(p), -EFAULT);
    ss__numa_close(n);
}

/* shmem: the policy belongs to the file, so every mapping reports it and
 * pages land on the node whichever mapping faults them. */
static void test_real_bind_memfd_shared_policy(void **state)
{
    ss__numa *n;
    unsigned long mask[MASK_BITS / (8 * sizeof(long))];
    int mode = -1, node0, fd, fd2;
    char *a, *b, *c;
    volatile char sink = 0;

    (void)state;
    OPEN_REAL_BINDABLE(n);
    node0 = ss__numa_node_id(n, 0);
    fd = make_memfd(T_LEN);
    a = map_shared(fd, T_LEN);
    t_assert_ok(ss__numa_bind(n, a, T_LEN, node0));
    b = map_shared(fd, T_LEN); /* mapped after the bind, never bound itself */
    t_assert_ok(policy_of(b, &mode, mask));
    assert_int_equal(mode, MPOL_BIND);
    assert_true(mask_has(mask, node0));
    assert_int_equal(mask_weight(mask), 1);

    /* fault the first half through a, the second through b */
    memset(a, 1, T_LEN / 2);
    memset(b + T_LEN / 2, 2, T_LEN / 2);
    assert_pages_on(a, T_LEN / 2, node0);
    assert_pages_on(b + T_LEN / 2, T_LEN / 2, node0);
    /* read the rest through the other mapping: same pages, same node */
    for (size_t off = 0; off < T_LEN; off += (size_t)page_size)
        sink += off < T_LEN / 2 ? b[off] : a[off];
    (void)sink;
    assert_pages_on(a, T_LEN, node0);
    assert_pages_on(b, T_LEN, node0);

    /* control: an unbound memfd reports DEFAULT, so BIND above came from
     * the bind, not from some task policy */
    fd2 = make_memfd(SS_MiB);
    c = map_shared(fd2, SS_MiB);
    t_assert_ok(policy_of(c, &mode, mask));
    assert_int_equal(mode, MPOL_DEFAULT);
    munmap(c, SS_MiB);
    close(fd2);

    munmap(a, T_LEN);
    munmap(b, T_LEN);
    close(fd);
    ss__numa_close(n);
}

static void test_real_interleave(void **state)
{
    ss__numa *n;
    unsigned long mask[MASK_BITS / (8 * sizeof(long))];
    int mode = -1, fd;
    char *p;

    (void)state;
    OPEN_REAL_BINDABLE(n);
    fd = make_memfd(T_LEN);
    p = map_shared(fd, T_LEN);
    t_assert_ok(ss__numa_bind(n, p, T_LEN, SS_NODE_INTERLEAVE));
    t_assert_ok(policy_of(p, &mode, mask));
    assert_int_equal(mode, MPOL_INTERLEAVE);
    assert_int_equal(mask_weight(mask), ss__numa_nodes(n));
    for (int i = 0; i < ss__numa_nodes(n); i++)
        assert_true(mask_has(mask, ss__numa_node_id(n, i)));
    memset(p, 3, T_LEN);
    for (size_t off = 0; off < T_LEN; off += (size_t)page_size) {
        int got = ss__numa_node_of_addr(p + off);
        if (ss__numa_node_index(n, got) < 0)
            fail_msg("page at +%zu on node %d, not a node of the topology", off, got);
        if (ss__numa_nodes(n) == 1)
            assert_int_equal(got, ss__numa_node_id(n, 0));
    }
    munmap(p, T_LEN);
    close(fd);
    ss__numa_close(n);
}

static void test_real_bind_edges(void **state)
{
    ss__numa *n = open_real();
    int last = ss__numa_node_id(n, ss__numa_nodes(n) - 1);
    char *p = map_anon(SS_MiB);

    (void)state;
    /* validated before any kernel call, whether or not binding works */
    t_assert_err(ss__numa_bind(n, p, SS_MiB, last + 1), -EINVAL);
    t_assert_err(ss__numa_bind(n, p, SS_MiB, -3), -EINVAL);
    /* ANY makes no call: the range stays DEFAULT */
    assert_bind_noop(n, SS_NODE_ANY);
    /* zero length is a no-op, even on a real node */
    t_assert_ok(ss__numa_bind(n, p, 0, ss__numa_node_id(n, 0)));
    munmap(p, SS_MiB);
    ss__numa_close(n);
}

/* HWLOC_THISSYSTEM=1 makes a fake topology bind for real: its first node is
 * the real first node (the kernel accepts it), its second one past the
 * real last node (the kernel rejects it with EINVAL: -errno, not -1). */
static void test_thissystem_fake(void **state)
{
    ss__numa *real, *n = NULL;
    unsigned long mask[MASK_BITS / (8 * sizeof(long))];
    int first, bogus, rc, mode = -1;
    char desc[128];
    char *p;

    (void)state;
    OPEN_REAL_BINDABLE(real);
    first = ss__numa_node_id(real, 0);
    bogus = ss__numa_node_id(real, ss__numa_nodes(real) - 1) + 1;
    ss__numa_close(real);

    snprintf(desc, sizeof(desc), "pack:2 [numa(indexes=%d,%d)] core:1 pu:1", first, bogus);
    assert_int_equal(setenv("HWLOC_THISSYSTEM", "1", 1), 0);
    rc = ss__numa_open_synthetic(&n, desc);
    unsetenv("HWLOC_THISSYSTEM");
    t_assert_ok(rc);
    assert_true(ss__numa_can_bind(n));
    assert_int_equal(ss__numa_nodes(n), 2);
    assert_int_equal(place(n, SS_NUMA_NODE, bogus, 0), bogus); /* the fake has it */

    p = map_anon(SS_MiB);
    t_assert_err(ss__numa_bind(n, p, SS_MiB, bogus), -EINVAL);
    t_assert_ok(policy_of(p, &mode, mask));
    assert_int_equal(mode, MPOL_DEFAULT);
    t_assert_ok(ss__numa_bind(n, p, SS_MiB, first));
    t_assert_ok(policy_of(p, &mode, mask));
    assert_int_equal(mode, MPOL_BIND);
    assert_true(mask_has(mask, first));
    munmap(p, SS_MiB);
    ss__numa_close(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_2node),
        cmocka_unit_test(test_xml_2node),
        cmocka_unit_test(test_synthetic_4node),
        cmocka_unit_test(test_local_follows_cpu),
        cmocka_unit_test(test_sparse_nodes),
        cmocka_unit_test(test_xml_shared_node),
        cmocka_unit_test(test_single_node),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_real_topology),
        cmocka_unit_test(test_real_bind_anon),
        cmocka_unit_test(test_real_bind_memfd_shared_policy),
        cmocka_unit_test(test_real_interleave),
        cmocka_unit_test(test_real_bind_edges),
        cmocka_unit_test(test_thissystem_fake),
    };

    page_size = sysconf(_SC_PAGESIZE);
    /* The fakes must be what the tests say: no topology from outside. */
    unsetenv("HWLOC_XMLFILE");
    unsetenv("HWLOC_SYNTHETIC");
    unsetenv("HWLOC_THISSYSTEM");
    unsetenv("HWLOC_FSROOT");
    unsetenv("HWLOC_COMPONENTS");
    return t_run(tests, NULL, NULL);
}
