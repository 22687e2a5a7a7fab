#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python put/get: sealstore vs pickle over a Pipe, shared_memory and pickle-5 files in /dev/shm.

One producer process hands a consumer process a dict of numpy arrays (the
shape of object people share between workers: a few large arrays of
different dtypes beside scalars, strings and a list) of each total size, by
four means, every run a fresh object:

  sealstore      put(obj) in the producer; the consumer gets the 20-byte id
                 and calls get(id): the arrays map the store read-only
                 (zero copy)
  pipe           multiprocessing Pipe: conn.send(obj) (pickled in band,
                 written through the pipe) and conn.recv() (read, unpickled:
                 every byte copied twice)
  shared_memory  multiprocessing.shared_memory: pickle protocol 5 with the
                 arrays out of band, copied into one SharedMemory block; the
                 consumer attaches it by name and unpickles over slices of
                 it (zero copy; the block's lifetime and immutability are
                 the program's business)
  /dev/shm file  the same layout written to a file in /dev/shm; the consumer
                 mmaps it read-only and unpickles over slices (zero copy)

Columns (medians over --runs): put, the producer's time to publish; get,
the consumer's time from having the handle (or, for the pipe, the first
byte) to having the object; total, from the producer starting to publish
to the consumer having the object (CLOCK_MONOTONIC is shared by the two
processes). Nothing is asserted.

Then the put row (--put-array, 100 MiB; 0 skips it): one process puts the
README's kind of object, {"weights": <one float64 array of that size>,
"step": 7}, by two means, alternating in the same run, and the medians are
compared:

  sealstore.put    Client.put(obj) (the object deleted after each run,
                   untimed)
  /dev/shm files   what a program does by hand: pickle.dumps(obj,
                   protocol=5, buffer_callback=...), then the stream and
                   each out-of-band buffer written to a file of its own
                   under /dev/shm (no fsync: tmpfs; unlinked untimed)

The row names the page size the store put the object on (the store's
SEALSTORE_HUGEPAGES and hugepage pool decide it, as for any object).

  PYTHONPATH=build/python/pkg LD_LIBRARY_PATH=build/src/lib/.libs \\
      python3 bench/bench_python.py [--sizes 1M,100M,1G] [--runs 9] [--socket PATH]
      [--put-array 100M] [--json FILE]
