# SPDX-License-Identifier: MIT
"""explain(): byte counts match the object's parts; paths are right."""
import pickle

import pytest

import sealstore
import sshelpers


def inband_len(obj):
    return len(pickle.dumps(obj, protocol=5, buffer_callback=lambda b: None))


def stored_size(client, i):
    return next(o["size"] for o in client.list() if o["id"] == i)


def make(np):
    p = sshelpers.Point(1, 2, weights=np.ones((64, 32), dtype=np.float32))
    return {
        "a": np.arange(100000, dtype=np.int32),
        "nested": {"b": [np.zeros(3000, dtype=np.uint8), "text"]},
        "point": p,
        "names": ["n%d" % k for k in range(500)],
        "flag": False,
    }


def test_explain_object_counts(client):
    np = pytest.importorskip("numpy")
    obj = make(np)
    x = sealstore.explain(obj)
    assert isinstance(x, dict) and isinstance(x, sealstore.Explanation)
    assert x["kind"] == "pickle5"
    arrays = [obj["a"], obj["nested"]["b"][0], obj["point"].weights]
    assert x["zero_copy_bytes"] == sum(a.nbytes for a in arrays)
    assert x["inband_bytes"] == inband_len(obj)
    assert sum(e["bytes"] for e in x["inband"]) == x["inband_bytes"]
    paths = [b["path"] for b in x["buffers"]]
    assert paths == [["a"], ["nested", "b", 0], ["point", ".weights"]]
    b = x["buffers"][2]
    assert (b["dtype"], tuple(b["shape"]), b["bytes"]) == ("float32", (64, 32), 64 * 32 * 4)
    assert all(b["offset"] % 64 == 0 for b in x["buffers"])
    # the in-band parts: each measured as pickled alone
    parts = {tuple(e["path"]): e for e in x["inband"]}
    assert parts[("names",)]["items"] == 500
    assert abs(parts[("names",)]["bytes"] - (inband_len(obj["names"]) - 3 - 9)) <= 1
    assert parts[("flag",)]["bytes"] == 1
    # the stored object has exactly the size explain predicts
    i = client.put(obj)
    assert stored_size(client, i) == x["object_bytes"]


def test_explain_id_matches_and_times_the_get(client, sock):
    np = pytest.importorskip("numpy")
    obj = make(np)
    i = client.put(obj)
    x = sealstore.explain(i, client=client)
    y = client.explain(i)
    live = sealstore.explain(obj)
    for e in (x, y):
        assert e["id"] == i
        assert e["zero_copy_bytes"] == live["zero_copy_bytes"]
        assert e["inband_bytes"] == live["inband_bytes"]
        assert e["object_bytes"] == live["object_bytes"]
        assert [b["path"] for b in e["buffers"]] == [b["path"] for b in live["buffers"]]
        assert [b["offset"] for b in e["buffers"]] == [b["offset"] for b in live["buffers"]]
        assert e["map_seconds"] > 0 and e["unpickle_seconds"] > 0
    assert client.live_views == 0  # explain released what it got
    s = str(x)
    assert "['nested']['b'][0]" in s and "['point'].weights" in s and "us unpickling" in s


def test_explain_raw_and_plain(client):
    x = sealstore.explain(b"12345")
    assert (x["kind"], x["zero_copy_bytes"], x["inband_bytes"]) == ("raw", 5, 0)
    assert x["buffers"][0]["path"] == [] and x["inband"] == []
    i = client.put(b"12345")
    assert client.explain(i)["zero_copy_bytes"] == 5
    y = sealstore.explain({"k": [1, 2, 3]})
    assert y["zero_copy_bytes"] == 0 and y["buffers"] == []
    # nothing zero-copy: the top level is broken down all the same
    k, rest = y["inband"]
    assert (k["path"], k["type"], k["items"]) == (["k"], "list", 3) and k["seconds"] >= 0
    assert (rest["path"], rest["type"]) == ([], "dict structure")
    assert k["bytes"] + rest["bytes"] == y["inband_bytes"]


def test_explain_flags_what_is_copied(client):
    np = pytest.importorskip("numpy")
    big = np.ones((512, 512))
    obj = {"strided": big[:, ::2], "blob": bytes(200000), "ok": np.ones(10)}
    x = sealstore.explain(obj)
    assert [b["path"] for b in x["buffers"]] == [["ok"]]
    parts = {tuple(e["path"]): e for e in x["inband"]}
    assert "contiguous" in parts[("strided",)]["note"]
    assert parts[("blob",)]["bytes"] >= 200000 and "numpy" in parts[("blob",)]["note"]
    assert "notes:" in str(x)


def test_explain_shared_array_counted_once():
    np = pytest.importorskip("numpy")
    a = np.ones(1000)
    x = sealstore.explain({"first": a, "again": a})
    assert x["zero_copy_bytes"] == a.nbytes  # pickle memoizes: one buffer
    assert [b["path"] for b in x["buffers"]] == [["first"]]


# ------------------------------------------------ the cases people ask about

