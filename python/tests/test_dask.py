# SPDX-License-Identifier: MIT
"""sealstore.dask: Dask workers on one store share arrays zero-copy, workers
on another store get the bytes through Dask's comm, and the store's objects
go when Dask forgets the keys or a worker dies.

One LocalCluster of 2 single-threaded worker processes for most tests (its
start is the slow part), one SpecCluster of 4 workers on two stores for the
two-"node" test."""
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

distributed = pytest.importorskip(
    "distributed", reason="Dask's distributed is not importable: install python3-distributed")
np = pytest.importorskip("numpy", reason="numpy is not importable: install python3-numpy")

import dask  # noqa: E402
import sealstore  # noqa: E402
import sealstore.dask as sd  # noqa: E402
import sshelpers  # noqa: E402

KiB = 1 << 10
THRESHOLD = 64 * KiB
N = 128 * KiB  # float64 elements: 1 MiB arrays


def wait_until(cond, what, timeout=30):
    """Poll a state check (the store and the workers act on their own time)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def dask_objects(c):
    """The store's sealstore.dask data objects (not the identity, not the
    processes' liveness objects)."""
    return [o for o in c.list() if o["id"][:4] == sd.MAGIC and o["id"][16:] != b"\0\0\0\0"]


def cluster_env(sock):
    # workers import sshelpers (the tasks' helpers) and this module's functions
    here = os.path.dirname(os.path.abspath(__file__))
    return {"PYTHONPATH": os.pathsep.join([here] + sys.path), "SEALSTORE_LOG": "error",
            "SEALSTORE_SOCKET": sock}


@pytest.fixture(scope="module")
def store_dir():
    d = tempfile.mkdtemp(prefix="ssdk-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(store_dir):
    """(client, store client) on a store embedded here (workers(client):
    the workers' addresses, which change when a nanny restarts one)."""
    sock = os.path.join(store_dir, "a.sock")
    host = sealstore.connect(sock, embed=True)
    old = dict(os.environ)
    os.environ.update(cluster_env(sock))
    try:
        # No active memory manager: its ReduceReplicas drops a key's extra
        # replica every 2 s, so a producer could lose its own copy and get
        # the store's back, which the tests here would take for a bug.
        with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
            lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                          dashboard_address=None, silence_logs=logging.ERROR)
        client = sd.setup(distributed.Client(lc), socket=sock, threshold=THRESHOLD)
    finally:
        os.environ.clear()
        os.environ.update(old)
    yield client, host
    client.close()
    lc.close()
    host.close()


def workers_of(client):
    return sorted(client.scheduler_info()["workers"])


def make(n, seed):
    return np.random.default_rng(seed).random(n)


def facts(x):
    """array_facts() of a task's input, without writing into it (it tries)."""
    writeable = bool(x.flags.writeable)
    v = x.view()
    v.flags.writeable = False
    f = sshelpers.array_facts(v)
    f.update(writeable=writeable, sum=float(x.sum()))
    return f


def node_counts():
    n = sd.node()
    return (n.puts, n.reused) if n is not None else None


def test_same_node_zero_copy(cluster):
    client, host = cluster
    w0, w1 = workers_of(client)
    x = client.submit(make, N, 1, workers=[w0], pure=False)
    got = client.submit(facts, x, workers=[w1], pure=False).result()
    assert got["in_memfd"] and not got["writeable"], got
    assert got["owner"] == "sealstore.ObjectView"
    assert got["write_raises"]
    assert got["sum"] == float(make(N, 1).sum())
    # the producer put it once; its own copy stays its (writeable) result
    assert client.submit(facts, x, workers=[w0], pure=False).result()["writeable"]


