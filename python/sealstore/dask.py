# SPDX-License-Identifier: MIT
"""Dask workers on a node share large arrays through the node's sealstore store.

Setup (a LocalCluster; see doc/dask.md for several nodes)::

    from dask.distributed import Client, LocalCluster
    import sealstore.dask
    client = sealstore.dask.setup(Client(LocalCluster(n_workers=4, threads_per_worker=1)))

``setup`` registers the serialization family ``"sealstore"`` with
distributed, puts it first in the client's and every worker's serializer
list, and connects every worker (and the client) to the node's store:
``$SEALSTORE_SOCKET`` or the default socket, else one embedded store (in the
client process for a LocalCluster, else in the first worker or nanny of the
node that finds none). This module imports without Dask; Dask is imported
when a function of it is called.

What the family does. A value is pickled with protocol 5; each out-of-band
buffer (a contiguous numpy array's data, ...) of at least ``threshold``
bytes (dask config ``sealstore.threshold``, default 1 MiB) becomes a
reference ``(id, offset, size)`` into a store object, and the message
carries the references, the pickle and the smaller buffers. The receiver
maps the objects read-only (``Client.get``): its arrays point into the
store's memory, not writeable, and no byte is copied. A buffer that already
lies in a store object (a value this worker received that way) is sent as
a reference to that object; any other buffer is copied once into a new
object, once per buffer: sending the same array to three workers puts it
once.

Where references go (same-node detection). Every process that installs the
family reads the store's identity, a random token the first of them wrote
into the store (object ``IDENTITY_ID``), and adds it to the handshake Dask's
comms exchange when they connect (``Comm.handshake_info``). The sender uses
references only when the comm's recipient announced the same token and the
negotiated pickle protocol is 5: the recipient then reaches the very store
the objects are in. For every other comm (a worker on another node, which
has another store and another token; a process without sealstore.dask; the
scheduler, which forwards data it does not unpickle and to which Dask
speaks pickle protocol 4) the family declines and Dask's own ``dask`` and
``pickle`` serializers send the bytes through the comm as they always do.
A transfer to another node therefore never depends on a reference. A
buffer the store cannot take (full, gone) is sent as bytes too.

Lifetime. An object stays in the store while anyone may still send its
reference, and goes when nobody maps it any more:
- its creator keeps it while the value it was copied from is alive (for a
  worker: while Dask keeps the key); when that value is collected the id
  retires;
- a process sends a reference to an object only while it maps that object
  (it holds the value, whose arrays map it), and the receiver maps it
  before the sender lets go (Dask's transfers answer once the message is
  unpickled), so an object some process may still send is always
  referenced (the store's ``refs`` count);
- a retired object is deleted once its ``refs`` count is 0 (checked by a
  thread of the creator, every ``POLL_SECONDS``); a creator that died
  (exit, crash, SIGKILL: its liveness object, bound to its connection, is
  gone) leaves its objects to the other processes of the node, which delete
  those whose ``refs`` stayed 0 for ``ORPHAN_SECONDS``. A deleted object's
  memory stays mapped for the arrays that use it and is freed with the last
  of them.
So when Dask forgets a key on every worker, its objects leave the store,
and a dead worker's objects go once no living worker holds them.

Memory accounting (dask config ``sealstore.spill``, default True). In a
worker whose plugin reached a store, ``dask.sizeof`` counts a numpy array
or memoryview whose memory lies in a store object (received by reference,
or moved in with ``results=True``) at its object's overhead, not its
length: those bytes are the store's, shared by the workers that map them
and held under the store's capacity and spill directory, so the worker's
SpillBuffer neither counts them against its memory target nor copies them
out to its own disk files. Every other value is sized as Dask sizes it.
The family's own "anything large?" test counts full sizes (_full_sizeof).

Received arrays are read-only: a task that writes into its input array
must copy it first (``np.array(x)``), as for any read-only array.
"""
import os
import struct
import sys
import threading
import time
import weakref

