# SPDX-License-Identifier: MIT
"""lifetime="creator": the store deletes an object when the client that
put it goes (close, exit, crash); without it an object stays until it is
deleted."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import sealstore
import sshelpers

MiB = 1 << 20

CHILD = (
    "import os, signal, sys, json, sealstore\n"
    "c = sealstore.connect(sys.argv[1])\n"
    "ids = [c.put(b'b' * 100, lifetime='creator'),\n"
    "       c.put({'big': b'x' * (3 << 20)}, lifetime='creator'),\n"
    "       c.put_ref(bytearray(2 << 20), lifetime='creator').id,\n"
    "       c.put(b'kept' * 10)]\n"
    "print(json.dumps([i.hex() for i in ids]), flush=True)\n"
    "if sys.argv[2] == 'kill':\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n")


def clients(client):
    return client.stats()["clients"]


def wait_clients(client, n):
    """The store handles a disconnect on its own time: wait for its count."""
    for _ in range(100000):
        if clients(client) == n:
            return
        time.sleep(0.0005)
    assert clients(client) == n


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_child_objects_go_with_it(client, sock, how):
    n = clients(client)
    p = subprocess.run([sys.executable, "-c", CHILD, sock, how], capture_output=True,
                       text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    if how == "kill":
        assert p.returncode == -signal.SIGKILL
    else:
        assert p.returncode == 0, p.stderr
    ids = [bytes.fromhex(x) for x in json.loads(p.stdout)]
    wait_clients(client, n)
    assert [i in client for i in ids] == [False, False, False, True]
    assert client.get(ids[3]) == b"kept" * 10
    client.delete(ids[3])


def test_view_outlives_its_creator(client, sock):
    other = sealstore.connect(sock)
    oid = other.put(b"v" * MiB, lifetime="creator")
    view = client.get(oid)
    listed = {d["id"]: d["lifetime"] for d in client.list()}
    assert listed[oid] == "creator"
    n = clients(client)
    other.close()
    del other
    wait_clients(client, n - 1)
    assert oid not in client
    assert bytes(view[:3]) == b"vvv" and len(view) == MiB  # still readable
    client.put(b"again", oid)  # the id is free at once
    assert bytes(client.get(oid)) == b"again"
    client.delete(oid)


def test_default_and_bad_values(client):
    oid = client.put(b"x", lifetime=None)
    assert {d["id"]: d["lifetime"] for d in client.list()}[oid] is None
    for bad in ("forever", 1, True):
        with pytest.raises(ValueError):
            client.put(b"y", lifetime=bad)
    with pytest.raises(TypeError):
        client.put(b"y", None, None)  # keyword only
    assert len(client.list()) == 1
