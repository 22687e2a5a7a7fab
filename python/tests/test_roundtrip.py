# SPDX-License-Identifier: MIT
"""Round trips through other processes, zero copy, pinning and raw bytes."""
import gc
import math
import multiprocessing
import threading
import time

import pytest

import sealstore
import sshelpers

N = 1 << 20  # 8 MiB of float64: large enough to be a separate segment

PRODUCER = r"""
import json, sys, numpy as np, sealstore, sshelpers
c = sealstore.connect(sys.argv[1])
i = c.put(sshelpers.make_object(np, int(sys.argv[2])))
print(json.dumps({"id": i.hex()}))
"""

CONSUMER = r"""
import json, sys, numpy as np, sealstore, sshelpers
c = sealstore.connect(sys.argv[1])
obj = c.get(bytes.fromhex(sys.argv[2]))
facts = sshelpers.array_facts(obj["array"])
facts["equal"] = sshelpers.same_object(np, obj, int(sys.argv[3]))
print(json.dumps(facts))
"""


def check_zero_copy(facts):
    assert facts["writeable"] is False
    assert facts["owndata"] is False
    assert facts["in_memfd"] is True, "array data is not inside a /memfd: mapping"
    assert facts["write_raises"] and "read-only" in facts["write_raises"]
    assert facts["owner"] == "sealstore.ObjectView"


def test_get_what_another_process_put(client, sock):
    np = pytest.importorskip("numpy")
    out = sshelpers.run_py(PRODUCER, sock, N)
    obj = client.get(bytes.fromhex(out["id"]))
    assert sshelpers.same_object(np, obj, N)
    check_zero_copy(sshelpers.array_facts(obj["array"]))
    assert isinstance(obj["point"], sshelpers.Point)
    with pytest.raises(ValueError):
        obj["array"][1] = 0.0


def test_another_process_gets_what_we_put(client, sock):
    np = pytest.importorskip("numpy")
    i = client.put(sshelpers.make_object(np, N))
    facts = sshelpers.run_py(CONSUMER, sock, i.hex(), N)
    assert facts.pop("equal") is True
    check_zero_copy(facts)


def _forked_child(sock, id_hex, q, inherited, held):
    import errno
    import numpy as np
    try:
        # what the parent fetched stays readable; its client is dead here
        assert sshelpers.same_object(np, held, N)
        try:
            inherited.contains(bytes.fromhex(id_hex))
            raise AssertionError("inherited client still answers in the child")
        except OSError as e:
            assert e.errno == errno.ENOTCONN and "connect anew" in str(e), e
        with sealstore.connect(sock) as c:  # a forked child connects anew
            obj = c.get(bytes.fromhex(id_hex))
            q.put(sshelpers.same_object(np, obj, N) and not obj["array"].flags.writeable)
    except BaseException as e:  # report, don't hang the parent
        q.put(repr(e))


def test_forked_child_connects_anew(client, sock):
    np = pytest.importorskip("numpy")
    i = client.put(sshelpers.make_object(np, N))
    held = client.get(i)  # live views in the parent across the fork
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_forked_child, args=(sock, i.hex(), q, client, held))
    p.start()
    res = q.get(timeout=60)
    p.join(60)
    assert res is True
    assert p.exitcode == 0
    assert sshelpers.same_object(np, held, N)


def refs(client, i):
    for o in client.list():
        if o["id"] == i:
            return o["refs"]
    return None


def test_object_pinned_while_array_lives(client):
    np = pytest.importorskip("numpy")
    i = client.put({"a": np.ones(N)})
    assert refs(client, i) == 0
    obj = client.get(i)
    arr = obj["a"]
    del obj
    gc.collect()
    assert refs(client, i) == 1  # the array holds the reference
    assert client.live_views == 1
    view = arr[10:20]  # views of views keep it too
    del arr
    gc.collect()
    assert refs(client, i) == 1
    del view
    gc.collect()
    assert refs(client, i) == 0
    assert client.live_views == 0