def test_broadcast_puts_once(cluster):
    client, host = cluster
    workers = workers_of(client)
    before = client.run(node_counts)
    puts = sd.node().puts
    a = make(N, 2)
    [f] = client.scatter([a], broadcast=True)
    # the client copied it into the store once, for both workers: the
    # worker that forwarded it to the other sent the same object
    assert sd.node().puts == puts + 1
    after = client.run(node_counts)
    assert [after[w][0] for w in workers] == [before[w][0] for w in workers]
    assert sum(after[w][1] for w in workers) >= sum(before[w][1] for w in workers) + 1
    for w in workers:
        got = client.submit(facts, f, workers=[w], pure=False).result()
        assert got["in_memfd"] and not got["writeable"] and got["sum"] == float(a.sum())
    assert sum(o["size"] for o in dask_objects(host)) >= a.nbytes
    # forwarding an array mapped from the store sends the same object
    g = client.submit(lambda x: x[: N // 2], f, workers=[workers[0]], pure=False)
    got = client.submit(facts, g, workers=[workers[1]], pure=False).result()
    assert got["in_memfd"] and got["sum"] == float(a[: N // 2].sum())
    # (no new put on the forwarding worker; at least one reference sent:
    # the active memory manager may move a replica meanwhile, by reference)
    counts = client.run(node_counts)
    assert counts[workers[0]][0] == after[workers[0]][0]
    assert counts[workers[0]][1] >= after[workers[0]][1] + 1


def gather_values(x):
    import numpy as np
    return {"c": np.ascontiguousarray(x), "f": np.asfortranarray(x), "t": x.T,
            "small": x[:3].copy(), "list": [1, "two", None], "b": bytearray(b"z" * 100000)}


def test_values_equal_stock(cluster):
    """Whatever goes by reference, what arrives is what stock Dask gives."""
    import dask.array as da
    client, host = cluster
    workers = workers_of(client)
    x = da.random.RandomState(5).random_sample((512, 512), chunks=(128, 512))
    y = (x.rechunk((512, 128)) * 2).T @ x
    want = y.compute(scheduler="sync")
    np.testing.assert_array_equal(client.compute(y).result(), want)
    a = np.arange(256 * 256, dtype=np.float32).reshape(256, 256)
    v = client.submit(gather_values, a, workers=[workers[0]], pure=False)
    got = client.submit(lambda d: d, v, workers=[workers[1]], pure=False).result()
    want = gather_values(a)
    assert set(got) == set(want)
    for k in ("c", "f", "t", "small"):
        np.testing.assert_array_equal(got[k], want[k])
        assert got[k].flags.f_contiguous == want[k].flags.f_contiguous
    assert got["list"] == want["list"] and got["b"] == want["b"]


def test_object_lives_with_the_value(cluster):
    """An object stays while the value it was copied from lives, whatever
    temporary pickling exported the buffer from (numpy pickles an F-ordered
    array through a transposed view), and goes once the value does."""
    import gc
    import pickle
    client, host = cluster
    n = sd.node()

    def pickled(a):
        bufs = []
        pickle.dumps(a, protocol=5, buffer_callback=bufs.append)
        return bufs

    for make_value, buffers in ((lambda: make(N, 8).reshape(512, 256), pickled),
                                (lambda: make(N, 9).reshape(512, 256).T, pickled),
                                (lambda: make(N, 10),
                                 lambda a: [pickle.PickleBuffer(memoryview(a))])):
        a = make_value()
        bufs = buffers(a)
        oid, off, size = n.ref(bufs[0])
        assert n.ref(bufs[0]) == (oid, off, size)  # once per value
        want = bufs[0].raw().tobytes()
        del bufs
        gc.collect()
        n.reap()
        assert oid in host and bytes(host.get(oid)) == want
        del a
        gc.collect()
        n.reap()
        assert oid not in host


def test_reap_reads_retirements_first(cluster):
    """An object put, listed by the reaper with refs 0, then mapped by the
    value that replaces its source (results=True does that) and retired,
    stays: the reaper reads the retirements before the list."""
    import gc
    import pickle
    import threading
    client, host = cluster
    n = sd.node()
    box = [make(N, 13)]
    oid, _, _ = n.ref(pickle.PickleBuffer(box[0]))
    gc.collect()
    held, real, me = [], n.client, threading.current_thread()

    class Racing:
        """The store client, but the test's own list() lets the value
        change between the listing and the reaper's decisions."""

        def __getattr__(self, name):
            return getattr(real, name)

        def list(self):
            out = real.list()
            if threading.current_thread() is me and not held:
                held.append(real.get(oid))  # the new value maps it
                box.clear()                  # the source goes: retired
                gc.collect()
            return out

    n.client = Racing()
    try:
        n.reap()
    finally:
        n.client = real
    assert held and oid in host
    del held[:]
    gc.collect()
    n.reap()
    assert oid not in host


def test_scheduler_path_sends_bytes(cluster):
    """The scheduler forwards what it does not unpickle; Dask speaks pickle
    protocol 4 with it, so no reference goes through it."""
    client, host = cluster
    puts = sd.node().puts
    a = make(N, 3)
    f = client.submit(np.sum, a, pure=False)  # the argument goes in the graph
    [s] = client.scatter([a], direct=False)
    assert f.result() == a.sum()
    assert client.submit(facts, s, pure=False).result()["sum"] == float(a.sum())
    assert sd.node().puts == puts


def test_key_release_deletes(cluster):
    client, host = cluster
    w0, w1 = workers_of(client)
    x = client.submit(make, N, 4, workers=[w0], pure=False)
    y = client.submit(lambda a: a * 2, x, workers=[w1], pure=False)
    z = client.submit(lambda a, b: float(a.sum() + b.sum()), x, y, workers=[w0], pure=False)
    assert z.result() == float(make(N, 4).sum() * 3)
    assert dask_objects(host)
    del x, y, z
    wait_until(lambda: not dask_objects(host), "the released keys' objects to go")


def test_worker_death(cluster):
    """A dead worker's objects go once no other worker maps them; the values
    the others got from it stay valid."""
    client, host = cluster
    w0, w1 = workers_of(client)
    x = client.submit(make, N, 6, workers=[w0], pure=False)
    y = client.submit(lambda a: a, x, workers=[w1], pure=False)  # maps w0's object
    assert client.submit(lambda a: a.flags.writeable, y, workers=[w1], pure=False).result() \
        is False
    pid0 = client.run(os.getpid, workers=[w0])[w0]
    mine = [o["id"] for o in dask_objects(host) if o["refs"]]
    assert mine
    os.kill(pid0, signal.SIGKILL)
    wait_until(lambda: w0 not in client.scheduler_info()["workers"], "the worker's death")
    # w1 still holds y, on the dead worker's object: it stays
    assert all(i in host for i in mine)
    assert client.submit(lambda a: float(a.sum()), y, workers=[w1], pure=False).result() \
        == float(make(N, 6).sum())
    del x, y
    wait_until(lambda: not dask_objects(host), "the dead worker's objects to go")
    wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, "the nanny's restart")


def set_results(on):
    import gc
    import sealstore.dask as sd
    sd.node()  # installed
    for p in get_worker_plugins().values():
        if isinstance(p, sd.SealstorePlugin):
            p.results = on
    gc.collect()


def get_worker_plugins():
    from distributed import get_worker
    return get_worker().plugins


def test_results_in_the_store(cluster):
    """results=True: a result goes into the store as it is computed; the
    worker keeps no private copy and sending it copies nothing more."""
    client, host = cluster
    w0, w1 = workers_of(client)
    client.run(set_results, True)
    try:
        before = client.run(node_counts)
        x = client.submit(make, N, 11, workers=[w0], pure=False)
        mine = client.submit(facts, x, workers=[w0], pure=False).result()
        assert mine["in_memfd"] and not mine["writeable"]
        assert mine["sum"] == float(make(N, 11).sum())
        got = client.submit(facts, x, workers=[w1], pure=False).result()
        assert got["in_memfd"] and got["sum"] == mine["sum"]
        after = client.run(node_counts)
        # one put (the result's), none when sending: a reference to it
        assert after[w0] == (before[w0][0] + 1, before[w0][1] + 1)
        assert after[w1][0] == before[w1][0]
        # small results stay as they are
        assert client.submit(lambda: np.ones(4), workers=[w0], pure=False).result().sum() == 4
        del x
        wait_until(lambda: not dask_objects(host), "the result's object to go")
    finally:
        client.run(set_results, False)


def spill_facts(x, key):
    """How the worker running it counts its input x (key: x's key, after a
    "k:", as Dask would put x's value for the key itself) and
    whether a SpillBuffer whose memory target is below x's size writes x,
    and then a private copy of it, to its disk."""
    from dask.sizeof import sizeof
    from distributed import get_worker
    from distributed.spill import SpillBuffer
    plain = np.array(x)
    d = tempfile.mkdtemp(prefix="ssdk-spill-")
    try:
        sb = SpillBuffer(d, target=THRESHOLD)
        sb["store"] = x
        sb["plain"] = plain
        return {"in_memfd": facts(x)["in_memfd"], "nbytes": x.nbytes,
                "sizeof": sizeof(x), "plain_sizeof": sizeof(plain),
                "view_sizeof": sizeof(memoryview(x)),
                "weight": get_worker().data.fast.weights.get(key[2:]),
                "fast": sorted(sb.fast), "slow": sorted(sb.slow)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sizeof_registration():
    """In a worker: the sizeof in place is sealstore's, installing it again
    changes nothing, and values not backed by the store keep their sizes."""
    from dask.sizeof import sizeof
    mine = sizeof.dispatch(np.ndarray)
    sd._count_store_nominally()
    a = np.zeros(N)
    return {"ours": getattr(mine, "_sealstore", False),
            "same": sizeof.dispatch(np.ndarray) is mine,
            "list": sizeof([a, a[::2]]) >= a.nbytes + a.nbytes // 2,
            "view": sizeof(memoryview(a)) == a.nbytes, "bytes": sizeof(bytes(N)) >= N}


def test_store_values_not_spilled_by_dask(cluster):
    """sealstore.spill (default): a worker counts an array mapped from the
    store at its overhead, so its SpillBuffer keeps it in memory (the
    store governs those bytes); its own arrays count and spill as always."""
    client, host = cluster
    w0, w1 = workers_of(client)
    x = client.submit(make, N, 12, workers=[w0], pure=False)
    got = client.submit(spill_facts, x, "k:" + x.key, workers=[w1], pure=False).result()
    assert got["in_memfd"], got
    assert got["sizeof"] < 4 * KiB and got["view_sizeof"] < 4 * KiB, got
    assert got["plain_sizeof"] >= got["nbytes"], got
    # the worker's own accounting of the received key
    assert got["weight"] is not None and got["weight"] < 4 * KiB, got
    assert got["fast"] == ["store"] and got["slow"] == ["plain"], got
    # a result the worker computed itself is its own (private) array: full size
    y = client.submit(make, N, 13, workers=[w1], pure=False)
    mine = client.submit(spill_facts, y, "k:" + y.key, workers=[w1], pure=False).result()
    assert not mine["in_memfd"] and mine["sizeof"] >= mine["nbytes"], mine
    assert mine["weight"] >= mine["nbytes"] and mine["slow"] == ["plain", "store"]
    for w, reg in client.run(sizeof_registration).items():
        assert all(reg.values()), (w, reg)


def test_preloads(store_dir, cluster):
    """--preload-nanny sealstore.dask embeds the node's store in the nanny
    (none answers at the configured socket) and hands its socket to the
    worker; --preload sealstore.dask installs the family in the worker."""
    import dask
    sock = os.path.join(store_dir, "n.sock")
    env = cluster_env(sock)
    del env["SEALSTORE_SOCKET"]  # found by the nanny
    opts = {"nthreads": 1, "env": env, "preload": ["sealstore.dask"],
            "preload_nanny": ["sealstore.dask"], "silence_logs": logging.ERROR}
    spec = {w: {"cls": distributed.Nanny, "options": opts} for w in ("p1", "p2")}
    sched = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    with dask.config.set({"sealstore.socket": sock, "sealstore.threshold": THRESHOLD}), \
            distributed.SpecCluster(workers=spec, scheduler=sched,
                                    silence_logs=logging.ERROR) as sc, \
            distributed.Client(sc) as client:
        names = {v["name"]: k for k, v in client.scheduler_info()["workers"].items()}
        assert set(client.run(node_of, None).values()) == {sock}
        assert sd._nanny_client is not None and sd._nanny_client.socket == sock
        x = client.submit(make, N, 12, workers=[names["p1"]], pure=False)
        got = client.submit(facts, x, workers=[names["p2"]], pure=False).result()
        assert got["in_memfd"] and got["sum"] == float(make(N, 12).sum())


# ----------------------------------------------------- two nodes, two stores

def node_of(_):
    import sealstore.dask as sd
    return sd.node().socket


def test_two_stores(store_dir, cluster):
    """Two "nodes": two stores, two workers on each. Transfers within a pair
    go by reference; across the pair through the comm, and all are right."""
    client0, host_a = cluster
    sock_a = host_a.socket
    sock_b = os.path.join(store_dir, "b.sock")
    host_b = sealstore.connect(sock_b, embed=True)
    spec = {}
    for name, sock in (("a1", sock_a), ("a2", sock_a), ("b1", sock_b), ("b2", sock_b)):
        spec[name] = {"cls": distributed.Nanny,
                      "options": {"nthreads": 1, "env": cluster_env(sock)}}
    sched = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    with distributed.SpecCluster(workers=spec, scheduler=sched, silence_logs=logging.ERROR,
                                 asynchronous=False) as sc, distributed.Client(sc) as client:
        sd.setup(client, threshold=THRESHOLD)  # this process: on store a already
        # each worker found its own node's store
        names = {v["name"]: k for k, v in client.scheduler_info()["workers"].items()}
        socks = client.run(node_of, None)
        assert {n: socks[names[n]] for n in names} == \
            {"a1": sock_a, "a2": sock_a, "b1": sock_b, "b2": sock_b}
        before_b = len(dask_objects(host_b))
        x = client.submit(make, N, 7, workers=[names["a1"]], pure=False)
        same = client.submit(facts, x, workers=[names["a2"]], pure=False).result()
        other = client.submit(facts, x, workers=[names["b1"]], pure=False).result()
        want = float(make(N, 7).sum())
        assert same["in_memfd"] and not same["writeable"] and same["sum"] == want
        assert not other["in_memfd"] and other["sum"] == want
        # b1 now holds a private copy; b2 gets b1's through b's store
        y = client.submit(lambda a: a + 1, x, workers=[names["b1"]], pure=False)
        got = client.submit(facts, y, workers=[names["b2"]], pure=False).result()
        assert got["in_memfd"] and got["sum"] == float((make(N, 7) + 1).sum())
        assert len(dask_objects(host_b)) > before_b
        # and back across: a2 gets b1's result as bytes, right
        got = client.submit(facts, y, workers=[names["a2"]], pure=False).result()
        assert not got["in_memfd"] and got["sum"] == float((make(N, 7) + 1).sum())
        del x, y
        wait_until(lambda: not dask_objects(host_b), "store b's objects to go")
    host_b.close()


def test_import_without_distributed():
    code = ("import sys; sys.modules['distributed'] = None\n"
            "import sealstore.dask as sd\n"
            "try:\n"
            "    sd.install()\n"
            "except ImportError as e:\n"
            "    assert 'python3-distributed' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('install() without distributed')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
