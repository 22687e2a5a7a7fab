/* SPDX-License-Identifier: MIT */
/*
 * NUMA placement. hwloc discovers the topology once, when
 * the store starts; HWLOC_XMLFILE / HWLOC_SYNTHETIC are honoured, so tests
 * run placement decisions on fake topologies. On a fake topology hwloc's
 * binding calls succeed and do nothing (unless HWLOC_THISSYSTEM=1), so
 * ss__numa_can_bind() is what says whether binding is real.
 *
 * Decision and action are split: ss__numa_place() is pure logic (which node
 * for this policy and this client's hint); ss__numa_bind() binds a mapping
 * before it is populated. On shmem the policy sticks to the file; on
 * hugetlb it belongs to the mapping, so the store populates through the
 * mapping it bound. hwloc's -1+errno is converted to -errno here.
 */
#ifndef SEALSTORE_SRC_LIB_NUMA_H
#define SEALSTORE_SRC_LIB_NUMA_H

#include "internal.h"
#include "options.h"

#define SS_NODE_ANY (-1)        /* no binding: the kernel's default policy */
#define SS_NODE_INTERLEAVE (-2) /* interleave across all nodes */
#define SS_MAX_NODES 64         /* nodes counted in stats; more are folded */

typedef struct ss__numa ss__numa;

/* Load the topology (hwloc env variables apply: HWLOC_XMLFILE,
 * HWLOC_SYNTHETIC, HWLOC_THISSYSTEM). 0, -ENOMEM, -errno; on failure *out
 * is untouched. */
int ss__numa_open(ss__numa **out);
/* Load a synthetic topology, e.g. "pack:2 [numa] core:2 pu:1" (tests);
 * -EINVAL if hwloc rejects desc. HWLOC_THISSYSTEM=1 still makes it "this
 * system", so binding calls reach the kernel. */
int ss__numa_open_synthetic(ss__numa **out, const char *desc);
void ss__numa_close(ss__numa *n);

/*
 * Node numbers are the kernel's (hwloc os_index), possibly sparse. After
 * open an ss__numa is read-only: every call below is thread-safe.
 */
int ss__numa_nodes(const ss__numa *n);          /* >= 1 */
/* The i-th node's number, 0 <= i < ss__numa_nodes(), ascending; -EINVAL
 * otherwise. Use it to walk the nodes (per-node pools, stats). */
int ss__numa_node_id(const ss__numa *n, int i);
/* Inverse of ss__numa_node_id: index of node number `node`, or -EINVAL if
 * no such node (so also a validity check for untrusted node numbers). */
int ss__numa_node_index(const ss__numa *n, int node);
bool ss__numa_can_bind(const ss__numa *n);      /* real system + membind support */
int ss__numa_node_of_cpu(const ss__numa *n, int cpu); /* -1 if unknown cpu */
/* Node of the calling CPU; if that is unknown, the lowest node number
 * (0 on every usual machine). */
int ss__numa_current_node(const ss__numa *n);

/*
 * Which node a new segment goes to. `client_node` is what the client sent
 * (untrusted: any int; one that is not a node is treated as unknown).
 *   LOCAL:      client_node if it is a node, else the store's current node
 *   INTERLEAVE: SS_NODE_INTERLEAVE with 2+ nodes; with one node, that node
 *   NODE:       p->node if that node exists, else -EINVAL
 *   OFF:        SS_NODE_ANY
 * So with one node (number 0) LOCAL, INTERLEAVE and NODE:0 all give 0: a
 * real node, so pools and per-node stats stay keyed on it. An unknown
 * p->mode, or NULL n or p, gives -EINVAL.
 */
int ss__numa_place(const ss__numa *n, const ss__numa_policy *p, int client_node);

/*
 * Bind [addr, addr+len) to `node` (>= 0, SS_NODE_INTERLEAVE or SS_NODE_ANY)
 * before it is populated. node >= 0 is MPOL_BIND to that node alone: strict,
 * the kernel never takes memory elsewhere, so on hugetlb an exhausted node
 * makes population fail (MADV_POPULATE_WRITE error, or SIGBUS on a plain
 * touch) rather than land on another node: populate hugetlb with
 * MADV_POPULATE_WRITE on this mapping. (hugetlbfs fallocate allocates
 * through a pseudo-VMA, i.e. under the calling thread's set_mempolicy, not
 * under this binding; shmem fallocate follows the file's policy set here.)
 * SS_NODE_INTERLEAVE is MPOL_INTERLEAVE over every node; SS_NODE_ANY makes
 * no call.
 * Returns 0 (also when binding is not supported: nothing done, logged once
 * at info level), -EINVAL for a node that does not exist (checked even when
 * binding is unsupported) or that the kernel rejects, other -errno.
 */
int ss__numa_bind(ss__numa *n, void *addr, size_t len, int node);

/* Node holding the page at addr, or -errno: -ENOENT if the page is not
 * present (never touched: asking does not fault it in), -EFAULT if addr is
 * not mapped, -ENOSYS on a kernel without NUMA. */
int ss__numa_node_of_addr(const void *addr);

#endif /* SEALSTORE_SRC_LIB_NUMA_H */
