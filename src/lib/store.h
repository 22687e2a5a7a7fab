/* SPDX-License-Identifier: MIT */
/*
 * The store: one object index, capacity accounting, the memory layer
 * (numa, pool, small allocator) and a single-threaded epoll loop serving a
 * SOCK_SEQPACKET socket. The daemon
 * (src/daemon/sealstored.c) runs it in its main thread; SS_CONNECT_EMBED
 * runs it in a thread of the host process. One code path serves both.
 *
 * Threads: the event loop owns every store structure. Seal verification
 * (F_ADD_SEALS can block ~160 ms on pinned pages) runs on a worker thread
 * and comes back to the loop through an eventfd; the populator is its own
 * thread (pool.h). Nothing else touches store state.
 *
 * Binding a path: under an flock on "<path>.lock" (never unlink-and-bind
 * races); a socket file nobody answers a hello on is stale and replaced; a
 * live store on the path makes ss__store_open fail with -EADDRINUSE.
 */
#ifndef SEALSTORE_SRC_LIB_STORE_H
#define SEALSTORE_SRC_LIB_STORE_H

#include "internal.h"

typedef struct ss__store ss__store;

#define SS_STORE_EMBEDDED (1u << 0) /* runs inside a client process */

/*
 * Create the store: memory layer from the options, the index memfd, the
 * lock file and the listening socket (mode 0600, or 0660 with
 * SEALSTORE_SOCKET_GROUP). Does not start serving.
 * Returns 0; -EADDRINUSE (a live store serves the path); -EINVAL (path too
 * long / bad options); -EACCES; -ENOMEM; other -errno.
 */
int ss__store_open(ss__store **out, const char *socket_path, unsigned flags);

/* Serve until ss__store_stop(): returns 0 after a clean stop, or -errno. */
int ss__store_run(ss__store *s);

/* Ask the loop to stop: async-signal-safe (writes an eventfd). The loop
 * stops accepting, finishes in-flight replies, then ss__store_run returns. */
void ss__store_stop(ss__store *s);

/* After run returned (or instead of run): free everything, remove the
 * socket and lock file. NULL is a no-op. */
void ss__store_close(ss__store *s);

/* Embedded mode: open and run in a new thread. */
int ss__store_start_thread(ss__store **out, const char *socket_path, unsigned flags);
/* Stop, join, close. */
void ss__store_stop_thread(ss__store *s);

/*
 * The default socket path (README, SEALSTORE_SOCKET): $SEALSTORE_SOCKET (the option), else
 * $XDG_RUNTIME_DIR/sealstore.sock, else /tmp/sealstore-UID/sealstore.sock
 * (the directory created 0700 if missing, and refused unless owned by us
 * with mode 0700). Returns the length, -ENAMETOOLONG, or -errno.
 */
int ss__default_socket_path(char *buf, size_t len);

#endif /* SEALSTORE_SRC_LIB_STORE_H */
