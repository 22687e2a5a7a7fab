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
    assert y["inband"] == [{"path": [], "type": "dict", "bytes": y["inband_bytes"], "items": 1}]


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
