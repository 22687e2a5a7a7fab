# SPDX-License-Identifier: MIT
"""Helpers shared by the tests and by the child processes they start."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class Point:
    """A custom class: pickled in band, rebuilt through its __dict__."""

    def __init__(self, x, y, weights=None):
        self.x = x
        self.y = y
        self.weights = weights

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


def make_object(np, n):
    """The object the round-trip tests share: a large array, lists, None, a
    bool and a custom class instance."""
    return {
        "array": np.arange(n, dtype=np.float64),
        "list": [1, "two", [3.0, None]],
        "none": None,
        "flag": True,
        "point": Point(1, 2),
    }


def same_object(np, got, n):
    want = make_object(np, n)
    return (set(got) == set(want) and got["list"] == want["list"] and got["none"] is None
            and got["flag"] is True and got["point"] == want["point"]
            and got["array"].dtype == want["array"].dtype
            and np.array_equal(got["array"], want["array"]))


def memfd_ranges():
    """(start, end) of every /memfd: mapping of this process."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "/memfd:" in line:
                lo, hi = line.split()[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def array_facts(arr):
    """What the tests check about an array that get() returned, as JSON-able
    facts, so a child process can report them."""
    addr = arr.__array_interface__["data"][0]
    end = addr + arr.nbytes
    base = arr
    while hasattr(base, "base") and base.base is not None and not isinstance(base, memoryview):
        base = base.base
    owner = base.obj if isinstance(base, memoryview) else base
    try:
        arr[0] = 42
        write_raises = None
    except ValueError as e:
        write_raises = str(e)
    return {
        "writeable": bool(arr.flags.writeable),
        "owndata": bool(arr.flags.owndata),
        "in_memfd": any(lo <= addr and end <= hi for lo, hi in memfd_ranges()),
        "write_raises": write_raises,
        "owner": type(owner).__module__ + "." + type(owner).__qualname__,
    }


def run_py(code, *args, timeout=60, env=None):
    """Run `code` in a fresh interpreter (this module importable there);
    return the JSON its last stdout line holds."""
    e = dict(os.environ)
    e["PYTHONPATH"] = HERE + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=e,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "child failed:\n" + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def rss_anon():
    """This process's private (anonymous) resident bytes: a copy of an
    array would grow it, pages mapped from the store do not."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def pool_worker(ref):
    """The Pool recipe's worker (python/README.md): resolve the Ref, read the
    whole array, report whether it was copied."""
    import sealstore
    before = rss_anon()
    arr = ref.get()["weights"]
    total = float(arr.sum())  # touches every page
    facts = array_facts(arr)
    facts.update(sum=total, anon_growth=rss_anon() - before, nbytes=arr.nbytes,
                 clients=len(sealstore._clients), pid=os.getpid())
    return facts


class Model:
    """explain() tests: an instance whose attribute carries the bytes."""

    def __init__(self, blob):
        self.name = "m"
        self.blob = blob


class Slotted:
    __slots__ = ("a", "big")

    def __init__(self, big):
        self.a = 1
        self.big = big


class Reduced:
    """No __dict__, no slots: pickled through __reduce__'s arguments."""
    __slots__ = ()

    def __new__(cls, payload):
        self = super().__new__(cls)
        Reduced.payloads[id(self)] = payload
        return self

    payloads = {}

    def __reduce__(self):
        return (Reduced, (Reduced.payloads[id(self)],))
