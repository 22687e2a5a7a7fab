# SPDX-License-Identifier: MIT
"""One client shared by several threads (as an asyncio executor does)."""
import os
import threading
import time

import sealstore

RUN_S = 1.0


def test_threads_share_one_client(client):
    # one thread fetches and drops a large object (a segment of its own)
    # over and over; others wait 1 ms for ids nobody puts, or fetch small
    # and large objects: every call succeeds and every byte reads right
    big = os.urandom(800 * 1000)
    data = {client.put(b): b for b in (big, os.urandom(100), os.urandom(70 * 1024))}
    ids = list(data)
    big_id = ids[0]
    errors = []
    stop = threading.Event()

    def guard(fn):
        def run():
            try:
                while not stop.is_set():
                    fn()
            except BaseException as e:  # reported by the main thread
                errors.append(e)
                stop.set()
        return run

    def looper():
        mv = client.get(big_id)
        assert mv == big
        del mv  # the release

    def waiter():
        try:
            client.get(os.urandom(20), timeout=0.001)
            raise AssertionError("a missing id was found")
        except TimeoutError:
            pass

    def mixer():
        for i in ids:
            assert client.get(i) == data[i]

    threads = [threading.Thread(target=guard(f)) for f in (looper, waiter, mixer, waiter)]
    for t in threads:
        t.start()
    time.sleep(RUN_S)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert client.get(big_id) == big
    assert all(o["refs"] == 0 for o in client.list())