import sealstore

__all__ = ["setup", "install", "SealstorePlugin", "dask_setup", "node", "FAMILY",
           "SERIALIZERS", "DESERIALIZERS", "IDENTITY_ID", "DEFAULT_THRESHOLD"]

FAMILY = "sealstore"
# the client's and the workers' lists (a worker asks its peer to serialize
# with the list it deserializes with: Dask sends it with the request)
SERIALIZERS = (FAMILY, "dask", "pickle")
DESERIALIZERS = (FAMILY, "dask", "pickle", "msgpack", "error")
DEFAULT_THRESHOLD = 1 << 20
POLL_SECONDS = 0.2
ORPHAN_SECONDS = 2.0

# Ids. The store's identity: one raw object of 16 random bytes, written by
# the first process that finds none (it stays; it is the store's name).
# The objects of one process: MAGIC, 4 bytes of the identity, the process's
# 8-byte tag, a 4-byte sequence number; number 0 is the process's liveness
# object (empty, lifetime "creator": the store deletes it when the
# process's connection ends).
IDENTITY_ID = b"sealstore-dask-ident"
MAGIC = b"SSDK"
_LIVE_SEQ = 0

_state_lock = threading.Lock()
_node = None  # this process's _Node (None until install())


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        raise ImportError("sealstore.dask needs Dask's distributed scheduler: install "
                          "python3-distributed (Debian) or the distributed package") from e


def _config(name, default):
    try:
        import dask.config
    except ImportError:
        return default
    return dask.config.get("sealstore." + name, default)