"""
import argparse
import json
import mmap
import multiprocessing
import os
import pickle
import shutil
import statistics
import struct
import sys
import tempfile
import time

import numpy as np

import sealstore

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
METHODS = ("sealstore", "pipe", "shared_memory", "/dev/shm file")
ALIGN = 64
now = time.perf_counter  # CLOCK_MONOTONIC: comparable between processes


def parse_size(s):
    s = s.strip().upper().rstrip("B")
    return int(float(s[:-1]) * UNITS[s[-1]]) if s[-1] in UNITS else int(s)


def human(n):
    for u in ("GiB", "MiB", "KiB"):
        if n >= UNITS[u[0]]:
            return "%g %s" % (round(n / UNITS[u[0]], 1), u)
    return "%d B" % n


def fmt_s(s):
    us = s * 1e6
    return "%.1f us" % us if us < 1000 else "%.2f ms" % (us / 1000) if us < 1e6 else "%.2f s" % (us / 1e6)


def make_object(nbytes, seed=0):
    """A dict of arrays of about nbytes in all: half a float32 matrix, a
    quarter float64 embeddings, a quarter int64 ids, plus small parts."""
    rng = np.random.default_rng(seed)
    w = max(1, nbytes // 2 // 4 // 256)
    e = max(1, nbytes // 4 // 8 // 128)
    return {
        "model": {"weights": rng.random((w, 256), dtype=np.float32), "name": "mlp",
                  "bias": np.zeros(256, dtype=np.float32)},
        "emb": rng.random((e, 128)),
        "ids": np.arange(max(1, nbytes // 4 // 8), dtype=np.int64),
        "step": 42, "tags": ["train", "v2"], "valid": True,
    }


def array_bytes(obj):
    return obj["model"]["weights"].nbytes + obj["emb"].nbytes + obj["ids"].nbytes


# ---------------------------------------------- pickle-5 layout (shm, file)

def layout(obj):
    """(in-band pickle, buffers, [(offset, length)], total) with the buffers
    64-byte aligned after a header, the in-band part and the table."""
    bufs = []
    inband = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    raws = [b.raw() for b in bufs]
    head = 16 + len(inband) + 16 * len(raws)
    off = (head + ALIGN - 1) // ALIGN * ALIGN
    table = []
    for r in raws:
        table.append((off, r.nbytes))
        off = (off + r.nbytes + ALIGN - 1) // ALIGN * ALIGN
    return inband, raws, table, off


def write_layout(mem, inband, raws, table):
    """Write the layout into a writable buffer (shm block or file mapping)."""
    mem[0:16] = struct.pack("<QQ", len(inband), len(raws))
    mem[16:16 + len(inband)] = inband
    p = 16 + len(inband)
    for off, n in table:
        mem[p:p + 16] = struct.pack("<QQ", off, n)
        p += 16
    for (off, n), r in zip(table, raws):
        mem[off:off + n] = r


def read_layout(mv):
    """Unpickle from a read-only memoryview of the layout, zero copy."""
    n_in, nb = struct.unpack_from("<QQ", mv, 0)
    p = 16 + n_in
    bufs = []
    for i in range(nb):
        off, n = struct.unpack_from("<QQ", mv, p + 16 * i)
        bufs.append(mv[off:off + n])
    return pickle.loads(mv[16:16 + n_in], buffers=bufs)


# ------------------------------------------------------------------ consumer

def consumer(ctl, data, sock):
    """Runs in the consumer process: receive, time, check, reply."""
    os.environ.setdefault("SEALSTORE_LOG", "error")
    from multiprocessing import shared_memory
    c = sealstore.connect(sock)
    while True:
        msg = ctl.recv()
        if msg is None:
            break
        kind, want = msg[0], msg[-1]
        if kind == "sealstore":
            t0 = now()
            obj = c.get(msg[1])
            t1 = now()
            ok = not obj["emb"].flags.writeable
        elif kind == "pipe":
            data.poll(None)
            t0 = now()
            obj = data.recv()
            t1 = now()
            ok = True
        elif kind == "shared_memory":
            t0 = now()
            shm = shared_memory.SharedMemory(name=msg[1])
            mv = shm.buf.toreadonly()
            obj = read_layout(mv)
            t1 = now()
            ok = not obj["emb"].flags.writeable
            # (the spawned consumer shares the producer's resource tracker:
            # the producer's unlink unregisters the block)
        else:  # file
            t0 = now()
            with open(msg[1], "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            mv = memoryview(mm)
            obj = read_layout(mv)
            t1 = now()
            ok = not obj["emb"].flags.writeable
        ok = ok and array_bytes(obj) == want and obj["step"] == 42
        del obj
        if kind == "shared_memory":
            mv.release()
            shm.close()
        elif kind == "/dev/shm file":
            mv.release()
            mm.close()
        ctl.send((t0, t1, ok))
    c.close()


# ------------------------------------------------------------------ producer

def one_run(kind, obj, c, ctl, data, shmdir):
    """Publish obj by `kind`; returns (put seconds, get seconds, total seconds)."""
    from multiprocessing import shared_memory
    want = array_bytes(obj)
    cleanup = None
    t0 = now()
    if kind == "sealstore":
        oid = c.put(obj)
        t1 = now()
        ctl.send(("sealstore", oid, want))
        cleanup = lambda: c.delete(oid)  # noqa: E731
    elif kind == "pipe":
        ctl.send(("pipe", want))
        data.send(obj)
        t1 = now()
    elif kind == "shared_memory":
        inband, raws, table, total = layout(obj)
        shm = shared_memory.SharedMemory(create=True, size=total)
        write_layout(shm.buf, inband, raws, table)
        t1 = now()
        ctl.send(("shared_memory", shm.name, want))

        def cleanup():
            shm.close()
            shm.unlink()
    else:
        inband, raws, table, total = layout(obj)
        path = os.path.join(shmdir, "obj-%d" % os.getpid())
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, total)
        with mmap.mmap(fd, total) as mm:
            write_layout(memoryview(mm), inband, raws, table)
        os.close(fd)
        t1 = now()
        ctl.send(("/dev/shm file", path, want))
        cleanup = lambda: os.unlink(path)  # noqa: E731
    g0, g1, ok = ctl.recv()
    if cleanup:
        cleanup()
    if not ok:
        sys.exit("%s: the consumer got a wrong object" % kind)
    return t1 - t0, g1 - g0, g1 - t0


# ------------------------------------------------------------------ put row

def put_files(obj, shmdir, tag):
    """The hand-written alternative: the pickle-5 stream and each
    out-of-band buffer to a file of its own in /dev/shm. Returns the paths."""
    bufs = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    paths = [os.path.join(shmdir, "%s-pickle" % tag)]
    with open(paths[0], "wb") as f:
        f.write(stream)
    for i, b in enumerate(bufs):
        paths.append(os.path.join(shmdir, "%s-buf%d" % (tag, i)))
        with open(paths[-1], "wb") as f:
            f.write(b.raw())
    return paths


def put_row(c, nbytes, runs, shmdir):
    """Medians of sealstore.put and of put_files of the same object,
    alternating; and the page size the store used for it."""
    obj = {"weights": np.random.default_rng(7).random(max(1, nbytes // 8)), "step": 7}
    times = {"sealstore.put": [], "/dev/shm files": []}
    backing = "?"
    for r in range(runs + 1):  # run 0 warms both paths up, untimed
        t0 = now()
        oid = c.put(obj)
        t1 = now()
        if r == 0:
            backing = next((e["backing"] for e in c.list() if e["id"] == oid), "?")
        c.delete(oid)
        t2 = now()
        paths = put_files(obj, shmdir, "put%d" % r)
        t3 = now()
        for p in paths:
            os.unlink(p)
        if r > 0:
            times["sealstore.put"].append(t1 - t0)
            times["/dev/shm files"].append(t3 - t2)
    return {k: statistics.median(v) for k, v in times.items()}, backing, obj["weights"].nbytes


def get_split(c, nbytes, runs):
    """explain()'s split of a get of make_object(nbytes): (bytes, median
    seconds in the store, median seconds unpickling)."""
    i = c.put(make_object(nbytes))
    try:
        c.get(i)  # maps its memory: the gets below are served from the index
        ex = [c.explain(i) for _ in range(max(3, runs))]
        return (nbytes, statistics.median(e["map_seconds"] for e in ex),
                statistics.median(e["unpickle_seconds"] for e in ex))
    finally:
        c.delete(i)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M,100M,1G")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--socket", default="", help="a running sealstored (default: embedded store)")
    ap.add_argument("--put-array", default="100M",
                    help="array size of the put row's object (0: no put row)")
    ap.add_argument("--json", help="write the medians to this file")
    args = ap.parse_args()
    os.environ.setdefault("SEALSTORE_LOG", "error")

    tmp = tempfile.mkdtemp(prefix="ssbench-")
    shmdir = tempfile.mkdtemp(prefix="ssbench-", dir="/dev/shm")
    sock = args.socket or os.path.join(tmp, "store.sock")
    c = sealstore.connect(sock, embed=not args.socket)
    ctx = multiprocessing.get_context("spawn")
    ctl, ctl_child = ctx.Pipe()
    data_child, data = ctx.Pipe(duplex=False)  # (receiving end, sending end)
    proc = ctx.Process(target=consumer, args=(ctl_child, data_child, sock))
    proc.start()
    rows = []
    put_res = split = None
    try:
        for nbytes in map(parse_size, args.sizes.split(",")):
            runs = args.runs if nbytes < (512 << 20) else max(3, args.runs // 3)
            res = {k: [] for k in METHODS}
            for r in range(runs):
                obj = make_object(nbytes, seed=r)
                for kind in METHODS:
                    res[kind].append(one_run(kind, obj, c, ctl, data, shmdir))
                del obj
            med = {k: [statistics.median(x[i] for x in v) for i in range(3)]
                   for k, v in res.items()}
            rows.append((nbytes, med))
            print("%-8s done (%d runs)" % (human(nbytes), runs), file=sys.stderr)
        if parse_size(args.put_array) > 0:
            put_res = put_row(c, parse_size(args.put_array), args.runs, shmdir)
            print("put row done (%d runs)" % args.runs, file=sys.stderr)
        split = get_split(c, max(map(parse_size, args.sizes.split(","))), args.runs)
    finally:
        ctl.send(None)
        proc.join()
        c.close()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shmdir, ignore_errors=True)

    print("\nA dict of numpy arrays from one process to another (medians; a fresh object each run)")
    print("%-9s %-14s %12s %12s %12s %14s" % ("size", "method", "put", "get", "total",
                                               "get/sealstore"))
    for nbytes, med in rows:
        base = med["sealstore"][1]
        for kind in METHODS:
            put, get, total = med[kind]
            print("%-9s %-14s %12s %12s %12s %14s" % (
                human(nbytes), kind, fmt_s(put), fmt_s(get), fmt_s(total),
                "%.1fx" % (get / base)))
    if put_res:
        med, backing, nb = put_res
        base = med["sealstore.put"]
        print("\nput of {\"weights\": <%s float64 array>, \"step\": 7} in one process "
              "(medians; store pages: %s)" % (human(nb), backing))
        print("%-16s %12s %10s %16s" % ("method", "put", "GB/s", "speed/sealstore"))
        for kind, t in med.items():
            print("%-16s %12s %10.2f %15.2fx" % (kind, fmt_s(t), nb / t / 1e9, base / t))
    if split:
        nb, m, u = split
        print("\nget of the %s dict by the process that holds its memory mapped (explain(), "
              "medians): %s in the store (ss_get, served from the index) + %s unpickling the "
              "small parts: the store's share %.0f%%" % (human(nb), fmt_s(m), fmt_s(u),
                                                          100.0 * m / (m + u)))
    if args.json:
        out = [{"bytes": n, **{k: dict(zip(("put", "get", "total"), v))
                               for k, v in med.items()}} for n, med in rows]
        if put_res:
            med, backing, nb = put_res
            out.append({"put_row": {"array_bytes": nb, "backing": backing, **med}})
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
