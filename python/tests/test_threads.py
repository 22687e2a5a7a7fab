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


def test_threads_put_wait_delete_one_client(client):
    # on one client: producers put objects (small, inline-sized and in
    # their own segment) under ids the consumers already wait for with
    # blocking gets; each consumer checks every byte, releases and
    # deletes; a third kind of thread deletes ids nobody put. Every call
    # succeeds, every blocking get is woken by its put, nothing is left.
    import hashlib
    import queue
    import random

    sizes = (100, 20 * 1024, 300 * 1000)
    n_per = 40
    todo = queue.Queue()
    errors = []
    done = threading.Event()

    def payload(key, size):
        return hashlib.sha256(key).digest() * (size // 32) + b"x" * (size % 32)

    def producer(seed):
        rnd = random.Random(seed)
        for _ in range(n_per):
            key = os.urandom(20)
            size = rnd.choice(sizes)
            todo.put((key, size))       # a consumer starts waiting for it
            time.sleep(rnd.random() * 0.002)
            client.put(payload(key, size), id=key)

    def consumer():
        while not done.is_set() or not todo.empty():
            try:
                key, size = todo.get(timeout=0.05)
            except queue.Empty:
                continue
            mv = client.get(key, timeout=30)
            assert len(mv) == size and mv == payload(key, size), "wrong bytes"
            del mv
            client.delete(key)

    def deleter():
        while not done.is_set():
            try:
                client.delete(os.urandom(20))
                raise AssertionError("deleted an id nobody put")
            except KeyError:
                pass

    def guard(fn, *a):
        def run():
            try:
                fn(*a)
            except BaseException as e:  # reported by the main thread
                errors.append(e)
                done.set()
        return run

    prods = [threading.Thread(target=guard(producer, s)) for s in range(3)]
    others = [threading.Thread(target=guard(f)) for f in (consumer, consumer, deleter)]
    for t in others + prods:
        t.start()
    for t in prods:
        t.join(60)
    done.set()
    for t in others:
        t.join(60)
    assert not errors, errors
    assert todo.empty()
    assert client.list() == []