def _address(buf):
    """The address of a contiguous buffer's first byte, or None (no numpy)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy.frombuffer(buf, dtype=numpy.uint8).__array_interface__["data"][0]


def _chain(exporter):
    """The objects a buffer's memory hangs on, from its exporter down to the
    object that owns it (numpy's .base, memoryview's .obj)."""
    out = []
    while exporter is not None and len(out) < 64:
        out.append(exporter)
        if isinstance(exporter, (sealstore.ObjectView, bytes, bytearray)):
            break
        exporter = exporter.obj if isinstance(exporter, memoryview) \
            else getattr(exporter, "base", None)
    return out


def _anchor(chain):
    """The object whose collection means the value no longer holds the
    buffer: the deepest object of the chain that takes a weak reference and
    is either the owner of the memory or a numpy array (the exporter itself
    may be a temporary made for pickling, as numpy's transposed view of an
    F-ordered array, or a memoryview: those are passed over), or None."""
    for i in range(len(chain) - 1, -1, -1):
        o = chain[i]
        if i != len(chain) - 1 and type(o).__module__ != "numpy":
            continue
        try:
            weakref.ref(o)
        except TypeError:
            continue
        return o
    return None


class _Node:
    """This process's connection to the node's store and its objects.

    Concurrency: `cache`, `retiring`, `seq` and the counters are changed
    under `lock` by the serializing threads (event loop, offload threads),
    by finalizers (any thread, when a value is collected) and by the reaper
    thread; store calls are made outside the lock (the Client serves
    several threads). The lock is reentrant: a collection inside a locked
    section runs finalizers (_retire) in the thread that holds it.
    """

    def __init__(self, client, threshold):
        self.client = client
        self.socket = client.socket
        self.pid = os.getpid()
        self.threshold = int(threshold)
        self.token = self._identity()
        self.tag = os.urandom(8)
        self.seq = _LIVE_SEQ
        self.lock = threading.RLock()
        self.cache = {}       # (id(anchor), address, size) -> object id
        self.retiring = set()  # ids whose source value was collected
        self.orphans = {}      # dead creators' unreferenced ids: first seen (reaper only)
        self.puts = 0          # objects this process put (for tests, stats)
        self.reused = 0        # buffers sent as references to objects mapped here
        self.client.put(b"", self._id(_LIVE_SEQ), lifetime="creator")
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="sealstore-dask-reaper",
                                        daemon=True)
        self._reaper.start()

    def _identity(self):
        try:
            self.client.put(os.urandom(16), IDENTITY_ID)
        except sealstore.ObjectExistsError:
            pass
        return bytes(self.client.get(IDENTITY_ID, timeout=10))

    def _id(self, seq):
        return MAGIC + self.token[:4] + self.tag + struct.pack(">I", seq)

    def usable(self):
        c = self.client
        return not (c.closed or c.gone) and self.pid == os.getpid()

    # ---------------------------------------------------------- sending side
    def ref(self, pb):
        """(id, offset, size) of a store object holding PickleBuffer pb's
        bytes, or None to send them as a frame."""
        return self._ref(pb)[0]

    def _ref(self, pb):
        """ref(pb), and whether its object was put now (not reused)."""
        raw = pb.raw()
        size = raw.nbytes
        chain = _chain(memoryview(pb).obj)
        ov = chain[-1]
        if isinstance(ov, sealstore.ObjectView) and ov.id[:8] == MAGIC + self.token[:4]:
            # already in this store, mapped here: send a reference to it
            base, addr = _address(memoryview(ov)), _address(raw)
            if base is not None and addr is not None and base <= addr \
                    and addr + size <= base + ov.nbytes:
                with self.lock:
                    self.reused += 1
                return (ov.id, addr - base, size), False
        anchor, addr = _anchor(chain), _address(raw)
        if anchor is None or addr is None:
            return None, False  # no way to know when it goes: bytes, through the comm
        # the entry goes (finalizer) before id(anchor) can be reused
        key = (id(anchor), addr, size)
        with self.lock:
            oid = self.cache.get(key)
            if oid is not None:
                return (oid, 0, size), False
            self.seq += 1
            oid = self._id(self.seq)
        try:
            self.client.put(raw, oid)
        except (OSError, ValueError):
            return None, False  # full, gone, closed: the bytes go through the comm
        with self.lock:
            self.cache[key] = oid
            self.puts += 1
        weakref.finalize(anchor, self._retire, key, oid)
        return (oid, 0, size), True

    def view(self, spec, views):
        """The read-only bytes a reference names (views: {id: mapping} of
        the objects mapped for this message so far)."""
        oid, offset, size = spec
        oid = bytes(oid)
        mv = views.get(oid)
        if mv is None:
            try:
                mv = views[oid] = self.client.get(oid)
            except KeyError:
                raise RuntimeError("sealstore.dask: object %s is not in the store %s"
                                   % (oid.hex(), self.socket)) from None
        return mv[offset:offset + size]

    def adopt(self, value):
        """value rebuilt over store objects holding its large buffers (copied
        there now), so that its private copy can go; value itself when it
        has none to copy (or cannot be pickled)."""
        from distributed.protocol import pickle
        try:
            if _full_sizeof(value) < self.threshold:
                return value
            bufs = []
            head = pickle.dumps(value, buffer_callback=bufs.append, protocol=5)
        except Exception:
            return value
        fresh, buffers, views = False, [], {}
        for pb in bufs:
            spec = None
            if memoryview(pb).nbytes >= self.threshold:
                spec, new = self._ref(pb)
                fresh |= new
            buffers.append(pb if spec is None else self.view(spec, views))
        return pickle.loads(head, buffers=buffers) if fresh else value

    def _retire(self, key, oid):
        with self.lock:
            if self.cache.get(key) == oid:
                del self.cache[key]
            self.retiring.add(oid)

    # ---------------------------------------------------- deleting objects
    def reap(self):
        """Delete retired objects nobody maps; and those of dead creators.

        Order matters: the ids retired so far are read before the store's
        list. An id retired before the list was taken is no longer sent by
        this process (its cache entry went with the retirement), so a refs
        count of 0 in the list means nobody holds it who could send it: it
        can go. (Read the other way round, an object put, listed with refs
        0, then mapped by the value that replaced its source and retired,
        would be deleted under its holder.) A dead creator's object goes
        once it has been seen unreferenced, its creator dead, for
        ORPHAN_SECONDS: a message its creator sent just before dying may
        still be on its way to a receiver.
        """
        if not self.usable():
            return
        prefix = MAGIC + self.token[:4]
        with self.lock:
            retiring = set(self.retiring)
        try:
            objs = [o for o in self.client.list() if o["id"][:8] == prefix]
        except (OSError, ValueError):
            return
        now = time.monotonic()
        alive, orphans, deleted = {}, {}, set()
        for o in objs:
            oid = o["id"]
            tag = oid[8:16]
            if o["refs"] or oid[16:] == b"\0\0\0\0":
                continue
            if tag == self.tag:
                if oid not in retiring:
                    continue
            else:
                if tag not in alive:
                    alive[tag] = self.client.contains(prefix + tag + b"\0\0\0\0")
                if alive[tag]:
                    continue
                orphans[oid] = self.orphans.get(oid, now)
                if now - orphans[oid] < ORPHAN_SECONDS:
                    continue
            try:
                self.client.delete(oid)
            except KeyError:
                pass  # another process's reaper was first
            except (OSError, ValueError):
                return
            deleted.add(oid)
        self.orphans = {oid: t for oid, t in orphans.items() if oid not in deleted}
        present = {o["id"] for o in objs}
        with self.lock:
            # done: the retired ids no longer in the store (deleted above, or
            # by a reaper of another process)
            self.retiring -= {oid for oid in retiring if oid not in present}
            self.retiring -= deleted

    def _reap_loop(self):
        while not self._stop.wait(POLL_SECONDS):
            if os.getpid() != self.pid:
                return
            self.reap()


# ------------------------------------------------------------- the family

def _dumps(x, context=None):
    n = _node
    if n is None or not context or context.get("pickle-protocol", 0) < 5:
        raise NotImplementedError
    recipient = context.get("recipient") or {}
    if recipient.get(FAMILY) != n.token or not n.usable():
        raise NotImplementedError
    if _full_sizeof(x) < n.threshold:
        raise NotImplementedError  # nothing large (not pickled twice to find out)
    from distributed.protocol import pickle
    bufs = []
    head = pickle.dumps(x, buffer_callback=bufs.append, protocol=5)
    specs, frames, writeable = [], [head], []
    for pb in bufs:
        spec = None
        if memoryview(pb).nbytes >= n.threshold:
            spec = n.ref(pb)
        if spec is None:
            mv = memoryview(pb)
            frames.append(mv)
            writeable.append(not mv.readonly)
        specs.append(spec)
    if len(frames) == len(bufs) + 1:
        raise NotImplementedError  # nothing large: Dask's own serializers
    return {"store": n.token, "buffers": specs, "writeable": writeable}, frames


def _loads(header, frames):
    from distributed.protocol import pickle
    from distributed.utils import ensure_memoryview
    n = _node
    if n is None or not n.usable():
        raise RuntimeError("sealstore.dask: a message refers to store objects, and this "
                           "process's store connection is gone")
    if header["store"] != n.token:
        raise RuntimeError(
            "sealstore.dask: a message refers to objects of another store than this "
            "process's (%s); the sender checks the recipient's store, so this is a bug"
            % n.socket)
    views = {}
    buffers = []
    rest = iter(zip(frames[1:], header["writeable"]))
    for spec in header["buffers"]:
        if spec is None:  # Dask's pickle serializer's rule for the frames
            frame, w = next(rest)
            mv = ensure_memoryview(frame)
            buffers.append(memoryview(bytearray(mv) if w else bytes(mv))
                           if w == mv.readonly else mv)
            continue
        buffers.append(n.view(spec, views))
    return pickle.loads(frames[0], buffers=buffers)


# ------------------------------------------- the worker's memory accounting

# Set while this thread wants every buffer counted at its full size (the
# family's "is anything large in there?" test), whatever sealstore.spill says.
_sizing = threading.local()


def _full_sizeof(x):
    """dask.sizeof(x), store-backed arrays counted at their full size."""
    from dask.sizeof import sizeof
    before = getattr(_sizing, "full", False)
    _sizing.full = True
    try:
        return sizeof(x)
    finally:
        _sizing.full = before


def _in_store(x):
    """Whether the memory of buffer x (an array, a memoryview) lies in a
    mapping of a store object."""
    chain = _chain(x)
    return len(chain) > 1 and isinstance(chain[-1], sealstore.ObjectView)


def _count_store_nominally():
    """Make dask.sizeof count a numpy array or memoryview whose memory lies
    in a store object at its own overhead (sys.getsizeof: the object, not
    the bytes it views), so that the worker's SpillBuffer neither counts
    those bytes against its memory target nor writes them to its disk: the
    store's capacity and spilling govern them. Every other value keeps the
    size Dask's own function gives (looked up before this one replaces it).
    Idempotent; for the processes that install the store (workers)."""
    from dask.sizeof import sizeof
    classes = [memoryview]
    try:
        import numpy
        classes.append(numpy.ndarray)
    except ImportError:
        pass
    for cls in classes:
        orig = sizeof.dispatch(cls)
        if getattr(orig, "_sealstore", False):
            continue

        def counted(x, orig=orig):
            n = _node
            if getattr(_sizing, "full", False) or n is None or not n.usable() \
                    or not _in_store(x):
                return orig(x)
            return sys.getsizeof(x)

        counted._sealstore = True
        sizeof.register(cls)(counted)


# ------------------------------------------------------------ installing

def _patch_handshake():
    from distributed.comm.core import Comm
    orig = Comm.handshake_info
    if getattr(orig, "_sealstore", False):
        return

    def handshake_info():
        info = orig()
        n = _node
        if n is not None and n.usable():
            info[FAMILY] = n.token
        return info

    handshake_info._sealstore = True
    Comm.handshake_info = staticmethod(handshake_info)


def _connect(socket, embed):
    try:
        return sealstore.connect(socket)
    except (FileNotFoundError, ConnectionRefusedError):
        if not embed:
            raise
    return sealstore.connect(socket, embed=True)


def install(socket=None, embed=None, threshold=None):
    """Register the family in this process and connect it to the node's store.

    socket: the store's socket (None: dask config sealstore.socket, else
    $SEALSTORE_SOCKET or the default). embed: start a store in this process
    when none answers there (None: dask config sealstore.embed, default
    True). threshold: the smallest buffer sent by reference (None: dask
    config sealstore.threshold, default DEFAULT_THRESHOLD). Idempotent;
    returns this process's node (see node()).
    """
    global _node
    _require_distributed()
    from distributed.protocol.serialize import register_serialization_family
    if socket is None:
        socket = _config("socket", None)
    if embed is None:
        embed = bool(_config("embed", True))
    if threshold is None:
        threshold = _config("threshold", DEFAULT_THRESHOLD)
    with _state_lock:
        # registered first: a process whose store cannot be reached still
        # knows the family (it declines, and Dask's serializers send bytes)
        register_serialization_family(FAMILY, _dumps, _loads)
        _patch_handshake()
        if _node is None or not _node.usable():
            if _node is not None:
                _node._stop.set()  # the old store is gone, or this is a forked child
            _node = _Node(_connect(socket, embed), threshold)
        else:
            _node.threshold = int(threshold)
        return _node


def node():
    """This process's _Node (client, socket, token, threshold, puts, ...), or None."""
    return _node


