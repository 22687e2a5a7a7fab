#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python get latency: sealstore vs pickle.loads vs multiprocessing.shared_memory.

For a dict holding a numpy array of each size (default 1 MB, 100 MB, 1 GB),
this process produces the object and another process consumes it:

  sealstore       client.get(id) in the consumer (ss_get + pickle.loads over
                  read-only memoryviews of the mapped object: zero copy)
  pickle.loads    pickle.loads of the same object pickled in band (what
                  Queue/Pipe/Manager-style sharing costs at the receiver)
  shared_memory   SharedMemory(name) + np.ndarray(buffer=shm.buf) + the dict:
                  zero copy too, but shape/dtype/structure travel apart and
                  nothing keeps the memory alive or immutable

Each cell is the median over --runs gets in the consumer (the first get is
shown apart as "first": it maps the object). The producer's cost to publish
is shown too. Nothing is asserted: the target is that a get does not grow
with the size and costs well under a millisecond.

  PYTHONPATH=build/python/.libs LD_LIBRARY_PATH=build/src/lib/.libs \\
      python3 bench/bench_python.py [--sizes 1M,100M,1G] [--runs 15]
"""
import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import sealstore

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(s):
    s = s.strip().upper().rstrip("B")
    return int(float(s[:-1]) * UNITS[s[-1]]) if s[-1] in UNITS else int(s)


def human(n):
    for u in ("GiB", "MiB", "KiB"):
        if n >= UNITS[u[0]]:
            return "%g %s" % (round(n / UNITS[u[0]], 1), u)
    return "%d B" % n


def fmt_us(s):
    us = s * 1e6
    return "%.1f us" % us if us < 1000 else "%.2f ms" % (us / 1000) if us < 1e6 else "%.2f s" % (us / 1e6)


def make_object(nbytes):
    arr = np.ones(nbytes // 8, dtype=np.float64)
    return {"array": arr, "name": "weights", "step": 42, "tags": ["a", "b"], "valid": True}


# ------------------------------------------------------------------ consumer

def child(args):
    """Runs in the consumer process; prints one JSON line of timings."""
    t = []
    first = None
    if args.child == "store":
        c = sealstore.connect(args.socket)
        i = bytes.fromhex(args.id)
        for r in range(args.runs + 1):
            t0 = time.perf_counter()
            obj = c.get(i)
            dt = time.perf_counter() - t0
            assert obj["array"].nbytes == args.nbytes and not obj["array"].flags.writeable
            del obj
            if r == 0:
                first = dt
            else:
                t.append(dt)
        x = c.explain(i)
        extra = {"map": x["map_seconds"], "unpickle": x["unpickle_seconds"]}
        c.close()
    elif args.child == "shm":
        from multiprocessing import resource_tracker, shared_memory
        for r in range(args.runs + 1):
            t0 = time.perf_counter()
            shm = shared_memory.SharedMemory(name=args.id)
            arr = np.ndarray((args.nbytes // 8,), dtype=np.float64, buffer=shm.buf)
            obj = {"array": arr, "name": "weights", "step": 42, "tags": ["a", "b"], "valid": True}
            dt = time.perf_counter() - t0
            del obj, arr
            # 3.11 registers attached segments for unlinking at exit: undo
            resource_tracker.unregister(shm._name, "shared_memory")
            shm.close()
            if r == 0:
                first = dt
            else:
                t.append(dt)
        extra = {}
    else:  # pickle: the same object pickled in band, loaded here
        data = pickle.dumps(make_object(args.nbytes), protocol=5)
        for r in range(args.runs + 1):
            t0 = time.perf_counter()
            obj = pickle.loads(data)
            dt = time.perf_counter() - t0
            del obj
            if r == 0:
                first = dt
            else:
                t.append(dt)
        extra = {}
    print(json.dumps({"median": statistics.median(t), "min": min(t), "first": first, **extra}))


def run_child(kind, nbytes, runs, socket="", ident=""):
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind,
                        "--nbytes", str(nbytes), "--runs", str(runs), "--socket", socket,
                        "--id", ident], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("consumer (%s) failed:\n%s" % (kind, p.stderr))
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ producer

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M,100M,1G")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--socket", default="", help="a running sealstored (default: embedded store)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--nbytes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("SEALSTORE_LOG", "error")
    if args.child:
        return child(args)

    from multiprocessing import shared_memory
    tmp = tempfile.mkdtemp(prefix="ssbench-")
    sock = args.socket or os.path.join(tmp, "store.sock")
    c = sealstore.connect(sock, embed=not args.socket)
    rows = []
    try:
        for nbytes in map(parse_size, args.sizes.split(",")):
            runs = args.runs if nbytes < (512 << 20) else max(5, args.runs // 3)
            obj = make_object(nbytes)
            puts = []
            for r in range(3):  # put and delete: the median publish cost
                t0 = time.perf_counter()
                i = c.put(obj)
                puts.append(time.perf_counter() - t0)
                if r < 2:
                    c.delete(i)
            put_s = statistics.median(puts)
            st = run_child("store", nbytes, args.runs, sock, i.hex())
            c.delete(i)

            t0 = time.perf_counter()
            shm = shared_memory.SharedMemory(create=True, size=nbytes)
            np.ndarray(obj["array"].shape, obj["array"].dtype, buffer=shm.buf)[:] = obj["array"]
            shm_put_s = time.perf_counter() - t0
            sh = run_child("shm", nbytes, args.runs, ident=shm.name)
            shm.close()
            shm.unlink()

            t0 = time.perf_counter()
            data = pickle.dumps(obj, protocol=5)
            dumps_s = time.perf_counter() - t0
            del data, obj
            pk = run_child("pickle", nbytes, runs)
            rows.append((nbytes, st, pk, sh, put_s, dumps_s, shm_put_s))
            print("%-8s done" % human(nbytes), file=sys.stderr)
    finally:
        c.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print("\nget in a consumer process (median of %d; first get apart)" % args.runs)
    hdr = ("size", "sealstore get", "(first)", "map+unpickle", "pickle.loads", "shm attach",
           "loads/get", "shm/get")
    print("%-9s %14s %10s %20s %14s %12s %10s %8s" % hdr)
    for nbytes, st, pk, sh, *_ in rows:
        print("%-9s %14s %10s %20s %14s %12s %10s %8s" % (
            human(nbytes), fmt_us(st["median"]), fmt_us(st["first"]),
            fmt_us(st["map"]) + " + " + fmt_us(st["unpickle"]), fmt_us(pk["median"]),
            fmt_us(sh["median"]), "%.1fx" % (pk["median"] / st["median"]),
            "%.2fx" % (sh["median"] / st["median"])))
    print("\npublish in the producer (sealstore.put: median of 3; others one run)")
    print("%-9s %16s %16s %16s" % ("size", "sealstore.put", "pickle.dumps", "shm create+copy"))
    for nbytes, st, pk, sh, put_s, dumps_s, shm_put_s in rows:
        print("%-9s %16s %16s %16s" % (human(nbytes), fmt_us(put_s), fmt_us(dumps_s),
                                        fmt_us(shm_put_s)))
    small, large = rows[0], rows[-1]
    print("\nsealstore get, largest/smallest size: %.2fx (%s vs %s)" % (
        large[1]["median"] / small[1]["median"], human(large[0]), human(small[0])))


if __name__ == "__main__":
    main()