def test_stored_non_contiguous_array_is_named_with_its_bytes(client):
    np = pytest.importorskip("numpy")
    big = np.ones((2000, 1000))
    x = client.explain(client.put({"big": big[::2], "x": 1}))
    part = {tuple(e["path"]): e for e in x["inband"]}
    assert part[("big",)]["bytes"] >= big[::2].nbytes
    note = part[("big",)]["note"]
    assert "copied at put" in note and "not contiguous" in note and "ascontiguousarray" in note
    assert x["zero_copy_bytes"] == 0
    assert sum(e["bytes"] for e in x["inband"]) == x["inband_bytes"]
    report = str(x)
    assert "['big']: copied at put" in report


def test_nothing_zero_copy_still_breaks_the_top_level_down(client):
    x = client.explain(client.put({"l": list(range(50000)), "s": "x" * 100, "n": 3}))
    paths = [e["path"] for e in x["inband"]]
    assert ["l"] in paths and ["s"] in paths and ["n"] in paths
    assert sum(e["bytes"] for e in x["inband"]) == x["inband_bytes"]


def test_time_per_part(client):
    x = client.explain(client.put({"l": [float(i) for i in range(200000)], "b": True}))
    secs = {tuple(e["path"]): e["seconds"] for e in x["inband"] if e["path"]}
    assert set(secs) == {("l",), ("b",)}
    assert all(isinstance(s, float) and s >= 0 for s in secs.values())
    assert secs[("l",)] > secs[("b",)]  # a million-item list vs one bool
    assert "unpickle" in str(x)


def test_root_notes_are_printed(client):
    np = pytest.importorskip("numpy")
    x = sealstore.explain(client.put_ref(np.ones((1000, 200))[:, ::2]))
    assert "(root): copied at put" in str(x)


def test_object_dtype_note(client):
    np = pytest.importorskip("numpy")
    x = client.explain(client.put({"o": np.array(["a%08d" % i for i in range(20000)], dtype=object)}))
    assert "dtype=object" in [e for e in x["inband"] if e["path"] == ["o"]][0]["note"]


def test_thousands_of_parts_fold(client):
    np = pytest.importorskip("numpy")
    x = client.explain(client.put({"a%d" % i: np.ones(10 + i) for i in range(1000)}))
    report = str(x)
    assert len(x["buffers"]) == 1000
    assert len(report.splitlines()) < 60
    assert "980 smaller ones" in report
    assert "['a999']" in report  # the largest are the ones shown
    assert repr(x) == report  # a REPL shows the report


def test_an_id_without_client_says_so(client):
    oid = client.put({"a": 1})
    x = sealstore.explain(oid)
    assert "pass client=" in x["note"] and "pass client=" in str(x)
    ref = client.share(oid)
    assert sealstore.explain(ref)["type"] == "dict"


@pytest.mark.parametrize("where", ["live", "stored"])
def test_custom_classes_are_opened(client, where):
    obj = {"m": sshelpers.Model(bytes(300000)), "s": sshelpers.Slotted(list(range(50000))),
           "r": sshelpers.Reduced("x" * 200000)}
    x = sealstore.explain(obj) if where == "live" else client.explain(client.put(obj))
    parts = {path_key(e["path"]): e for e in x["inband"]}
    assert parts["['m'].blob"]["bytes"] >= 300000 and "numpy" in parts["['m'].blob"]["note"]
    assert parts["['s'].big"]["items"] == 50000
    assert parts["['r'](arg 0)"]["bytes"] >= 200000
    assert parts["['m']"]["bytes"] < 1000  # the instance keeps only its own bytes
    assert sum(e["bytes"] for e in x["inband"]) == x["inband_bytes"]
    assert "['m'].blob: copied on every get" in str(x)
    assert "['r'](arg 0)" in str(x)


def path_key(path):
    """A path as the report prints it: ['df'][['a', 'c']].blob(arg 0)"""
    return "".join(p if isinstance(p, str) and p[:1] in ".(" else "[%r]" % (p,) for p in path)


@pytest.mark.parametrize("where", ["live", "stored"])
def test_pandas_columns_and_dtypes(client, where):
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    n = 50000
    df = pd.DataFrame({"a": np.arange(n, dtype=np.float64), "b": np.arange(n),
                       "c": np.ones(n), "name": ["n%d" % i for i in range(n)]})
    obj = {"df": df}
    x = sealstore.explain(obj) if where == "live" else client.explain(client.put(obj))
    bufs = {path_key(b["path"]): b for b in x["buffers"]}
    assert bufs["['df'][['a', 'c']]"]["dtype"] == "float64"
    assert bufs["['df']['b']"]["dtype"] == "int64"
    parts = {path_key(e["path"]): e for e in x["inband"]}
    name = parts["['df']['name']"]
    assert name["type"] == "numpy.ndarray[object]" and name["bytes"] > 5 * n
    assert "dtype=object" in name["note"] and "categorical" in name["note"]
    assert sum(e["bytes"] for e in x["inband"]) == x["inband_bytes"]
    report = str(x)
    assert "['df'][['a', 'c']]" in report and "['df']['name']: dtype=object" in report
