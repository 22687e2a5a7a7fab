#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Dask with sealstore (sealstore.dask) beside stock Dask, on one machine.

Each scenario runs on a fresh cluster of --workers single-threaded worker
processes (LocalCluster, processes=True) in three modes: stock; sealstore,
sealstore.dask.setup() (a store embedded in this process, on a socket in a
temporary directory, threshold the module's default); results, the same
with results=True (every large result moves into the store as it is
computed). --runs repetitions each, medians reported, with the ratio stock
/ that mode:

  broadcast  client.scatter(a, broadcast=True) of one float64 array of
             --size MiB, then one task on every worker reading all of it
             (a.sum()); time from the scatter to the last result.
  combine    every worker makes --blocks arrays of --block MiB (untimed),
             then every worker runs one task that sums, elementwise, all
             the blocks of all the workers: each moves the others' blocks
             to itself; time of that phase.
  sizes      one worker makes 16 arrays of each size, another receives
             them: time per transfer, stock vs sealstore, to choose the
             threshold (the module's default, 1 MiB, comes from it).

Memory: the node's memory at the peak of each phase: the workers' private
resident bytes (RssAnon, sampled every 20 ms) plus the bytes of the
objects in the store (the cluster's: the store serves nothing else), and
that peak above the idle cluster's memory (measured once after its start).
This process's memory is left out: it holds the broadcast array in both.

  two-nodes  two stores on two sockets ("nodes" a and b), two workers on
             each (SpecCluster, each worker's SEALSTORE_SOCKET its node's):
             a block made on a1 goes to a2 (same store: a reference) and to
             b1 (the other store: bytes through Dask's comm), checked equal
             to the original; time per transfer each way.

Needs python3-distributed and numpy; run from a build tree:

    PYTHONPATH=python/pkg LD_LIBRARY_PATH=src/lib/.libs \\
        python3 ../bench/bench_dask.py --size 512 --block 64 --blocks 2 --runs 3

Nothing is asserted but the values: a wrong value fails the run.
"""
import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

MiB = 1 << 20
MODES = ("stock", "sealstore", "results")


def rss_anon(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Peak:
    """Samples the node's memory (workers' RssAnon + the store's objects: the
    cluster's only, settle() waits until the last run's are gone)."""

    def __init__(self, pids, store):
        self.pids, self.store = pids, store
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _store(self):
        return self.store.stats()["object_bytes"] if self.store is not None else 0

    def sample(self):
        v = sum(rss_anon(p) for p in self.pids) + self._store()
        if os.environ.get("BENCH_DASK_DEBUG"):
            print([rss_anon(p) >> 20 for p in self.pids], self._store() >> 20, file=sys.stderr)
        self.peak = max(self.peak, v)
        return v

    def _run(self):
        while not self._stop.wait(0.02):
            self.sample()

    def __enter__(self):
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.sample()


def read_all(a):
    return float(a.sum())


def make_block(n, seed):
    import numpy as np
    return np.full(n, float(seed))


def combine(*blocks):
    import numpy as np
    out = np.zeros_like(blocks[0])
    for b in blocks:
        out += b
    return float(out[0]), float(out[-1])


def make_many(n, count):
    import numpy as np
    return [np.full(n, float(i)) for i in range(count)]


def count_many(arrays):
    return sum(float(a[-1]) for a in arrays)


def start(args, mode, sock):
    import distributed
    import sealstore.dask as sd
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR, memory_limit=0)
    client = distributed.Client(cluster)
    if mode != "stock":
        sd.setup(client, socket=sock, results=(mode == "results"))
    workers = sorted(client.scheduler_info()["workers"])
    pids = list(client.run(os.getpid).values())
    return cluster, client, workers, pids


def settle(client, store):
    """Wait until the store holds no object of the cluster's (the released
    keys' objects are deleted by the workers' reapers)."""
    import sealstore.dask as sd
    if store is None:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not [o for o in store.list()
                if o["id"][:4] == sd.MAGIC and o["id"][16:] != b"\0\0\0\0"]:
            return
        time.sleep(0.05)
    print("warning: the store still holds objects after 30 s", file=sys.stderr)


def broadcast(args, client, workers, pids, store):
    import numpy as np
    times, peaks = [], []
    for r in range(args.runs):
        a = np.random.default_rng(r).random(args.size * MiB // 8)  # a new array each run
        want = float(a.sum())
        with Peak(pids, store) as pk:
            t0 = time.perf_counter()
            [f] = client.scatter([a], broadcast=True, hash=False)
            got = client.gather([client.submit(read_all, f, workers=[w], pure=False)
                                 for w in workers])
            times.append(time.perf_counter() - t0)
        assert got == [want] * len(workers), got
        peaks.append(pk.peak)
        del f, a
        settle(client, store)
    return statistics.median(times), statistics.median(peaks)


def combine_phase(args, client, workers, pids, store):
    n = args.block * MiB // 8
    times, peaks = [], []
    for _ in range(args.runs):
        blocks = [client.submit(make_block, n, i * args.blocks + j, workers=[w], pure=False)
                  for i, w in enumerate(workers) for j in range(args.blocks)]
        distributed_wait(blocks)
        with Peak(pids, store) as pk:
            t0 = time.perf_counter()
            outs = client.gather([client.submit(combine, *blocks, workers=[w], pure=False)
                                  for w in workers])
            times.append(time.perf_counter() - t0)
        total = float(sum(range(len(blocks))))
        assert outs == [(total, total)] * len(workers), outs
        peaks.append(pk.peak)
        del blocks
        settle(client, store)
    return statistics.median(times), statistics.median(peaks)


def distributed_wait(futures):
    import distributed
    distributed.wait(futures)


def set_threshold(value):
    import sealstore.dask as sd
    n = sd.node()
    if n is None:
        return None
    old, n.threshold = n.threshold, value
    return old


def sizes_phase(args, client, workers, sizes):
    out = {}
    # every size by reference (the threshold is what this measures)
    old = client.run(set_threshold, min(sizes))
    for size in sizes:
        count = max(16, min(256, (64 * MiB) // size))
        ts = []
        for _ in range(args.runs):
            src = client.submit(make_many, size // 8, count, workers=[workers[0]], pure=False)
            distributed_wait([src])
            t0 = time.perf_counter()
            got = client.submit(count_many, src, workers=[workers[1]], pure=False).result()
            ts.append((time.perf_counter() - t0) / count)
            assert got == float(sum(range(count)))
            del src
        out[size] = statistics.median(ts)
    for w, v in old.items():
        if v is not None:
            client.run(set_threshold, v, workers=[w])
    return out


def two_nodes(args, tmp):
    import distributed
    import sealstore
    import sealstore.dask as sd
    socks = {"a": os.path.join(tmp, "na.sock"), "b": os.path.join(tmp, "nb.sock")}
    hosts = {k: sealstore.connect(s, embed=True) for k, s in socks.items()}
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "SEALSTORE_LOG": "error"}
    spec = {name: {"cls": distributed.Nanny,
                   "options": {"nthreads": 1, "memory_limit": 0,
                               "silence_logs": logging.ERROR,
                               "env": dict(env, SEALSTORE_SOCKET=socks[name[0]])}}
            for name in ("a1", "a2", "b1", "b2")}
    sched = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    n = args.block * MiB // 8
    res = {}
    with distributed.SpecCluster(workers=spec, scheduler=sched,
                                 silence_logs=logging.ERROR) as sc, \
            distributed.Client(sc) as client:
        sd.setup(client)
        names = {v["name"]: k for k, v in client.scheduler_info()["workers"].items()}
        socket_of = client.run(lambda: sd.node().socket)
        assert all(socket_of[names[w]] == socks[w[0]] for w in names), socket_of
        for label, dst in (("a1 -> a2 (same store)", "a2"), ("a1 -> b1 (other store)", "b1")):
            ts = []
            for r in range(args.runs):
                x = client.submit(make_block, n, r + 1, workers=[names["a1"]], pure=False)
                distributed_wait([x])
                t0 = time.perf_counter()
                got = client.submit(lambda b: (float(b[0]), float(b[-1]), b.nbytes,
                                               bool(b.flags.writeable)),
                                    x, workers=[names[dst]], pure=False).result()
                ts.append(time.perf_counter() - t0)
                assert got[:3] == (r + 1.0, r + 1.0, n * 8), got
                del x
            res[label] = (statistics.median(ts), got[3])
    for h in hosts.values():
        h.close()
    return res


def human(n):
    return "%.0f MiB" % (n / MiB)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--size", type=int, default=512, help="broadcast array, MiB")
    ap.add_argument("--block", type=int, default=64, help="combine block, MiB")
    ap.add_argument("--blocks", type=int, default=2, help="blocks per worker")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="broadcast,combine,sizes,two-nodes")
    args = ap.parse_args()
    only = set(args.only.split(","))
    try:
        import distributed  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        print("SKIP: %s (install python3-distributed and python3-numpy)" % e)
        return 0
    import sealstore
    logging.getLogger("distributed").setLevel(logging.ERROR)
    os.environ.setdefault("SEALSTORE_LOG", "error")
    tmp = tempfile.mkdtemp(prefix="ssdk-bench-")
    sock = os.path.join(tmp, "s.sock")
    store = sealstore.connect(sock, embed=True)
    sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20]
    print("sealstore.dask bench: %d single-threaded worker processes, %d run(s) each, "
          "medians; %d vCPU" % (args.workers, args.runs, os.cpu_count()))
    results = {}
    for mode in MODES:
        cluster, client, workers, pids = start(args, mode, sock)
        st = store if mode != "stock" else None
        with Peak(pids, st) as idle:
            pass
        results[("idle", mode)] = idle.peak
        try:
            if "broadcast" in only:
                results[("broadcast", mode)] = broadcast(args, client, workers, pids, st)
            if "combine" in only:
                results[("combine", mode)] = combine_phase(args, client, workers, pids, st)
            if "sizes" in only and len(workers) >= 2 and mode != "results":
                results[("sizes", mode)] = sizes_phase(args, client, workers, sizes)
        finally:
            client.close()
            cluster.close()
    rows = [("broadcast", "scatter(%s, broadcast=True) + a read on each of %d workers"
             % (human(args.size * MiB), args.workers)),
            ("combine", "%d x %d x %s blocks, each worker sums all (moves %s)"
             % (args.workers, args.blocks, human(args.block * MiB),
                human((args.workers - 1) * args.blocks * args.block * MiB * args.workers)))]
    print("time, and the node's memory at the peak (workers' RssAnon + store objects) and "
          "that peak above the idle cluster's;\nratios: stock / that mode")
    for key, what in rows:
        if (key, "stock") not in results:
            continue
        print("%s: %s" % (key, what))
        t0, m0 = results[(key, "stock")]
        g0 = m0 - results[("idle", "stock")]
        for mode in MODES:
            t, m = results[(key, mode)]
            g = m - results[("idle", mode)]
            print("  %-9s time %7.3f s %5.1fx   peak %6s %5.2fx   above idle %6s %5.2fx"
                  % (mode, t, t0 / t, human(m), m0 / max(m, 1), human(g), g0 / max(g, 1)))
    if ("sizes", "stock") in results:
        print("per-array transfer time by size (one worker to another; sealstore: every "
              "size by reference):")
        for size in sizes:
            a, b = results[("sizes", "stock")][size], results[("sizes", "sealstore")][size]
            print("  %8d KiB  stock %8.1f us  sealstore %8.1f us  %5.2fx"
                  % (size >> 10, a * 1e6, b * 1e6, a / b))
    if "two-nodes" in only:
        for label, (t, writeable) in two_nodes(args, tmp).items():
            print("two nodes: %-24s %s block: %8.3f s (received array %s)"
                  % (label, human(args.block * MiB), t,
                     "writeable: a copy" if writeable else "read-only: mapped from the store"))
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
