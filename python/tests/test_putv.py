# SPDX-License-Identifier: MIT
"""put() of a pickled object is one ss_putv(): the header, the pickle and
the out-of-band buffers go to the store from where they are (no copy of
the buffers in this process), in the layout sspy.h describes."""
import json
import os
import pickle
import struct
import subprocess
import sys

import pytest

import sealstore
import sshelpers

MiB = 1 << 20
META_ALIGN = 64  # SSPY_ALIGN: each out-of-band buffer starts on it


def object_view(arr):
    """The sealstore.ObjectView (the whole stored object) under an array or
    memoryview that get() returned."""
    base = arr
    while not isinstance(base, memoryview):
        base = base.base
    return base.obj


def expected_layout(obj):
    """The object bytes put() must store for obj, built here from the
    layout in sspy.h: header, pickle, 8-aligned table, 64-aligned buffers."""
    bufs = []
    pk = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    raws = [b.raw().tobytes() for b in bufs]
    end = 64 + len(pk)
    table = (end + 7) & ~7
    end = table + 16 * len(raws)
    offsets = []
    for r in raws:
        off = (end + META_ALIGN - 1) & ~(META_ALIGN - 1)
        offsets.append(off)
        end = off + len(r)
    out = bytearray(end)
    out[0:64] = struct.pack("<IHHIIQQQQ16x", 0x59505353, 1, 0, len(raws), 64, 64, len(pk),
                            table, end)
    out[64:64 + len(pk)] = pk
    for i, (off, r) in enumerate(zip(offsets, raws)):
        out[table + 16 * i:table + 16 * i + 16] = struct.pack("<QQ", off, len(r))
        out[off:off + len(r)] = r
    return bytes(out)


def mixed(np, n):
    rng = np.random.default_rng(n)
    big = rng.integers(0, 1 << 62, size=(n, 6), dtype=np.int64)
    return {
        "f64": rng.standard_normal(n),
        "i8": np.arange(n * 3 + 5, dtype=np.int8),
        "fortran": np.asfortranarray(big),          # contiguous, F order: out of band
        "strided": big[::3, 1:5],                   # non-contiguous: pickled in band
        "transposed": big.T[:, ::2],                # non-contiguous too
        "empty": np.zeros(0, dtype=np.float32),
        "bytes": bytes(range(256)) * 7,
        "bytearray": bytearray(b"\x00\xff" * 333),
        "nested": [np.full(17, 7, dtype=np.uint16), (b"x", None, 3.5)],
    }


def same_arrays(np, got, want):
    assert set(got) == set(want)
    for k, w in want.items():
        g = got[k]
        if isinstance(w, np.ndarray):
            assert g.dtype == w.dtype and g.shape == w.shape, k
            assert g.tobytes(order="A") == w.tobytes(order="A"), k
            assert g.flags.f_contiguous == w.flags.f_contiguous, k
        elif k == "nested":
            assert g[0].tobytes() == w[0].tobytes() and g[1] == w[1]
        else:
            assert type(g) is type(w) and g == w, k


# 50 rows: the whole object fits a small put (inline in the request);
# 200000 rows: tens of MiB, a put into its own segment
@pytest.mark.parametrize("n", [50, 200000])
def test_mixed_dict_round_trips_byte_exact(client, n):
    np = pytest.importorskip("numpy")
    want = mixed(np, n)
    oid = client.put(want)
    got = client.get(oid)
    same_arrays(np, got, want)
    # the stored bytes are exactly the documented layout (old objects and
    # other readers depend on it): gaps zero, buffers where the table says
    assert bytes(object_view(got["f64"])) == expected_layout(want)
    # and put_many, put_ref and put_async share the path
    ids = client.put_many([want, {"small": np.arange(3)}])
    assert bytes(object_view(client.get(ids[0])["f64"])) == expected_layout(want)
    ref = client.put_ref(want)
    same_arrays(np, ref.get(), want)


@pytest.mark.parametrize("equal", [False, True])
def test_more_buffers_than_one_putv_takes(client, equal):
    """Past SS_IOV_MAX pieces the buffers beyond the longest are gathered
    (also when all are as long): the object is the same."""
    np = pytest.importorskip("numpy")
    if equal:
        parts = [np.full(300, i, dtype=np.int64) for i in range(1500)]
    else:
        parts = [np.arange(i % 97 + (4096 if i % 50 == 0 else 0), dtype=np.int32)
                 for i in range(1500)]
    want = {"parts": parts}
    oid = client.put(want)
    got = client.get(oid)
    assert len(got["parts"]) == 1500
    for g, w in zip(got["parts"], want["parts"]):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes()
    assert bytes(object_view(got["parts"][0])) == expected_layout(want)


STORE = r"""
import sys, sealstore
c = sealstore.connect(sys.argv[1], embed=True)
print("ready", flush=True)
sys.stdin.read()
"""

# A client that puts a 64 MiB array and reports how far its peak resident
# memory rose during the put. Copying the array into the object would map
# and fill 64 MiB of the object in this process (its peak grows by the
# array's size); a put that hands the array's memory to ss_putv does not.
PUTTER = r"""
import json, sys, numpy as np, sealstore

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

c = sealstore.connect(sys.argv[1])
n = int(sys.argv[2])
a = np.arange(n // 8, dtype=np.float64)
c.delete(c.put({"warm": np.ones(4096)}))
try:  # start the peak afresh (Linux >= 4.0); without it the test is only weaker
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
peak0 = max(status("VmHWM"), status("VmRSS"))
oid = c.put({"a": a, "tag": "big"})
peak1 = status("VmHWM")
got = c.get(oid)
print(json.dumps({"growth": peak1 - peak0, "equal": bool((got["a"] == a).all())}))
"""


def test_put_does_not_copy_buffers_in_the_client(sock):
    pytest.importorskip("numpy")
    size = 64 * MiB
    # 4 KiB pages: hugetlb objects cannot be written with pwritev, so the
    # library maps them to fill them (its business, not the binding's)
    env = dict(os.environ, SEALSTORE_LOG="error", SEALSTORE_HUGEPAGES="off",
               PYTHONPATH=sshelpers.HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    store = subprocess.Popen([sys.executable, "-c", STORE, sock], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert store.stdout.readline().strip() == "ready"
        out = sshelpers.run_py(PUTTER, sock, size, env={"SEALSTORE_HUGEPAGES": "off"})
    finally:
        store.kill()
        store.wait()
    assert out["equal"] is True
    assert out["growth"] < size // 4, (
        "the put raised the client's peak memory by %d bytes for a %d-byte array: "
        "the buffers were copied in the client" % (out["growth"], size))
