/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by the two C files of the Python binding: _sealstore.c
 * (module, Client, ObjectView, put/get) and explain.c (explain()).
 *
 * The binding uses the public libsealstore API only (<sealstore.h>).
 *
 * Object layout of a pickled object (all integers little-endian, native):
 *
 *   0                 struct sspy_header (64 bytes)
 *   pickle_offset     the in-band pickle (protocol 5), pickle_size bytes
 *   table_offset      nbuffers x struct sspy_bufent, 8-byte aligned
 *   buffers           the out-of-band buffers, each 64-byte aligned, in the
 *                     order pickle's buffer_callback saw them
 *
 * Such an object carries the metadata SSPY_META, which is how get() tells
 * it from raw bytes (put(bytes-like) stores the bytes alone, no header and
 * no metadata, so objects written by C programs or the CLI read back as a
 * memoryview and Python's raw objects read back from C as they were).
 *
 * Trust. Unpickling runs code the pickle names, so a pickled object is
 * decoded only if its creator's uid (which the store records and ss_get
 * reports) is trusted: the process's own euid, the uids the Client or the
 * call names, or any with trust="any". Raw objects are bytes only and are
 * returned whoever created them.
 */
#ifndef SEALSTORE_PYTHON_SSPY_H
#define SEALSTORE_PYTHON_SSPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <sys/types.h>
#include <sealstore.h>

/* Python 3.9 (configure's minimum) lacks these 3.10 helpers. */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

static inline int PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *v)
{
    Py_INCREF(v);
    if (PyModule_AddObject(m, name, v) < 0) {
        Py_DECREF(v);
        return -1;
    }
    return 0;
}
#endif

#define SSPY_MAGIC 0x59505353u /* "SSPY" read as a little-endian u32 */
#define SSPY_VERSION 1
#define SSPY_ALIGN 64
#define SSPY_META "sealstore-python/pickle5"
#define SSPY_META_LEN (sizeof(SSPY_META) - 1)

struct sspy_header {
    uint32_t magic;
    uint16_t version;
    uint16_t flags;         /* none defined: must be 0 */
    uint32_t nbuffers;
    uint32_t header_size;   /* sizeof(struct sspy_header) when written */
    uint64_t pickle_offset;
    uint64_t pickle_size;
    uint64_t table_offset;
    uint64_t total_size;    /* bytes of the whole layout */
    uint8_t reserved[16];
};
_Static_assert(sizeof(struct sspy_header) == 64, "header is one cache line");

struct sspy_bufent {
    uint64_t offset;
    uint64_t size;
};

/* The open connection behind a sealstore.Client. */
typedef struct {
    PyObject_HEAD
    ss_client *c;      /* NULL once disconnected */
    int closed;        /* close() was called: no new calls */
    Py_ssize_t pins;   /* live ObjectView objects taken through this client */
    Py_ssize_t busy;   /* calls running with the GIL released */
    PyObject *path;    /* str or None (the default socket), as connect() was given */
    PyObject *sock;    /* str: the socket path actually used, for messages */
    pid_t pid;         /* the process that connected (a forked child is not it) */
    int gone;          /* a call found the store dead (EPIPE/ECONNRESET) */
    PyObject *trusted; /* frozenset of the uids whose pickles get() decodes
                          (this process's euid included); NULL: any uid */
} sspy_client;

/* One out-of-band buffer as explain() sees it. */
struct sspy_xbuf {
    const char *addr;  /* where its bytes are now (object or live memory) */
    Py_ssize_t len;
    uint64_t offset;   /* where it sits (or would sit) in the stored object */
    PyObject *path;    /* list, set by the walk when found; new reference */
    PyObject *obj;     /* the exporter found there; new reference */
    const Py_buffer *view; /* for unmatched buffers: format and shape */
};

/* Module-wide objects, set up in PyInit_sealstore. */
extern PyObject *sspy_dumps;        /* pickle.dumps */
extern PyObject *sspy_loads;        /* pickle.loads */
extern PyObject *sspy_Error;        /* sealstore.Error(OSError) */
extern PyTypeObject sspy_ClientType;
extern PyTypeObject sspy_ExplanationType;

/* Layout: given the pickle size and buffer lengths, fill the offsets.
 * Returns the total size, or 0 with a Python exception on overflow. */
uint64_t sspy_layout(uint64_t pickle_size, Py_ssize_t n, const Py_ssize_t *lens,
                     uint64_t *offsets, uint64_t *table_offset);

/* pickle.dumps(obj, protocol=5, buffer_callback=list.append): returns the
 * in-band bytes and stores the PickleBuffer list in *buffers. */
PyObject *sspy_pickle(PyObject *obj, PyObject **buffers);

/* Is obj stored raw (bytes, bytearray, memoryview)? */
int sspy_is_raw(PyObject *obj);

/* explain.c: build an Explanation for `root`, whose out-of-band buffers are
 * `bufs` (their addr/len/offset set). kind is "pickle5" or "raw". */
PyObject *sspy_explanation(PyObject *root, const char *kind, uint64_t inband_bytes,
                           struct sspy_xbuf *bufs, Py_ssize_t n, uint64_t object_bytes);

/* explain.c: a byte count for people ("512 B", "1.5 MiB") into out. */
void sspy_human(uint64_t b, char *out, size_t len);

/* explain.c: module-level explain(obj) for a live object. */
PyObject *sspy_explain_object(PyObject *obj);

#endif /* SEALSTORE_PYTHON_SSPY_H */
