# SPDX-License-Identifier: MIT
"""sealstore.Ref: made by put_ref/put(ref=True)/share, pickled as a few
bytes, resolved zero-copy in another process, connecting once per process."""
import multiprocessing
import os
import pickle

import pytest

import sealstore
import sshelpers

MiB = 1 << 20


def test_put_still_returns_ids(client):
    oid = client.put({"a": 1})
    assert isinstance(oid, bytes) and len(oid) == sealstore.ID_SIZE


@pytest.mark.parametrize("how", ["put_ref", "put-ref=True", "share"])
def test_ref_makers(client, how):
    obj = {"x": list(range(100))}
    if how == "put_ref":
        ref = client.put_ref(obj)
    elif how == "share":
        ref = client.share(client.put(obj))
    else:
        ref = client.put(obj, ref=True)
    assert isinstance(ref, sealstore.Ref)
    assert len(ref.id) == 20 and ref.size > 0 and ref.socket == client.path
    assert ref.get() == obj
    assert ref.client() is client  # the creator's own client, in its process


def test_ref_pickles_small_and_equal(client):
    ref = client.put_ref(b"x" * (4 * MiB))
    data = pickle.dumps(ref)
    assert len(data) < 128, len(data)
    back = pickle.loads(data)
    assert back == ref and hash(back) == hash(ref)
    assert (back.id, back.size, back.socket) == (ref.id, 4 * MiB, client.path)
    assert bytes(back.get()) == b"x" * (4 * MiB)


def test_ref_repr_says_whether_it_is_there(client):
    ref = client.put_ref(b"y" * 3000)
    r = repr(ref)
    assert ref.id.hex() in r and "2.9 KiB" in r and "present" in r
    ref.delete()
    assert "deleted" in repr(ref) and not ref.exists()
    with pytest.raises(KeyError):
        ref.get()


def test_share_of_a_missing_id(client):
    with pytest.raises(sealstore.ObjectNotFoundError):
        client.share(b"m" * 20)


def test_ref_resolved_in_another_process(client, sock):
    np = pytest.importorskip("numpy")
    ref = client.put_ref({"array": np.arange(1 << 20, dtype=np.float64)})
    code = (
        "import pickle, sys, json, sealstore, sshelpers\n"
        "ref = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
        "a = ref.get()['array']\n"
        "again = ref.get()\n"
        "f = sshelpers.array_facts(a)\n"
        "f['one_client'] = len(sealstore._clients) == 1 and ref.client() is "
        "pickle.loads(bytes.fromhex(sys.argv[1])).client()\n"
        "f['repr'] = repr(ref)\n"
        "print(json.dumps(f))\n")
    f = sshelpers.run_py(code, pickle.dumps(ref).hex())
    assert f["in_memfd"] and not f["writeable"] and not f["owndata"]
    assert f["one_client"]
    assert ref.id.hex() in f["repr"] and "present" in f["repr"]


def test_ref_without_socket_honours_SEALSTORE_SOCKET(client, sock):
    ref = sealstore.Ref(client.put(b"z" * 100), 100)  # socket None: the receiver's default
    code = ("import pickle, sys, json\n"
            "ref = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
            "print(json.dumps([ref.socket, bytes(ref.get()).decode()]))\n")
    got = sshelpers.run_py(code, pickle.dumps(ref).hex(), env={"SEALSTORE_SOCKET": sock})
    assert got == [None, "z" * 100]


def test_ref_rejects_bad_ids():
    with pytest.raises(ValueError):
        sealstore.Ref(b"short", 1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_recipe_passes_a_large_array_without_copying(client, method):
    # python/README.md, "Passing arrays to a multiprocessing.Pool"
    np = pytest.importorskip("numpy")
    n = 256 * MiB
    ref = client.put_ref({"weights": np.ones(n // 8, dtype=np.float64)})
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        results = pool.map(sshelpers.pool_worker, [ref] * 4, chunksize=1)
    for f in results:
        assert f["nbytes"] == n and f["sum"] == n // 8
        assert f["in_memfd"] and not f["writeable"] and not f["owndata"]
        assert f["write_raises"], "the worker could write the array"
        # every page was read: a copy would have grown private memory by n
        # (a sanitizer build's shadow memory grows it by n / 8 and more)
        assert f["anon_growth"] < n // 2, f["anon_growth"]
        assert f["clients"] == 1  # one connection per worker process, however many tasks