def test_deleted_object_stays_mapped_until_released(client):
    np = pytest.importorskip("numpy")
    i = client.put({"a": np.full(N, 7.0)})
    arr = client.get(i)["a"]
    before = client.stats()
    client.delete(i)
    assert not client.contains(i)
    assert i not in client
    with pytest.raises(KeyError):
        client.get(i)
    assert float(arr.sum()) == 7.0 * N  # still mapped, still intact
    assert client.stats()["releases"] == before["releases"]
    del arr
    gc.collect()
    after = client.stats()
    assert after["releases"] == before["releases"] + 1
    assert client.live_views == 0
    # the id may be used again
    client.put(b"again", id=i)
    assert bytes(client.get(i)) == b"again"


# Views of a deleted object and of its successor with the same id, given
# back in any order: each releases its own object's reference. Run in a
# child process: a wrong release unmaps a live view (SIGSEGV).
SAME_ID = r"""
import gc, os, sys, tempfile
os.environ["SEALSTORE_INDEX_GETS"] = sys.argv[1] if len(sys.argv) > 1 else "on"
import sealstore
d = tempfile.mkdtemp(prefix="sspy-")
c = sealstore.connect(os.path.join(d, "s.sock"), embed=True)
i = b"same-id-twice-000000"
big = 1 << 20
c.put(b"A" * big, id=i)
old = c.get(i)
c.delete(i)
# not contiguous: create + seal + release, not a one-call put
c.put(memoryview(b"B" * (2 * big))[::2], id=i)
assert old.tobytes() == b"A" * big
new = c.get(i)
assert new.tobytes() == b"B" * big
del new  # the successor's view goes first
gc.collect()
assert old.tobytes() == b"A" * big
del old
gc.collect()
new = c.get(i)
assert new.tobytes() == b"B" * big
del new
gc.collect()
print(c.stats()["releases"])
c.close()
"""


def test_views_of_one_id_released_in_any_order():
    # every reference given back: two gets, the put's own, one more get;
    # with gets served from the index (the default), the gets of objects
    # in memory the handle maps already ask nobody, nor do their releases
    assert sshelpers.run_py(SAME_ID.replace('else "on"', 'else "off"')) >= 4
    assert sshelpers.run_py(SAME_ID) >= 2


@pytest.mark.parametrize("make", [
    lambda: b"", lambda: b"x", lambda: bytes(range(256)) * 1000,
    lambda: bytearray(b"mutable source"),
], ids=["empty", "one", "256k", "bytearray"])
def test_raw_bytes_round_trip(client, make):
    data = make()
    i = client.put(data)
    mv = client.get(i)
    assert isinstance(mv, memoryview)
    assert mv.readonly
    assert mv.tobytes() == bytes(data)
    assert type(mv.obj).__name__ == "ObjectView"
    if len(mv):
        with pytest.raises(TypeError):
            mv[0] = 1


def test_raw_memoryview_strided(client):
    src = memoryview(bytes(range(100)))[::3]  # not contiguous: copied in order
    i = client.put(src)
    assert client.get(i).tobytes() == src.tobytes()


def test_raw_bytes_from_other_process(client, sock):
    code = r"""
import json, sys, sealstore
c = sealstore.connect(sys.argv[1])
mv = c.get(bytes.fromhex(sys.argv[2]))
print(json.dumps({"data": mv.tobytes().hex(), "readonly": mv.readonly}))
"""
    i = client.put(b"\x00\x01raw bytes\xff")
    out = sshelpers.run_py(code, sock, i.hex())
    assert out == {"data": b"\x00\x01raw bytes\xff".hex(), "readonly": True}


def test_plain_objects_without_numpy(client, sock):
    # the module imports and works with numpy made unimportable
    code = r"""
import json, sys
sys.modules["numpy"] = None
import sealstore, sshelpers
c = sealstore.connect(sys.argv[1])
obj = {"k": [1, 2.5, "s", None, True], "p": sshelpers.Point(3, 4), "t": (b"b", 7)}
i = c.put(obj)
print(json.dumps({"ok": c.get(i) == obj, "id": i.hex()}))
"""
    out = sshelpers.run_py(code, sock)
    assert out["ok"] is True
    got = client.get(bytes.fromhex(out["id"]))
    assert got["p"] == sshelpers.Point(3, 4) and got["t"] == (b"b", 7)


def test_id_given_and_random(client):
    i = client.put([1, 2, 3])
    assert isinstance(i, bytes) and len(i) == sealstore.ID_SIZE
    j = client.put([1, 2, 3])
    assert i != j
    k = bytes(range(20))
    assert client.put("hello", id=k) == k
    assert client.get(k) == "hello"
    assert client.get(bytearray(k)) == "hello"  # any bytes-like id


