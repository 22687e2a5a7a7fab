# SPDX-License-Identifier: MIT
"""Share Python objects between processes; numpy arrays come back without a copy.

The three calls most people need::

    c = sealstore.connect()          # the node's store; connect(embed=True) starts one
    ref = c.put_ref(obj)             # store obj; the Ref pickles to a few bytes
    obj = ref.get()                  # in any process: arrays map the store, read-only

``c.put(obj)`` / ``c.get(id)`` do the same with 20-byte ids, ``explain()``
says what is zero-copy and what is rebuilt on every get, and
``await c.get_async(id, timeout=...)`` waits without blocking an event loop.
Full guide: python/README.md in the sources.
"""
import os
import threading

from . import _sealstore
from ._sealstore import (ID_SIZE, Error, Explanation, ObjectExistsError, ObjectNotFoundError,
                         ObjectView, StoreFullError, StoreGoneError, UntrustedObjectError,
                         __version__)

__all__ = [
    "connect", "Client", "Ref", "explain", "Explanation", "ObjectView", "ID_SIZE",
    "Error", "StoreFullError", "StoreGoneError", "ObjectExistsError", "ObjectNotFoundError",
    "UntrustedObjectError", "__version__",
]


def _human(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


class Client(_sealstore.Client):
    """Client(path=None, embed=False, *, trust=None)

    A connection to a sealstore store (same as sealstore.connect()).
    """

    # _pid: the process that connected (a forked child must connect anew);
    # _aio: {event loop: _SealWaiter} for get_async (see _aio.py)
    __slots__ = ("__weakref__", "_pid", "_aio")

    def __init__(self, path=None, embed=False, *, trust=None):
        self._pid = os.getpid()
        self._aio = {}

    def put(self, obj, id=None, *, ref=False, lifetime=None):
        """Store obj and return its 20-byte id (random unless given), or a Ref with ref=True.

        bytes, bytearray and memoryview are stored raw (and come back as a
        read-only memoryview); anything else is pickled with protocol 5, its
        contiguous numpy arrays and other PickleBuffers out of band (zero copy
        on get). Raises ObjectExistsError if the id exists, StoreFullError if
        the store is full; pickling errors propagate and leave nothing behind.
        lifetime="creator": the store deletes the object when this client's
        connection ends (close(), exit, crash); views other processes hold
        stay valid until released. None (the default): until deleted.
        """
        if ref:
            return self.put_ref(obj, id, lifetime=lifetime)
        return _sealstore.Client.put(self, obj, id, lifetime=lifetime)

    def put_ref(self, obj, id=None, *, lifetime=None):
        """put(obj, id, lifetime=lifetime), returning a Ref to the new object."""
        oid, size = self._put(obj, id, lifetime=lifetime)
        return Ref(oid, size, self.path, _client=self)

    def share(self, id, timeout=None):
        """A Ref to the stored object `id` (KeyError if absent; timeout as get())."""
        size = self._size(id, timeout)  # checks the id, too
        return Ref(id, size, self.path, _client=self)

    async def get_async(self, id, timeout=None, trust=None):
        """get() for asyncio: waits without blocking the event loop.

        timeout as get() (None or 0: no wait, KeyError if absent; seconds:
        TimeoutError after that; math.inf: forever). Cancelling the task
        stops the wait at once: nothing is left waiting in the store.
        """
        from ._aio import get_async
        return await get_async(self, id, timeout, trust)

    async def put_async(self, obj, id=None, *, ref=False, lifetime=None):
        """put() for asyncio: the copy runs in the loop's default executor.

        Cancelling the task returns at once; the copy already under way
        finishes in its thread and the object is then deleted, so a
        cancelled put leaves nothing behind.
        """
        from ._aio import put_async
        return await put_async(self, obj, id, ref, lifetime)

    def close(self):
        """Refuse further calls; wake get_async() waiters (they raise ValueError).

        The connection itself (and an embedded store) stays until the last
        array or view obtained through it is collected.
        """
        _sealstore.Client.close(self)
        for waiter in list(self._aio.values()):
            waiter.wake_all_threadsafe()

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()


def explain(obj, client=None):
    """What put(obj) would store zero-copy and what in band, by path: an Explanation.

    Out-of-band buffers are mapped on get (zero-copy); in-band parts are
    rebuilt by pickle.loads on every get. With client, obj is an id and the
    stored object is explained, its get timed (map_seconds,
    unpickle_seconds); a Ref explains the object it refers to. str() (and
    repr()) of the result is a report.
    """
    if isinstance(obj, Ref):
        return obj.client().explain(obj.id)
    x = _sealstore.explain(obj, client)
    if client is None and isinstance(obj, (bytes, bytearray)) and len(obj) == ID_SIZE:
        x["note"] = ("this explains a %d-byte bytes object; if it is a sealstore id, pass "
                     "client= (or a Ref) to explain the stored object" % ID_SIZE)
    return x


def connect(path=None, embed=False, *, trust=None):
    """Connect to the store at path; returns a Client.

    path None: $SEALSTORE_SOCKET, else $XDG_RUNTIME_DIR/sealstore.sock, else
    a per-user directory under /tmp. embed=True starts a store inside this
    process if none answers there; other processes may connect to it; it
    lives until this client's connection ends. trust: whose pickled objects
    get() decodes (unpickling runs code of the creator's choosing): None
    for this process's uid only, a uid or an iterable of uids to trust as
    well, or "any".
    """
    return Client(path, embed, trust=trust)


# One client per socket per process, for Refs that arrive from elsewhere
# (a Pool worker resolving the Refs it is sent connects once, not per Ref).
_clients = {}
_clients_pid = None
_clients_lock = threading.Lock()


def _process_client(socket):
    global _clients_pid
    with _clients_lock:
        if _clients_pid != os.getpid():  # a forked child: the parent's handles are dead
            _clients.clear()
            _clients_pid = os.getpid()
        c = _clients.get(socket)
        if c is None or c.closed or c.gone:
            c = _clients[socket] = connect(socket)
        return c


class Ref:
    """A reference to one stored object that travels between processes.

    Ref(id, size, socket=None). Made by Client.put_ref(), put(..., ref=True)
    and share(). It pickles to a few bytes (id, size, socket path; None
    means the receiver's default socket, $SEALSTORE_SOCKET included), so it
    goes through multiprocessing queues, pipes and Pool arguments;
    ref.get() in the receiving process maps the object without a copy,
    connecting to the store once per process. A Ref does not keep the
    object alive: delete() it when done.
    """

    __slots__ = ("id", "size", "socket", "_client")

    def __init__(self, id, size, socket=None, *, _client=None):
        id = bytes(memoryview(id))  # bytes-like only (bytes(20) would be 20 zeros)
        if len(id) != ID_SIZE:
            raise ValueError("sealstore ids are %d bytes long, this one has %d"
                             % (ID_SIZE, len(id)))
        self.id = id
        self.size = int(size)
        self.socket = None if socket is None else os.fsdecode(socket)
        self._client = _client

    def __reduce__(self):
        return (Ref, (self.id, self.size, self.socket))

    def __eq__(self, other):
        return (isinstance(other, Ref) and self.id == other.id
                and self.socket == other.socket)

    def __hash__(self):
        return hash((self.id, self.socket))

    def client(self):
        """The Client this Ref resolves through: its creator's in the creating
        process (while open), else one connection per socket per process."""
        c = self._client
        if c is not None and not c.closed and not c.gone and c._pid == os.getpid():
            return c
        return _process_client(self.socket)

    def get(self, timeout=None, trust=None):
        """The object, as Client.get(self.id, timeout, trust) on self.client()."""
        return self.client().get(self.id, timeout, trust)

    async def get_async(self, timeout=None, trust=None):
        """The object, as Client.get_async(self.id, timeout, trust)."""
        return await self.client().get_async(self.id, timeout, trust)

    def exists(self):
        """Whether the object is still in the store."""
        return self.client().contains(self.id)

    def delete(self):
        """Delete the object from the store (KeyError if it is gone already)."""
        self.client().delete(self.id)

    def __repr__(self):
        try:
            state = "present" if self.exists() else "deleted"
        except (OSError, ValueError) as e:
            state = "store unreachable: %s" % (e.strerror or e)
        return "<sealstore.Ref %s, %s, %s%s>" % (
            self.id.hex(), _human(self.size), state,
            "" if self.socket is None else ", socket %r" % self.socket)
