# SPDX-License-Identifier: MIT
"""Bad input raises clear exceptions and leaves nothing behind."""
import errno
import math
import os
import pickle
import socket
import subprocess
import sys
import threading

import pytest

import sealstore
import sshelpers


def count(client):
    s = client.stats()
    return s["objects"], s["object_bytes"]


@pytest.mark.parametrize("make", [
    lambda: {"f": lambda x: x},
    lambda: {"sock": socket.socket()},
    lambda: [1, 2, (lambda: 0)],
], ids=["lambda", "socket", "nested-lambda"])
def test_unpicklable_leaves_nothing(client, make):
    obj = make()
    before = count(client)
    i = b"u" * 20
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)) as ei:
        client.put(obj, id=i)
    assert "nothing was stored" in "".join(getattr(ei.value, "__notes__", ["nothing was stored"]))
    assert not client.contains(i)
    assert count(client) == before
    for v in (obj.values() if isinstance(obj, dict) else obj):
        if isinstance(v, socket.socket):
            v.close()


def test_unpicklable_with_numpy_leaves_nothing(client):
    np = pytest.importorskip("numpy")
    before = count(client)
    i = b"v" * 20
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        client.put({"a": np.ones(1 << 20), "bad": lambda: 1}, id=i)
    assert not client.contains(i)
    assert count(client) == before


@pytest.mark.parametrize("bad, exc", [
    ("a" * 20, TypeError), (12345, TypeError), (None, TypeError), (1.5, TypeError),
    (b"short", ValueError), (b"x" * 21, ValueError), (b"", ValueError),
])
def test_wrong_ids(client, bad, exc):
    for call in (client.get, client.delete, client.contains, client.explain):
        with pytest.raises(exc):
            call(bad)
    if bad is not None:  # None means "random id" to put
        with pytest.raises(exc):
            client.put(1, id=bad)
        with pytest.raises(exc):
            bad in client


def test_missing_ids(client):
    i = b"m" * 20
    with pytest.raises(KeyError):
        client.get(i)
    with pytest.raises(KeyError):
        client.delete(i)
    with pytest.raises(TimeoutError) as ei:
        client.get(i, timeout=0.05)
    assert ei.value.errno == errno.ETIMEDOUT
    assert client.contains(i) is False


@pytest.mark.parametrize("t", [-1, -0.5, math.nan, "1"])
def test_bad_timeouts(client, t):
    with pytest.raises((ValueError, TypeError)):
        client.get(b"t" * 20, timeout=t)


def test_existing_id(client):
    i = client.put("first")
    with pytest.raises(sealstore.ObjectExistsError) as ei:
        client.put("second", id=i)
    assert isinstance(ei.value, FileExistsError)
    assert isinstance(ei.value, sealstore.Error) and isinstance(ei.value, OSError)
    assert ei.value.errno == errno.EEXIST
    assert i.hex() in str(ei.value)
    assert client.get(i) == "first"


def test_closed_client(sock):
    c = sealstore.connect(sock, embed=True)
    i = c.put(1)
    c.close()
    c.close()  # idempotent
    for call, args in [(c.put, (1,)), (c.get, (i,)), (c.delete, (i,)), (c.contains, (i,)),
                       (c.stats, ()), (c.list, ()), (c.explain, (i,))]:
        with pytest.raises(ValueError, match="closed"):
            call(*args)
    with pytest.raises(ValueError, match="closed"):
        with c:
            pass


def test_connect_without_store(tmp_path):
    with pytest.raises(OSError) as ei:
        sealstore.connect(str(tmp_path / "nobody.sock"))
    assert ei.value.errno in (errno.ENOENT, errno.ECONNREFUSED)
    assert "embed=True" in str(ei.value)
    with pytest.raises(TypeError):
        sealstore.connect(42)


