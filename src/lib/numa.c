/* SPDX-License-Identifier: MIT */
/*
 * NUMA topology and placement (contract in numa.h).
 *
 * hwloc is asked once, at open, and everything placement needs is copied
 * into plain arrays: the node list (os_index values, ascending), a PU ->
 * node map, one single-node nodeset per node and the all-nodes nodeset.
 * After open an ss__numa is read-only, so any thread may use it without a
 * lock; hwloc documents its binding calls on a loaded topology as safe to
 * call concurrently.
 *
 * Node numbers are what the kernel calls node N (hwloc os_index), never
 * hwloc logical indexes: clients send them, numa_maps prints them and the
 * kernel's mbind takes them. They may be sparse (nodes 0 and 2, or a box
 * whose only node is 1), so every lookup goes through node_index().
 *
 * Binding is real only when hwloc says the topology is this system and the
 * OS backend can bind areas (can_bind). On a fake topology (synthetic, XML)
 * hwloc's binding calls succeed and do nothing, so
 * we do not call them at all and say so once in the log.
 */
#include "numa.h"

#include <hwloc.h>
#include <stdlib.h>
#include "sys.h"

/*
 * PUs with an os_index at or above this are treated as unknown CPUs. The
 * kernel's NR_CPUS is 8192 on distribution kernels; the cap only bounds the
 * map a hand-written XML topology could make us allocate.
 */
#define SS__NUMA_MAX_CPUS 65536

/*
 * Invariants after open:
 *   nnodes >= 1; node_os[0] < node_os[1] < ... < node_os[nnodes-1]
 *   node_set[i] == { node_os[i] };  all_nodes == union of node_set[]
 *   cpu_node[c] is -1 or one of node_os[]   (0 <= c < ncpus)
 */
struct ss__numa {
    hwloc_topology_t topo;
    int nnodes;
    int *node_os;              /* [nnodes] node numbers, ascending */
    hwloc_nodeset_t *node_set; /* [nnodes] {node_os[i]}, prebuilt so bind never allocates */
    hwloc_nodeset_t all_nodes; /* every node: the interleave set */
    int ncpus;                 /* slots in cpu_node: highest PU os_index + 1 */
    int *cpu_node;             /* [ncpus] PU os_index -> node number, -1 if none */
    bool can_bind;             /* real system and area binding supported */
};

/* hwloc reports -1 + errno; keep one error channel. */
static int neg_errno(int fallback)
{
    return errno > 0 ? -errno : -fallback;
}