def _use_family(rpc):
    rpc.serializers = list(SERIALIZERS)
    rpc.deserializers = list(DESERIALIZERS)


class SealstorePlugin:
    """A WorkerPlugin: installs the family in each worker, present and future.

    SealstorePlugin(socket=None, embed=None, threshold=None, results=None):
    socket, embed, threshold as install(). results (None: dask config
    sealstore.results, default False): move every result and received
    value with large buffers into the store as it enters the worker's
    memory, so that the worker keeps no private copy of it (its arrays
    become read-only) and sending it copies nothing. With dask config
    sealstore.spill (default True) and a store reached, the worker's
    memory accounting (dask.sizeof) counts the arrays whose memory lies in
    the store at their overhead only: Dask does not spill them, the store
    does (see _count_store_nominally).
    """

    name = "sealstore"

    def __init__(self, socket=None, embed=None, threshold=None, results=None):
        self.socket = socket
        self.embed = embed
        self.threshold = threshold
        self.results = results

    def setup(self, worker):
        self.worker = worker
        if self.results is None:
            self.results = bool(_config("results", False))
        try:
            install(self.socket, self.embed, self.threshold)
        except OSError as e:  # no store: this worker sends and receives bytes
            import logging
            logging.getLogger("sealstore.dask").warning(
                "sealstore.dask: no store for worker %s (%s): transfers go through the comm",
                worker.address, e)
        else:
            if _config("spill", True):
                _count_store_nominally()
        _use_family(worker.rpc)

    def transition(self, key, start, finish, **kwargs):
        n = _node
        if finish != "memory" or not self.results or n is None or not n.usable():
            return
        data = self.worker.data
        try:
            value = data[key]
        except KeyError:
            return
        new = n.adopt(value)
        if new is not value:
            data[key] = new

    def teardown(self, worker):
        pass