def test_get_waits_for_a_later_put(client):
    i = b"w" * 20
    t = threading.Timer(0.2, lambda: client.put({"late": True}, id=i))
    t.start()
    try:
        t0 = time.monotonic()
        assert client.get(i, timeout=30) == {"late": True}
        assert time.monotonic() - t0 < 25
    finally:
        t.join()


def test_get_wait_forever(client):
    i = b"f" * 20
    t = threading.Timer(0.3, lambda: client.put(5, id=i))
    t.start()
    try:
        assert client.get(i, timeout=math.inf) == 5
    finally:
        t.join()


def test_close_keeps_live_arrays_valid(sock):
    np = pytest.importorskip("numpy")
    c = sealstore.connect(sock, embed=True)
    i = c.put({"a": np.arange(N, dtype=np.int64)})
    arr = c.get(i)["a"]
    c.close()
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        c.get(i)
    assert "closing" in repr(c)  # connection kept for the live array
    assert int(arr[-1]) == N - 1 and int(arr.sum()) == N * (N - 1) // 2
    del arr
    gc.collect()
    assert "closed" in repr(c) and "closing" not in repr(c)


def test_context_manager(sock):
    with sealstore.connect(sock, embed=True) as c:
        i = c.put("x")
        assert c.get(i) == "x"
    assert c.closed
    with pytest.raises(ValueError):
        c.put("y")


def test_close_wakes_a_waiting_get(sock):
    c = sealstore.connect(sock, embed=True)
    errors = []

    def waiter():
        try:
            c.get(b"n" * 20, timeout=math.inf)
        except ValueError as e:
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    c.close()
    t.join(10)
    assert not t.is_alive()
    assert errors and "closed" in str(errors[0])


@pytest.mark.parametrize("kind", ["empty", "fortran", "structured", "bool", "0d", "many"])
def test_array_kinds_round_trip(client, kind):
    np = pytest.importorskip("numpy")
    v = {
        "empty": lambda: np.array([], dtype=np.float64),
        "fortran": lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "structured": lambda: np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "i4"), ("b", "f8")]),
        "bool": lambda: np.array([True, False, True]),
        "0d": lambda: np.array(3.5),
        "many": lambda: [np.full(3, k, dtype=np.int16) for k in range(300)],
    }[kind]()
    got = client.get(client.put({"v": v}))["v"]
    for a, b in (zip(v, got) if isinstance(v, list) else [(v, got)]):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        assert a.flags.f_contiguous == b.flags.f_contiguous
        assert not b.flags.writeable


def arena_mappings():
    """Read-only mappings of arenas in this process, by inode: the embedded
    store maps each arena once, a client that maps one too adds a second
    (new arenas the store makes ahead show up with one)."""
    n = {}
    with open("/proc/self/maps") as f:
        for line in f:
            if "sealstore-arena" in line and line.split()[1].startswith("r-"):
                ino = int(line.split()[4])
                n[ino] = n.get(ino, 0) + 1
    return n


def client_mapped(before, after):
    """Arenas the client mapped between the two snapshots."""
    return {i for i, k in after.items() if k > before.get(i, 0) and k >= 2}


def test_large_object_arena_mapping_kept(client):
    # a large object lives in an arena the store copied it into; the
    # client maps the arena once and keeps it after the last release, so
    # a get again maps nothing; a delete frees the object's place at once
    data = bytes(range(256)) * 4096  # 1 MiB: above the small limit
    i = client.put(data)
    st0 = client.stats()
    assert st0["remote_puts"] >= 1 and st0["arena_live_bytes"] >= len(data)
    before = arena_mappings()
    mv = client.get(i)
    assert mv.tobytes() == data
    del mv
    gc.collect()
    kept = client_mapped(before, arena_mappings())
    assert len(kept) == 1
    mv = client.get(i)
    assert mv.tobytes() == data
    del mv
    gc.collect()
    after = arena_mappings()
    assert client_mapped(before, after) == kept
    assert all(after[k] == 2 for k in kept)  # the same mapping, not another
    client.delete(i)
    assert client.stats()["arena_live_bytes"] <= st0["arena_live_bytes"] - len(data)