/* Index of node number `node` in node_os[], or -1. */
static int node_index(const ss__numa *n, int node)
{
    int lo = 0, hi = n->nnodes - 1;

    if (node < 0)
        return -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (n->node_os[mid] == node)
            return mid;
        if (n->node_os[mid] < node)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

static void numa_free(ss__numa *n)
{
    if (n->node_set) {
        for (int i = 0; i < n->nnodes; i++)
            hwloc_bitmap_free(n->node_set[i]); /* NULL-safe */
        free(n->node_set);
    }
    hwloc_bitmap_free(n->all_nodes);
    free(n->node_os);
    free(n->cpu_node);
    if (n->topo)
        hwloc_topology_destroy(n->topo);
    free(n);
}

/* Copy the node list and the PU -> node map out of the loaded topology. */
static int numa_cache(ss__numa *n)
{
    hwloc_topology_t t = n->topo;
    int nodes = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    int last;

    /* hwloc 2 always has a NUMA node; a topology without one is not
     * something we know how to place on. */
    if (nodes < 1)
        return -ENODEV;
    n->node_os = calloc((size_t)nodes, sizeof(*n->node_os));
    n->node_set = calloc((size_t)nodes, sizeof(*n->node_set));
    n->all_nodes = hwloc_bitmap_alloc();
    if (!n->node_os || !n->node_set || !n->all_nodes)
        return -ENOMEM;
    for (int i = 0; i < nodes; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)i);
        if (!o || o->os_index == HWLOC_UNKNOWN_INDEX || o->os_index > (unsigned)INT32_MAX)
            return -ENODEV;
        n->node_os[i] = (int)o->os_index;
    }
    /* hwloc's logical order follows the tree, not the node numbers */
    qsort(n->node_os, (size_t)nodes, sizeof(*n->node_os), cmp_int);
    for (int i = 1; i < nodes; i++)
        if (n->node_os[i] == n->node_os[i - 1])
            return -ENODEV; /* a broken XML: two nodes with one number */
    n->nnodes = nodes;
    for (int i = 0; i < nodes; i++) {
        n->node_set[i] = hwloc_bitmap_alloc();
        if (!n->node_set[i] || hwloc_bitmap_only(n->node_set[i], (unsigned)n->node_os[i]) < 0 ||
            hwloc_bitmap_set(n->all_nodes, (unsigned)n->node_os[i]) < 0)
            return -ENOMEM;
    }

    last = hwloc_bitmap_last(hwloc_topology_get_topology_cpuset(t));
    n->ncpus = last < 0 ? 0 : (last >= SS__NUMA_MAX_CPUS ? SS__NUMA_MAX_CPUS : last + 1);
    if (n->ncpus > 0) {
        int *weight = calloc((size_t)n->ncpus, sizeof(*weight));
        n->cpu_node = malloc((size_t)n->ncpus * sizeof(*n->cpu_node));
        if (!weight || !n->cpu_node) {
            free(weight);
            return -ENOMEM;
        }
        for (int c = 0; c < n->ncpus; c++)
            n->cpu_node[c] = -1;
        /*
         * A CPU can be local to several nodes (DRAM plus HBM, or a CXL node
         * hanging off the whole machine). Its node is the one with the
         * smallest cpuset containing it: the most local one. Ties go to
         * the lower node number.
         */
        for (int i = 0; i < nodes; i++) {
            hwloc_obj_t o = hwloc_get_numanode_obj_by_os_index(t, (unsigned)n->node_os[i]);
            int w;
            unsigned c;

            if (!o || !o->cpuset)
                continue;
            w = hwloc_bitmap_weight(o->cpuset);
            if (w <= 0)
                continue; /* memory-only node, or an infinite set */
            hwloc_bitmap_foreach_begin(c, o->cpuset) {
                if (c >= (unsigned)n->ncpus)
                    break;
                if (n->cpu_node[c] < 0 || w < weight[c]) {
                    n->cpu_node[c] = n->node_os[i];
                    weight[c] = w;
                }
            }
            hwloc_bitmap_foreach_end();
        }
        free(weight);
    }

    n->can_bind = hwloc_topology_is_thissystem(t) &&
                  hwloc_topology_get_support(t)->membind->set_area_membind;
    return 0;
}

static int numa_load(ss__numa **out, const char *synthetic)
{
    ss__numa *n;
    int rc;

    if (!out)
        return -EINVAL;
    n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    errno = 0;
    if (hwloc_topology_init(&n->topo) < 0) {
        rc = neg_errno(ENOMEM);
        n->topo = NULL;
        goto fail;
    }
    /* No type filters: dropping packages or caches would re-attach their
     * NUMA nodes to the parent and widen the nodes' cpusets, breaking the
     * PU -> node map. A full load costs a few ms, once. */
    errno = 0;
    if (synthetic && hwloc_topology_set_synthetic(n->topo, synthetic) < 0) {
        rc = neg_errno(EINVAL);
        goto fail;
    }
    errno = 0;
    if (hwloc_topology_load(n->topo) < 0) {
        rc = neg_errno(EINVAL);
        goto fail;
    }
    rc = numa_cache(n);
    if (rc < 0)
        goto fail;
    ss__log_debug("numa: %d node(s), %d cpu slot(s), binding %s", n->nnodes, n->ncpus,
                  n->can_bind ? "supported" : "unsupported");
    *out = n;
    return 0;
fail:
    numa_free(n);
    return rc;
}

int ss__numa_open(ss__numa **out)
{
    return numa_load(out, NULL);
}

int ss__numa_open_synthetic(ss__numa **out, const char *desc)
{
    if (!desc)
        return -EINVAL;
    return numa_load(out, desc);
}

void ss__numa_close(ss__numa *n)
{
    if (n)
        numa_free(n);
}

int ss__numa_nodes(const ss__numa *n)
{
    return n ? n->nnodes : 1;
}

int ss__numa_node_id(const ss__numa *n, int i)
{
    if (!n || i < 0 || i >= n->nnodes)
        return -EINVAL;
    return n->node_os[i];
}

int ss__numa_node_index(const ss__numa *n, int node)
{
    int i = n ? node_index(n, node) : -1;

    return i >= 0 ? i : -EINVAL;
}

