/* SPDX-License-Identifier: MIT */
/*
 * NUMA placement (DESIGN section 4). hwloc discovers the topology once, when
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

/* Load the topology (hwloc env variables apply). 0, -ENOMEM, -errno. */
int ss__numa_open(ss__numa **out);
/* Load a synthetic topology, e.g. "pack:2 [numa] core:2 pu:1" (tests). */
int ss__numa_open_synthetic(ss__numa **out, const char *desc);
void ss__numa_close(ss__numa *n);

int ss__numa_nodes(const ss__numa *n);          /* >= 1 */
bool ss__numa_can_bind(const ss__numa *n);      /* real system + membind support */
int ss__numa_node_of_cpu(const ss__numa *n, int cpu); /* -1 if unknown cpu */
int ss__numa_current_node(const ss__numa *n);   /* node of the calling CPU, or 0 */

/*
 * Which node a new segment goes to. `client_node` is what the client sent
 * (untrusted: anything out of range is treated as unknown, -1).
 *   LOCAL:      client_node if valid, else the store's current node
 *   INTERLEAVE: SS_NODE_INTERLEAVE (SS_NODE_ANY on a single node)
 *   NODE:       p->node if it exists, else -EINVAL
 *   OFF:        SS_NODE_ANY
 * With one node every policy but OFF gives 0.
 */
int ss__numa_place(const ss__numa *n, const ss__numa_policy *p, int client_node);

/* Bind [addr, addr+len) to `node` (>= 0, SS_NODE_INTERLEAVE or SS_NODE_ANY)
 * before it is populated. 0 (also when binding is not supported: nothing
 * done), -EINVAL for a node that does not exist, other -errno. */
int ss__numa_bind(ss__numa *n, void *addr, size_t len, int node);

/* Node holding the page at addr (after it was touched), or -errno. */
int ss__numa_node_of_addr(const void *addr);

#endif /* SEALSTORE_SRC_LIB_NUMA_H */
