# SPDX-License-Identifier: MIT
"""Client.put_many: batched puts, explicit ids, per-item failures, lifetime,
and large objects that take put()'s own path inside a batch."""
import pickle
import time

import pytest

import sealstore

MiB = 1 << 20


def small_objects(np=None):
    objs = [b"raw %d" % i for i in range(50)]
    objs += [{"i": i, "s": "x" * i, "l": list(range(i % 7))} for i in range(200)]
    objs += [bytearray(b"ba"), memoryview(b"mv" * 10), b"", None, (1, 2.5, "t")]
    if np is not None:
        objs += [np.arange(i, dtype=np.int32) for i in range(1, 40)]
    return objs


def same(a, b, np=None):
    if isinstance(a, (bytes, bytearray, memoryview)):
        return bytes(b) == bytes(a)
    if np is not None and isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def check_all(client, objs, ids, np=None):
    assert len(ids) == len(objs) and len(set(ids)) == len(ids)
    for o, i in zip(objs, ids):
        assert isinstance(i, bytes) and len(i) == 20
        assert same(o, client.get(i), np), (o, i)


def test_small_roundtrip(client):
    objs = small_objects()
    ids = client.put_many(objs)
    check_all(client, objs, ids)
    assert client.stats()["objects"] == len(objs)


def test_small_numpy_roundtrip(client):
    np = pytest.importorskip("numpy")
    objs = small_objects(np)
    ids = client.put_many(iter(objs))  # any iterable
    check_all(client, objs, ids, np)


def test_empty(client):
    assert client.put_many([]) == []


def test_explicit_ids(client):
    ids = [bytes([i]) * 20 for i in range(1, 11)]
    objs = [{"n": i} for i in range(10)]
    got = client.put_many(objs, [bytearray(i) for i in ids])
    assert got == ids
    check_all(client, objs, ids)
    with pytest.raises(ValueError):
        client.put_many([1, 2], ids[:1])  # one id per object
    with pytest.raises(ValueError):
        client.put_many([1], [b"short"])
    with pytest.raises(TypeError):
        client.put_many([1], ["a str id" * 3])
    assert client.stats()["objects"] == 10  # bad ids: nothing stored


def test_duplicate_id_others_stored(client):
    taken = b"t" * 20
    client.put(b"first", taken)
    ids = [b"a" * 20, taken, b"b" * 20, b"b" * 20, b"c" * 20]
    objs = [{"a": 1}, {"b": 2}, b"bee", b"bee again", [3]]
    with pytest.raises(sealstore.ObjectExistsError) as ei:
        client.put_many(objs, ids)
    e = ei.value
    assert sorted(e.failed) == [1, 3]  # the stored id, and the repeat within the call
    assert all(isinstance(x, sealstore.ObjectExistsError) for x in e.failed.values())
    assert e.ids == ids
    assert "2 of 5 items failed" in " ".join(getattr(e, "__notes__", []))
    assert bytes(client.get(taken)) == b"first"  # not overwritten
    assert client.get(ids[0]) == {"a": 1}
    assert bytes(client.get(ids[2])) == b"bee"
    assert client.get(ids[4]) == [3]


def test_unpicklable_item_others_stored(client):
    objs = [1, lambda: 0, 3]
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as ei:
        client.put_many(objs)
    e = ei.value
    assert list(e.failed) == [1]
    assert client.get(e.ids[0]) == 1 and client.get(e.ids[2]) == 3
    assert e.ids[1] not in client


def test_lifetime_creator(client, sock):
    other = sealstore.connect(sock)
    n = client.stats()["clients"]
    kept = other.put_many([b"k1", {"k": 2}])
    gone = other.put_many([b"g1", {"g": 2}, b"g" * MiB], lifetime="creator")
    listed = {d["id"]: d["lifetime"] for d in client.list()}
    assert [listed[i] for i in kept] == [None, None]
    assert [listed[i] for i in gone] == ["creator"] * 3
    other.close()
    del other
    for _ in range(100000):  # the store handles the disconnect on its own time
        if client.stats()["clients"] == n - 1:
            break
        time.sleep(0.0005)
    assert [i in client for i in gone] == [False] * 3
    assert [i in client for i in kept] == [True, True]
    with pytest.raises(ValueError):
        client.put_many([1], lifetime="forever")


def test_large_in_batch(client):
    np = pytest.importorskip("numpy")
    big = np.arange(2 * MiB // 8, dtype=np.float64)
    nc = memoryview(bytes(range(256)) * 1024)[::2]  # non-contiguous: put's path
    objs = [{"x": 1}, {"big": big, "n": 7}, b"mid", nc, b"R" * (3 * MiB), [4]]
    ids = client.put_many(objs)
    got = client.get(ids[1])
    assert got["n"] == 7 and np.array_equal(got["big"], big)
    assert not got["big"].flags.owndata and not got["big"].flags.writeable  # zero copy
    assert bytes(client.get(ids[3])) == bytes(nc)
    assert bytes(client.get(ids[4])) == b"R" * (3 * MiB)
    assert client.get(ids[0]) == {"x": 1} and client.get(ids[5]) == [4]
    assert bytes(client.get(ids[2])) == b"mid"


def test_large_duplicate_in_batch(client):
    np = pytest.importorskip("numpy")
    big = np.ones(MiB, dtype=np.uint8)
    taken = client.put(b"old")
    with pytest.raises(sealstore.ObjectExistsError) as ei:
        client.put_many([1, {"big": big}, 3], [b"1" * 20, taken, b"3" * 20])
    assert list(ei.value.failed) == [1]
    assert bytes(client.get(taken)) == b"old"
    assert client.get(b"1" * 20) == 1 and client.get(b"3" * 20) == 3


def test_closed(client, sock):
    other = sealstore.connect(sock)
    other.close()
    with pytest.raises(ValueError):
        other.put_many([1])



class ClearsList:
    """Empties the list put_many was given while it is being pickled."""

    def __init__(self, victim):
        self.victim = victim

    def __reduce__(self):
        self.victim.clear()
        return (int, (5,))


def test_list_changed_while_stored(client):
    np = pytest.importorskip("numpy")
    objs = [{"i": 1}]
    objs += [ClearsList(objs), {"big": np.ones(MiB, dtype=np.uint8)}, b"B" * 100, [9]]
    big = objs[2]["big"]
    ids = client.put_many(objs)  # stores the objects it was given
    assert objs == []
    assert client.get(ids[0]) == {"i": 1} and client.get(ids[1]) == 5
    assert np.array_equal(client.get(ids[2])["big"], big)
    assert bytes(client.get(ids[3])) == b"B" * 100 and client.get(ids[4]) == [9]