def test_store_full_is_an_oserror(tmp_path):
    # a store of 8 MiB in a child process, with no waiting for memory
    code = r"""
import errno, json, os, sys, sealstore
c = sealstore.connect(sys.argv[1], embed=True)
try:
    c.put(bytes(64 << 20))
    print(json.dumps({"raised": None}))
except sealstore.StoreFullError as e:
    print(json.dumps({"raised": "StoreFullError", "errno": e.errno,
                      "oserror": isinstance(e, OSError), "count": c.stats()["objects"]}))
"""
    out = sshelpers.run_py(code, str(tmp_path / "full.sock"),
                           env={"SEALSTORE_CAPACITY": "8M", "SEALSTORE_CREATE_TIMEOUT": "0",
                                "SEALSTORE_SPILL_DIR": str(tmp_path)})
    assert out == {"raised": "StoreFullError", "errno": errno.ENOSPC, "oserror": True,
                   "count": 0}


def test_explain_bad_client(client):
    with pytest.raises(TypeError):
        sealstore.explain(b"x" * 20, client="not a client")


# ---------------------------------------------------- errors a user can act on

def test_missing_id_is_a_keyerror_in_hex(client):
    i = bytes(range(20))
    for call in (client.get, client.delete):
        with pytest.raises(KeyError) as ei:
            call(i)
        e = ei.value
        assert isinstance(e, sealstore.ObjectNotFoundError)
        assert e.args == (i,) and e.id == i
        assert i.hex() in str(e) and "\\x" not in str(e)


def test_connect_failure_names_the_path(sock):
    with pytest.raises(FileNotFoundError) as ei:
        sealstore.connect(sock)
    assert sock in str(ei.value)
    # the default socket: the path it resolved to, SEALSTORE_SOCKET first
    got = sshelpers.run_py(
        "import json, sealstore\n"
        "try:\n"
        "    sealstore.connect()\n"
        "except OSError as e:\n"
        "    print(json.dumps(str(e)))\n", env={"SEALSTORE_SOCKET": sock})
    assert sock in got and "default socket" in got


def test_store_full_says_capacity_resident_and_size(tmp_path):
    # a store of 32 MiB that does not wait for memory, asked for 48 MiB
    code = (
        "import json, os, sealstore\n"
        "c = sealstore.connect(os.path.join(%r, 's'), embed=True)\n"
        "c.put(b'k' * (8 << 20))\n"
        "try:\n"
        "    c.put(b'x' * (48 << 20))\n"
        "except sealstore.StoreFullError as e:\n"
        "    print(json.dumps([str(e), e.errno, e.requested, e.capacity, e.resident,\n"
        "                      e.object_bytes]))\n" % str(tmp_path))
    msg, err, req, cap, res, objb = sshelpers.run_py(
        code, env={"SEALSTORE_CAPACITY": "32M", "SEALSTORE_CREATE_TIMEOUT": "10ms",
                   "SEALSTORE_LOG": "error"})
    assert err == errno.ENOSPC
    assert req == 48 << 20 and cap == 32 << 20 and objb >= 8 << 20 and res > 0
    assert "asked for 48.0 MiB" in msg and "capacity is 32.0 MiB" in msg
    assert "resident" in msg and "SEALSTORE_CAPACITY" in msg


def test_dead_store_raises_store_gone(remote_store, sock):
    c = sealstore.connect(sock)
    oid = c.put({"a": 1})
    assert c.get(oid) == {"a": 1} and "gone" not in repr(c)
    waiting = []

    def wait():
        try:
            c.get(b"w" * 20, timeout=60)
        except BaseException as e:
            waiting.append(e)
    t = threading.Thread(target=wait)
    t.start()
    remote_store.kill()
    remote_store.wait()
    t.join(30)
    assert not t.is_alive()
    for e in waiting + [pytest.raises(sealstore.StoreGoneError, c.get, oid).value]:
        assert isinstance(e, sealstore.StoreGoneError), repr(e)
        assert isinstance(e, sealstore.Error) and isinstance(e, OSError)
        assert isinstance(e, ConnectionError)
        assert e.socket == sock and sock in str(e) and "gone" in str(e)
    assert c.gone and "gone" in repr(c) and sock in repr(c)
    with pytest.raises(sealstore.StoreGoneError):
        c.put(b"after")
    c.close()