def _local_cluster(client):
    try:
        from distributed import LocalCluster
    except ImportError:
        return False
    return isinstance(getattr(client, "cluster", None), LocalCluster)


def setup(client, socket=None, embed=None, threshold=None, results=None):
    """Use the node's store for the transfers of client's cluster; returns client.

    Installs the family in this process (connecting to the store at socket
    if one answers; with embed=None it embeds one here only for a
    LocalCluster, whose workers then find it at the same socket), makes the
    client serialize and deserialize with it (and, when this process has a
    store and client.direct_to_workers is None, scatter and gather straight
    to the workers instead of through the scheduler), and registers
    SealstorePlugin(socket, embed, threshold, results) on every worker: socket None
    lets each worker find its own node's store (a LocalCluster's workers
    inherit this process's environment, hence its default socket).
    """
    _require_distributed()
    here_embed = _local_cluster(client) if embed is None else embed
    try:
        install(socket, here_embed, threshold)
        if client.direct_to_workers is None:
            # scatter and gather straight to the workers (through the scheduler,
            # Dask speaks pickle protocol 4 and the bytes go through the comms)
            client.direct_to_workers = True
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # no store on this machine: the client sends bytes, workers find theirs
    _use_family(client.rpc)
    client._serializers = list(SERIALIZERS)
    client._deserializers = list(DESERIALIZERS)
    client.register_worker_plugin(SealstorePlugin(socket, embed, threshold, results),
                                  name="sealstore")
    return client


def dask_setup(server):
    """Preload entry (``--preload sealstore.dask``, ``--preload-nanny sealstore.dask``).

    In a worker: add SealstorePlugin() (its options from the dask config).
    In a nanny: connect to the node's store or embed one in the nanny's
    process (which outlives its worker's restarts) and pass its socket to
    the worker it starts.
    """
    from distributed import Nanny
    if isinstance(server, Nanny):
        with _state_lock:
            global _nanny_client
            if _nanny_client is None:
                _nanny_client = _connect(_config("socket", None), bool(_config("embed", True)))
        server.env["SEALSTORE_SOCKET"] = _nanny_client.socket
    else:
        return server.plugin_add(plugin=SealstorePlugin(), name="sealstore")


_nanny_client = None
