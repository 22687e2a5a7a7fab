# SPDX-License-Identifier: MIT
"""Who may make get() unpickle: objects carry their creator's uid, and
pickled objects of uids the client does not trust are refused (unpickling
runs code of the creator's choosing); raw bytes are returned to anyone."""
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import sealstore
from sshelpers import HERE

OTHER = 65534  # nobody / nogroup


def test_own_objects_are_trusted(client, sock):
    me = os.geteuid()
    oid = client.put({"a": [1, 2]})
    raw = client.put(b"raw bytes")
    assert client.trust == frozenset({me})
    assert client.get(oid) == {"a": [1, 2]}
    mv = client.get(raw)
    assert bytes(mv) == b"raw bytes" and mv.obj.uid == me
    uids = {e["id"]: e["uid"] for e in client.list()}
    assert uids[oid] == me and uids[raw] == me
    # the explicit forms
    assert client.get(oid, trust="any") == {"a": [1, 2]}
    assert client.get(oid, trust=[me + 1]) == {"a": [1, 2]}  # own uid always trusted
    with sealstore.connect(sock, trust="any") as c2:
        assert c2.trust == "any"
    with sealstore.connect(sock, trust=[123, 456]) as c3:
        assert c3.trust == frozenset({me, 123, 456})
    with sealstore.connect(sock, trust=123) as c4:
        assert c4.trust == frozenset({me, 123})


@pytest.mark.parametrize("bad, exc", [
    ("everyone", ValueError),
    ([-1], ValueError),
    ([2**32 - 1], ValueError),  # SS_UID_UNKNOWN: only trust="any" covers it
    (["root"], TypeError),
    ([True], TypeError),
    (1.5, TypeError),
])
def test_bad_trust(client, sock, bad, exc):
    oid = client.put([1])
    with pytest.raises(exc):
        client.get(oid, trust=bad)
    with pytest.raises(exc):
        sealstore.connect(sock, trust=bad)


# ------------------------------------------------- another uid's objects

WRITER = r"""
import json, os, sys
import sealstore

class Boom:
    # unpickling this runs os.mkdir(marker): the code a creator chooses
    def __reduce__(self):
        return (os.mkdir, (sys.argv[2],))

c = sealstore.connect(sys.argv[1])
ids = {"pickled": c.put({"a": 1}), "raw": c.put(b"raw bytes"), "boom": c.put(Boom()),
       "big": c.put(list(range(50000)))}
try:
    import numpy as np
    ids["array"] = c.put(np.arange(1000))
except ImportError:
    pass
print(json.dumps({k: v.hex() for k, v in ids.items()}))
"""


@pytest.fixture
def foreign():
    """A store this process (root) hosts, whose SEALSTORE_SOCKET_GROUP lets
    uid 65534 in, and the ids of objects a uid-65534 process put there."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a process of another uid (65534) creates the objects")
    d = tempfile.mkdtemp(prefix="sspy-trust-")
    os.chmod(d, 0o711)  # uid 65534 reaches the socket, lists nothing
    path = os.path.join(d, "s.sock")
    marker = os.path.join(d, "pwned")
    env = dict(os.environ, SEALSTORE_SOCKET_GROUP=str(OTHER))
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    host = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, sealstore; c = sealstore.connect(sys.argv[1], embed=True); "
         "print('ready', flush=True); sys.stdin.read()", path],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout.readline().strip() == "ready"
        w = subprocess.run([sys.executable, "-c", WRITER, path, marker], env=env,
                           user=OTHER, group=OTHER, extra_groups=[], capture_output=True,
                           text=True, timeout=60)
        assert w.returncode == 0, "writer failed:\n" + w.stderr
        ids = {k: bytes.fromhex(v) for k, v in json.loads(w.stdout.splitlines()[-1]).items()}
        yield path, ids, marker
    finally:
        host.stdin.close()
        host.wait(timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def test_other_uid_refused_by_default(foreign):
    path, ids, marker = foreign
    with sealstore.connect(path) as c:
        for name in [k for k in ids if k != "raw"]:
            with pytest.raises(sealstore.UntrustedObjectError) as ei:
                c.get(ids[name])
            e = ei.value
            assert isinstance(e, sealstore.Error) and isinstance(e, PermissionError)
            assert e.errno == errno.EPERM
            assert e.uid == OTHER and e.id == ids[name]
            assert "uid 65534" in str(e) and "trust=" in str(e)
        assert not os.path.exists(marker)  # the pickle's code never ran
        with pytest.raises(sealstore.UntrustedObjectError):
            c.explain(ids["pickled"])
        # raw bytes run nothing: anyone's are returned, with their creator
        mv = c.get(ids["raw"])
        assert bytes(mv) == b"raw bytes" and mv.obj.uid == OTHER
        del mv
        uids = {e["id"]: e["uid"] for e in c.list()}
        assert all(uids[i] == OTHER for i in ids.values())
        # the refusals took no reference for good: the objects can go
        assert c.live_views == 0


def test_other_uid_accepted_when_trusted(foreign):
    path, ids, marker = foreign
    with sealstore.connect(path) as c:
        assert c.get(ids["pickled"], trust=[OTHER]) == {"a": 1}
        assert c.get(ids["big"], trust="any") == list(range(50000))
        assert c.explain(ids["pickled"], trust=OTHER)["kind"] == "pickle5"
        with pytest.raises(sealstore.UntrustedObjectError):
            c.get(ids["pickled"], trust=[OTHER + 1])
    with sealstore.connect(path, trust=[OTHER]) as c:
        assert c.get(ids["pickled"]) == {"a": 1}
        if "array" in ids:
            arr = c.get(ids["array"])
            assert arr.sum() == sum(range(1000)) and not arr.flags.writeable
            del arr
    with sealstore.connect(path, trust="any") as c:
        assert c.get(ids["pickled"]) == {"a": 1}
        # what the default refuses: trusting a uid lets it run code here
        assert not os.path.exists(marker)
        c.get(ids["boom"])
        assert os.path.isdir(marker)