bool ss__numa_can_bind(const ss__numa *n)
{
    return n && n->can_bind;
}

int ss__numa_node_of_cpu(const ss__numa *n, int cpu)
{
    if (!n || cpu < 0 || cpu >= n->ncpus)
        return -1;
    return n->cpu_node[cpu];
}

int ss__numa_current_node(const ss__numa *n)
{
    unsigned cpu;
    int node;

    if (!n)
        return 0;
    /* getcpu is a vDSO read; the answer may be stale by the time we
     * use it, which only costs locality, never correctness. */
    node = ss__sys_getcpu(&cpu, NULL) == 0 ? ss__numa_node_of_cpu(n, (int)cpu) : -1;
    return node >= 0 ? node : n->node_os[0];
}

int ss__numa_place(const ss__numa *n, const ss__numa_policy *p, int client_node)
{
    if (!n || !p)
        return -EINVAL;
    switch (p->mode) {
    case SS_NUMA_OFF:
        return SS_NODE_ANY;
    case SS_NUMA_NODE:
        return node_index(n, p->node) >= 0 ? p->node : -EINVAL;
    case SS_NUMA_INTERLEAVE:
        /* Interleaving over one node is binding to it; naming the node
         * keeps per-node pools and stats keyed on a real node. */
        return n->nnodes > 1 ? SS_NODE_INTERLEAVE : n->node_os[0];
    case SS_NUMA_LOCAL:
        /* The client's word is a hint from an untrusted peer: only a node
         * that exists counts, anything else means "unknown". */
        if (node_index(n, client_node) >= 0)
            return client_node;
        return ss__numa_current_node(n);
    default:
        return -EINVAL;
    }
}

/*
 * HWLOC_MEMBIND_BIND is MPOL_BIND: the kernel never falls back to another
 * node. For 4K/THP shmem an exhausted node means reclaim or OOM there; for
 * hugetlb the fault (or fallocate) fails instead of taking a page from
 * another node, which is what we want: a populator that cannot get pages
 * on the node learns it at population time, not a client later. STRICT
 * asks hwloc to fail (ENOSYS/EXDEV) rather than approximate the request;
 * on Linux without MIGRATE it adds no mbind flag, so it only documents
 * intent. We never pass MIGRATE: the range is bound before it is
 * populated, so there is nothing to move.
 */
#define SS__MEMBIND_FLAGS (HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_STRICT)

int ss__numa_bind(ss__numa *n, void *addr, size_t len, int node)
{
    hwloc_const_nodeset_t set;
    hwloc_membind_policy_t policy;
    int i = -1;

    if (!n)
        return -EINVAL;
    if (node == SS_NODE_ANY)
        return 0;
    if (node != SS_NODE_INTERLEAVE) {
        i = node_index(n, node);
        if (i < 0)
            return -EINVAL;
    }
    if (!n->can_bind) {
        SS_LOG_ONCE(SS_LOG_INFO, "numa: memory binding unavailable (%s); "
                    "placement is left to the kernel",
                    hwloc_topology_is_thissystem(n->topo) ? "no mbind support"
                                                          : "topology is not this system");
        return 0;
    }
    if (len == 0)
        return 0;
    if (i >= 0) {
        set = n->node_set[i];
        policy = HWLOC_MEMBIND_BIND;
    } else {
        set = n->all_nodes;
        policy = HWLOC_MEMBIND_INTERLEAVE;
    }
    errno = 0;
    if (hwloc_set_area_membind(n->topo, addr, len, set, policy, SS__MEMBIND_FLAGS) < 0)
        return neg_errno(EINVAL);
    return 0;
}

int ss__numa_node_of_addr(const void *addr)
{
    void *page = (void *)((uintptr_t)addr & ~(uintptr_t)(ss__sys_page_size() - 1));
    int status = -ENOENT, rc;

    /*
     * move_pages with nodes == NULL only queries, and unlike
     * get_mempolicy(MPOL_F_NODE|MPOL_F_ADDR) it does not fault the page in:
     * an untouched page reports -ENOENT instead of being allocated by the
     * question. (sys.c makes the raw syscall: libnuma is not a dependency.)
     */
    rc = ss__sys_move_pages(1, &page, &status);
    if (rc < 0)
        return rc;
    return status; /* node >= 0, or -errno: -ENOENT not present, -EFAULT unmapped */
}
