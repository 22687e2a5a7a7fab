# SPDX-License-Identifier: MIT
"""asyncio for sealstore: Client.get_async() and Client.put_async().

A waiting get_async() holds nothing in the store and no thread: it waits on
a future that a seal event wakes. Each (client, event loop) pair with
get_async() calls waiting has one _SealWaiter: a subscription to the
store's seal events (a second connection; its fd is watched with
loop.add_reader) and the futures waiting per id. The order that loses no
seal: register the future first, then look with a get that does not wait
(in the default executor, so the loop never blocks on the store); if the
object is not there, its seal event comes later and wakes the future, and
the get is tried again. Cancelling the task only drops its future: the
cancellation takes effect at once. When the last waiter of a pair leaves,
the subscription is closed.

If the subscription ends (the store dropped it because events were not
read fast enough, or the store died), every waiter is woken: each looks
again, and either finds its object, gets the store's error
(StoreGoneError), or waits on a fresh subscription.

Everything here runs on the loop's thread, except close(), which wakes the
waiters through call_soon_threadsafe.
"""
import asyncio
import errno
import math
import threading

from . import _sealstore


class _SealWaiter:
    def __init__(self, client, loop, fd):
        self.client = client
        self.loop = loop
        self.fd = fd
        self.waiting = {}  # id bytes -> set of futures
        loop.add_reader(fd, self._readable)

    def watch(self, key):
        fut = self.loop.create_future()
        self.waiting.setdefault(key, set()).add(fut)
        return fut

    def unwatch(self, key, fut):
        futs = self.waiting.get(key)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self.waiting[key]
        if not self.waiting:
            self._close()

    def _wake(self, futs):
        for f in futs:
            if not f.done():
                f.set_result(None)

    def wake_all(self):
        for futs in self.waiting.values():
            self._wake(futs)

    def wake_all_threadsafe(self):
        try:
            self.loop.call_soon_threadsafe(self.wake_all)
        except RuntimeError:  # the loop is closed: nobody waits there
            pass

    def _readable(self):
        while True:
            try:
                ev = _sealstore._event_next(self.fd)
            except OSError:
                # dropped or the store is gone: everyone looks again, and
                # the next watch() subscribes anew
                self._close()
                self.wake_all()
                return
            if ev is None:
                return
            futs = self.waiting.get(ev[1])
            if futs:
                self._wake(futs)

    def _close(self):
        if self.fd is None:
            return
        if self.client._aio.get(self.loop) is self:
            del self.client._aio[self.loop]
        self.loop.remove_reader(self.fd)
        _sealstore._unsubscribe(self.fd)
        self.fd = None


async def _waiter(client, loop):
    aio = client._aio
    w = aio.get(loop)
    if w is None or w.fd is None:
        # the subscription's connect and hello run off the loop
        fd = await loop.run_in_executor(None, client._subscribe)
        w = aio.get(loop)  # another task may have subscribed meanwhile
        if w is not None and w.fd is not None:
            _sealstore._unsubscribe(fd)
        else:
            w = aio[loop] = _SealWaiter(client, loop, fd)
    return w


def _id_key(id):
    try:
        key = bytes(memoryview(id))
    except TypeError:
        return None
    return key if len(key) == _sealstore.ID_SIZE else None


async def get_async(client, id, timeout, trust):
    loop = asyncio.get_running_loop()
    key = _id_key(id)
    if timeout is None or timeout == 0 or key is None:
        # no wait (or a bad id: get() raises the error)
        return await loop.run_in_executor(None, client.get, id, timeout, trust)
    if not (timeout >= 0):
        raise ValueError("timeout must be None (no wait), a number of seconds >= 0, "
                         "or math.inf (wait forever)")
    deadline = None if math.isinf(timeout) else loop.time() + timeout
    while True:
        w = await _waiter(client, loop)
        fut = w.watch(key)
        try:
            try:
                return await loop.run_in_executor(None, client.get, id, None, trust)
            except _sealstore.ObjectNotFoundError:
                pass
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(errno.ETIMEDOUT, "sealstore get_async %s: not sealed "
                                   "within the timeout" % key.hex())
            await asyncio.wait((fut,), timeout=left)
        finally:
            w.unwatch(key, fut)


async def put_async(client, obj, id, ref, lifetime=None):
    loop = asyncio.get_running_loop()
    lock = threading.Lock()
    state = {"cancelled": False, "stored": None}

    def work():
        oid, size = client._put(obj, id, lifetime=lifetime)
        with lock:
            if not state["cancelled"]:
                state["stored"] = oid
                return oid, size
        client.delete(oid)  # the caller gave up: leave nothing behind
        return None

    job = loop.run_in_executor(None, work)
    try:
        oid, size = await asyncio.shield(job)
    except asyncio.CancelledError:
        with lock:
            state["cancelled"] = True
            stored = state["stored"]
        if stored is not None:
            loop.run_in_executor(None, client.delete, stored)
        # its error, if it fails, is nobody's now: do not log it as lost
        job.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise
    if ref:
        from . import Ref
        return Ref(oid, size, client.path, _client=client)
    return oid
