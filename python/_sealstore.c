/* SPDX-License-Identifier: MIT */
/*
 * sealstore._sealstore: the C part of the CPython binding (import
 * sealstore: the package in python/sealstore/ adds Ref, put_ref/share and
 * the asyncio calls on top of the Client defined here).
 *
 * put() pickles with protocol 5 and a buffer callback, so contiguous numpy
 * arrays and other PickleBuffers travel out of band: one ss_putv() hands
 * the store the header, the pickle and those buffers where they are, and
 * the library (or the store) copies them once into the object, each
 * 64-byte aligned (layout in sspy.h); this module copies none of them.
 * get() maps the object and hands pickle.loads() read-only memoryviews over
 * those buffers, so arrays come back without a copy of their bytes. The
 * memoryviews are slices of one ObjectView, which holds the store reference
 * taken by ss_get(): it is released when the last array or view built on
 * the object is collected.
 *
 * Lifetime rule: ss_disconnect() unmaps every view of its handle, so a
 * Client's connection is closed only when (1) close() was called or the
 * Client was collected, (2) no ObjectView of it is alive, and (3) no call is
 * running on it with the GIL released. close() stops new calls at once; the
 * connection (and an embedded store) lives on until the last view dies.
 *
 * Trust: pickle.loads() runs whatever code the pickle names, so get()
 * decodes a pickled object only if the store says a trusted uid created it
 * (by default this process's euid alone: see sspy.h and python/README.md);
 * otherwise it raises UntrustedObjectError. Raw objects need no trust.
 *
 * Uses only the public libsealstore API.
 */
#include "sspy.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

PyObject *sspy_dumps;
PyObject *sspy_loads;
PyObject *sspy_Error;
static PyObject *StoreFullError;
static PyObject *StoreGoneError;
static PyObject *ObjectExistsError;
static PyObject *ObjectNotFoundError;
static PyObject *UntrustedObjectError;

/* put_many() batches pickled objects up to this size: each is assembled
 * in private memory and joins one ss_put_many() message; larger ones are
 * put on their own with ss_putv(), as put() does. */
#define SSPY_SMALL_OBJECT (64 * 1024)
/* Copies larger than this run with the GIL released. */
#define SSPY_NOGIL_COPY (256 * 1024)
/* Most out-of-band buffers one put passes to ss_putv() as they are (the
 * longest; the others are gathered): with the pickle and the runs of
 * gathered pieces between them (at most one more than the pieces passed
 * as they are), 2 * (this + 1) + 1 iovecs fit SS_IOV_MAX. */
#define SSPY_DIRECT_MAX ((SS_IOV_MAX - 3) / 2)
/* A waiting get() wakes up this often to honour Ctrl-C and close(). */
#define SSPY_WAIT_SLICE_MS 200

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ errors */

static void id_hex(const ss_id *id, char out[2 * SS_ID_SIZE + 1])
{
    static const char hx[] = "0123456789abcdef";

    for (int i = 0; i < SS_ID_SIZE; i++) {
        out[2 * i] = hx[id->b[i] >> 4];
        out[2 * i + 1] = hx[id->b[i] & 15];
    }
    out[2 * SS_ID_SIZE] = 0;
}

/* Did this error tell that the store behind `cl` is gone? EPIPE and
 * ECONNRESET say the connection broke; ENOTCONN says the handle is dead,
 * which in the process that connected means the same (in a forked child
 * it means the handle was inherited: that is not the store's fault). */
static int store_gone(const sspy_client *cl, int rc)
{
    return cl && (rc == -EPIPE || rc == -ECONNRESET || (rc == -ENOTCONN && getpid() == cl->pid));
}

/*
 * Raise the Python exception for libsealstore's return value rc of
 * operation `op` on client `cl` (NULL: none yet): ENOSPC -> StoreFullError,
 * EEXIST -> ObjectExistsError (a FileExistsError), ETIMEDOUT ->
 * TimeoutError, EINVAL -> ValueError, a dead store -> StoreGoneError
 * (naming its socket; the client remembers it for repr), errnos Python
 * maps to an OSError subclass -> that subclass (e.g.
 * ConnectionRefusedError), everything else -> sealstore.Error. Every
 * OSError carries the positive errno (or SS_E_* code) in .errno.
 */
static PyObject *raise_err(sspy_client *cl, int rc, const char *op, const ss_id *id,
                           const char *hint, int gone)
{
    char hex[2 * SS_ID_SIZE + 1] = "";
    PyObject *text, *exc = NULL, *cls;
    int e = -rc;

    if (id)
        id_hex(id, hex);
    if (rc == -ENOTCONN && !hint && !gone)
        hint = " (a client inherited through fork() is dead in the child: connect anew there)";
    if (gone) {
        cl->gone = 1;
        text = PyUnicode_FromFormat("sealstore %s%s%s: the store at %S is gone (%s): "
                                    "connect again once it is back", op, id ? " " : "", hex,
                                    cl->sock, ss_strerror(rc));
    } else {
        text = PyUnicode_FromFormat("sealstore %s%s%s: %s%s", op, id ? " " : "", hex,
                                    ss_strerror(rc), hint ? hint : "");
    }
    if (!text)
        return NULL;
    if (e == EINVAL) {
        PyErr_SetObject(PyExc_ValueError, text);
        Py_DECREF(text);
        return NULL;
    }
    switch (e) {
    case ENOSPC:
    case SS_E_FULL: cls = StoreFullError; break;
    case EEXIST: cls = ObjectExistsError; break;
    case ETIMEDOUT: cls = PyExc_TimeoutError; break;
    default: cls = gone ? StoreGoneError : e >= SS_E_BASE ? sspy_Error : NULL; break;
    }
    if (!cls) {
        /* OSError() picks the subclass for the errno, if Python has one */
        exc = PyObject_CallFunction(PyExc_OSError, "iO", e, text);
        if (exc && Py_IS_TYPE(exc, (PyTypeObject *)PyExc_OSError)) {
            Py_CLEAR(exc);
            cls = sspy_Error;
        }
    }
    if (cls)
        exc = PyObject_CallFunction(cls, "iO", e, text);
    Py_DECREF(text);
    if (exc && gone && PyObject_SetAttrString(exc, "socket", cl->sock) < 0)
        Py_CLEAR(exc);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *raise_rc(sspy_client *cl, int rc, const char *op, const ss_id *id,
                          const char *hint)
{
    return raise_err(cl, rc, op, id, hint, store_gone(cl, rc));
}

static PyObject *human_size(uint64_t n)
{
    char buf[32];

    sspy_human(n, buf, sizeof(buf));
    return PyUnicode_FromString(buf);
}

/* o.name = v, consuming the new reference v (which may be NULL: error). */
static int set_attr_new(PyObject *o, const char *name, PyObject *v)
{
    int rc = v ? PyObject_SetAttrString(o, name, v) : -1;

    Py_XDECREF(v);
    return rc;
}

/*
 * A put of `size` bytes failed with rc: raise as raise_rc does, and when
 * the store is full say why in terms the caller can act on: the size
 * asked for, the store's capacity and what it holds (StoreFullError
 * .requested, .capacity, .resident, .object_bytes; the last three None
 * when the store cannot tell). GIL held.
 */
static void raise_put(sspy_client *cl, int rc, const ss_id *id, uint64_t size)
{
    ss_stats s = { .size = sizeof(s), .version = SS_STATS_VERSION };
    PyObject *hint = NULL, *t, *v, *tb, *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    int src = -1;

    if (rc != -ENOSPC && rc != -SS_E_FULL) {
        raise_rc(cl, rc, "put", id, NULL);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    src = ss_stats_get(cl->c, &s);
    Py_END_ALLOW_THREADS
    a = human_size(size);
    if (src == 0) {
        b = human_size(s.capacity);
        c = human_size(s.resident_bytes);
        d = human_size(s.object_bytes);
    }
    if (a && src == 0 && b && c && d)
        hint = PyUnicode_FromFormat(" (asked for %S; the store's capacity is %S, %S resident, "
                                    "%llu objects of %S: delete some, or start the store with "
                                    "a larger SEALSTORE_CAPACITY)", a, b, c,
                                    (unsigned long long)s.objects, d);
    else if (a)
        hint = PyUnicode_FromFormat(" (asked for %S; the store's capacity is unknown)", a);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    Py_XDECREF(d);
    if (!hint)
        return;
    raise_rc(cl, rc, "put", id, PyUnicode_AsUTF8(hint));
    Py_DECREF(hint);
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v && (set_attr_new(v, "requested", PyLong_FromUnsignedLongLong(size)) < 0 ||
              set_attr_new(v, "capacity", src == 0 ? PyLong_FromUnsignedLongLong(s.capacity)
                                                   : Py_NewRef(Py_None)) < 0 ||
              set_attr_new(v, "resident", src == 0 ? PyLong_FromUnsignedLongLong(s.resident_bytes)
                                                   : Py_NewRef(Py_None)) < 0 ||
              set_attr_new(v, "object_bytes", src == 0 ? PyLong_FromUnsignedLongLong(s.object_bytes)
                                                       : Py_NewRef(Py_None)) < 0))
        PyErr_Clear();
    PyErr_Restore(t, v, tb);
}

/* KeyError (ObjectNotFoundError) for an absent id: args[0] is the id's
 * bytes, as for a dict; str() shows it in hex. */
static PyObject *raise_missing(const ss_id *id)
{
    PyObject *k = PyBytes_FromStringAndSize((const char *)id->b, SS_ID_SIZE), *e = NULL;

    if (k)
        e = PyObject_CallOneArg(ObjectNotFoundError, k);
    if (e && PyObject_SetAttrString(e, "id", k) < 0)
        Py_CLEAR(e);
    if (e) {
        PyErr_SetObject(ObjectNotFoundError, e);
        Py_DECREF(e);
    }
    Py_XDECREF(k);
    return NULL;
}

/* ObjectNotFoundError.__str__: "sealstore: no object 0a1b... in the store" */
static PyObject *notfound_str(PyObject *unused, PyObject *self)
{
    PyObject *args = PyObject_GetAttrString(self, "args"), *r = NULL;
    Py_buffer v;

    if (!args)
        return NULL;
    if (PyTuple_Check(args) && PyTuple_GET_SIZE(args) == 1 &&
        PyBytes_Check(PyTuple_GET_ITEM(args, 0)) &&
        PyBytes_GET_SIZE(PyTuple_GET_ITEM(args, 0)) == SS_ID_SIZE &&
        PyObject_GetBuffer(PyTuple_GET_ITEM(args, 0), &v, PyBUF_SIMPLE) == 0) {
        char hex[2 * SS_ID_SIZE + 1];
        ss_id id;

        memcpy(id.b, v.buf, SS_ID_SIZE);
        PyBuffer_Release(&v);
        id_hex(&id, hex);
        r = PyUnicode_FromFormat("no object %s in the store", hex);
    } else {
        r = PyObject_Str(args); /* built by hand with other arguments */
    }
    Py_DECREF(args);
    return r;
}

static PyMethodDef notfound_str_def = {
    "__str__", (PyCFunction)notfound_str, METH_O, "__str__($self, /)\n--\n\nThe id in hex.",
};

/* Add a note (Python >= 3.11 shows it under the traceback) to the pending
 * exception; silently nothing where add_note does not exist. */
static void add_note(const char *note)
{
    PyObject *t, *v, *tb, *r;

    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v) {
        r = PyObject_CallMethod(v, "add_note", "s", note);
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear();
    }
    PyErr_Restore(t, v, tb);
}

/* ---------------------------------------------------------------- ids */

/* Ids are any contiguous bytes-like object of exactly SS_ID_SIZE bytes
 * (bytes in practice); str is refused rather than encoded. */
static int parse_id(PyObject *o, ss_id *id)
{
    Py_buffer v;

    if (PyUnicode_Check(o) || !PyObject_CheckBuffer(o)) {
        PyErr_Format(PyExc_TypeError, "sealstore ids are %d-byte bytes objects, not %.100s",
                     SS_ID_SIZE, Py_TYPE(o)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(o, &v, PyBUF_SIMPLE) < 0)
        return -1;
    if (v.len != SS_ID_SIZE) {
        PyErr_Format(PyExc_ValueError, "sealstore ids are %d bytes long, this one has %zd",
                     SS_ID_SIZE, v.len);
        PyBuffer_Release(&v);
        return -1;
    }
    memcpy(id->b, v.buf, SS_ID_SIZE);
    PyBuffer_Release(&v);
    return 0;
}

static int random_id(ss_id *id)
{
    size_t got = 0;

    while (got < SS_ID_SIZE) {
        ssize_t r = getrandom(id->b + got, SS_ID_SIZE - got, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* d[key] = v, consuming the new reference v (which may be NULL: error). */
static int set_new(PyObject *d, const char *key, PyObject *v)
{
    int rc = v ? PyDict_SetItemString(d, key, v) : -1;

    Py_XDECREF(v);
    return rc;
}

static PyObject *id_bytes(const ss_id *id)
{
    return PyBytes_FromStringAndSize((const char *)id->b, SS_ID_SIZE);
}

/* A creator's uid for Python: an int, or None when the store does not know. */
static PyObject *uid_object(uint32_t uid)
{
    if (uid == SS_UID_UNKNOWN)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(uid);
}

/* timeout: None -> 0 (no wait); seconds >= 0; inf -> -1 (forever). */
static int parse_timeout(PyObject *o, double *out)
{
    double t;

    if (o == Py_None) {
        *out = 0;
        return 0;
    }
    t = PyFloat_AsDouble(o);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(t) || t < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "timeout must be None (no wait), a number of seconds >= 0, "
                        "or math.inf (wait forever)");
        return -1;
    }
    *out = isinf(t) ? -1 : t;
    return 0;
}

/* ---------------------------------------------------------------- trust */

#define TRUST_HELP "trust must be None, \"any\" or an iterable of uids"

/* One trusted uid from a Python integer, added to the set. */
static int trust_add(PyObject *set, PyObject *x)
{
    PyObject *n, *key = NULL;
    unsigned long u;
    int rc = -1;

    if (PyBool_Check(x) || !(n = PyNumber_Index(x))) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, TRUST_HELP ": %.100s is not a uid",
                     Py_TYPE(x)->tp_name);
        return -1;
    }
    u = PyLong_AsUnsignedLong(n);
    if ((u == (unsigned long)-1 && PyErr_Occurred()) || u >= SS_UID_UNKNOWN) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "%R is not a uid (0..%u); an object whose creator the store does not "
                     "know is decoded only with trust=\"any\"", n, SS_UID_UNKNOWN - 1);
    } else if ((key = PyLong_FromUnsignedLong(u))) {
        rc = PySet_Add(set, key);
    }
    Py_XDECREF(key);
    Py_DECREF(n);
    return rc;
}

/*
 * Parse a trust argument: None (this process's euid only), "any" (every
 * creator, unknown ones included), a uid or an iterable of uids (those and
 * this process's euid). *out: a new frozenset of int uids, or NULL for
 * "any". Returns 0, or -1 with ValueError/TypeError.
 */
static int parse_trust(PyObject *o, PyObject **out)
{
    PyObject *set, *own, *it = NULL, *x;
    int rc = -1;

    *out = NULL;
    if (PyUnicode_Check(o)) {
        if (PyUnicode_CompareWithASCIIString(o, "any") == 0)
            return 0;
        PyErr_Format(PyExc_ValueError, TRUST_HELP ", not %R", o);
        return -1;
    }
    set = PySet_New(NULL);
    if (!set)
        return -1;
    own = PyLong_FromUnsignedLong((unsigned long)geteuid());
    if (!own || PySet_Add(set, own) < 0)
        goto out;
    if (o == Py_None) {
        rc = 0;
    } else if (PyLong_Check(o) || PyIndex_Check(o)) {
        rc = trust_add(set, o);
    } else if ((it = PyObject_GetIter(o))) {
        rc = 0;
        while (rc == 0 && (x = PyIter_Next(it))) {
            rc = trust_add(set, x);
            Py_DECREF(x);
        }
        if (PyErr_Occurred())
            rc = -1;
    } else {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, TRUST_HELP ", not %.100s", Py_TYPE(o)->tp_name);
    }
    if (rc == 0 && !(*out = PyFrozenSet_New(set)))
        rc = -1;
out:
    Py_XDECREF(it);
    Py_XDECREF(own);
    Py_DECREF(set);
    return rc;
}

/* The trust one call uses: its trust argument if given (not None), else
 * the client's. *trusted is borrowed from *hold, which the caller
 * releases (NULL: trust any). Returns 0 or -1. */
static int call_trust(sspy_client *self, PyObject *arg, PyObject **hold, PyObject **trusted)
{
    *hold = NULL;
    if (arg == Py_None) {
        *trusted = self->trusted;
        return 0;
    }
    if (parse_trust(arg, hold) < 0)
        return -1;
    *trusted = *hold;
    return 0;
}

/* UntrustedObjectError for an object of creator `uid` (a PermissionError,
 * errno EPERM, with .uid (None: unknown) and .id). */
static void raise_untrusted(const char *op, const ss_id *id, uint32_t uid)
{
    char hex[2 * SS_ID_SIZE + 1], buf[1024], who[300] = "";
    struct passwd pw, *res = NULL;
    PyObject *text, *exc = NULL, *u = NULL, *idb = NULL;

    id_hex(id, hex);
    if (uid == SS_UID_UNKNOWN) {
        text = PyUnicode_FromFormat(
            "sealstore %s %s: refusing to unpickle an object whose creator is unknown (it "
            "came back from a spill file that did not record it): unpickling runs code "
            "of its creator's choosing. Only trust=\"any\" decodes it; raw objects "
            "need no trust", op, hex);
    } else {
        if (getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &res) == 0 && res)
            snprintf(who, sizeof(who), " (%s)", res->pw_name);
        text = PyUnicode_FromFormat(
            "sealstore %s %s: refusing to unpickle an object created by uid %u%s, which "
            "is not trusted (this process is uid %u): unpickling runs code of its "
            "creator's choosing. If uid %u is trusted, pass trust=[%u] (or trust=\"any\") "
            "to connect() or %s()", op, hex, uid, who, (unsigned)geteuid(), uid, uid, op);
    }
    if (text)
        exc = PyObject_CallFunction(UntrustedObjectError, "iO", EPERM, text);
    if (exc && (!(u = uid_object(uid)) || !(idb = id_bytes(id)) ||
                PyObject_SetAttrString(exc, "uid", u) < 0 ||
                PyObject_SetAttrString(exc, "id", idb) < 0))
        Py_CLEAR(exc);
    if (exc)
        PyErr_SetObject(UntrustedObjectError, exc);
    Py_XDECREF(u);
    Py_XDECREF(idb);
    Py_XDECREF(exc);
    Py_XDECREF(text);
}

/* 0 if an object created by `uid` may be unpickled under `trusted` (NULL:
 * any), else -1 with UntrustedObjectError (or another error). */
static int check_trusted(PyObject *trusted, const char *op, const ss_id *id, uint32_t uid)
{
    PyObject *key;
    int in;

    if (!trusted)
        return 0;
    if (uid != SS_UID_UNKNOWN) {
        key = PyLong_FromUnsignedLong(uid);
        if (!key)
            return -1;
        in = PySet_Contains(trusted, key);
        Py_DECREF(key);
        if (in != 0)
            return in > 0 ? 0 : -1;
    }
    raise_untrusted(op, id, uid);
    return -1;
}

/* ---------------------------------------------------------- client life */

static void maybe_disconnect(sspy_client *self)
{
    if (self->closed && self->pins == 0 && self->busy == 0 && self->c) {
        ss_client *c = self->c;

        self->c = NULL;
        ss_disconnect(c);
    }
}

/* Every call on the handle is bracketed by op_begin/op_end: while busy > 0
 * the handle is not disconnected, even if another thread calls close()
 * while this one has the GIL released. */
static int op_begin(sspy_client *self)
{
    if (self->closed || !self->c) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed sealstore client");
        return -1;
    }
    self->busy++;
    return 0;
}

static void op_end(sspy_client *self)
{
    self->busy--;
    maybe_disconnect(self);
}

/* ------------------------------------------------------------ ObjectView */

/* A read-only buffer over one sealed object, owning one store reference. */
typedef struct {
    PyObject_HEAD
    sspy_client *client;
    ss_id id;
    const char *data;
    uint64_t size;
    const char *meta;
    uint64_t meta_size;
    uint32_t uid;      /* creator's uid as the store reported it */
} sspy_view;

static PyTypeObject sspy_ViewType;

/* Wrap a found ss_object; on failure the reference is released. Views
 * are collected in any order, and two of them may come from objects with
 * one id (one deleted since): each releases the reference of its own
 * object (ss_release_object), never the one held longest. */
static sspy_view *view_new(sspy_client *client, const ss_object *o)
{
    sspy_view *v = PyObject_New(sspy_view, &sspy_ViewType);

    if (!v) {
        (void)ss_release_object(client->c, o);
        return NULL;
    }
    Py_INCREF(client);
    v->client = client;
    v->id = o->id;
    v->data = o->data;
    v->size = o->size;
    v->meta = o->meta;
    v->meta_size = o->meta_size;
    v->uid = o->uid;
    client->pins++;
    return v;
}

static void view_dealloc(sspy_view *v)
{
    sspy_client *cl = v->client;

    /* -ENOTCONN in a forked child (its handle is dead) is fine: nothing
     * to release there. The handle is still connected: pins > 0. */
    if (cl->c) {
        ss_object o = { .id = v->id, .data = v->data };

        (void)ss_release_object(cl->c, &o);
    }
    cl->pins--;
    maybe_disconnect(cl);
    Py_DECREF(cl);
    PyObject_Free(v);
}

static int view_getbuffer(sspy_view *v, Py_buffer *view, int flags)
{
    /* FillInfo refuses PyBUF_WRITABLE requests with BufferError */
    return PyBuffer_FillInfo(view, (PyObject *)v, (void *)v->data, (Py_ssize_t)v->size, 1,
                             flags);
}

static PyBufferProcs view_as_buffer = {
    .bf_getbuffer = (getbufferproc)view_getbuffer,
};

static PyObject *view_get_id(sspy_view *v, void *unused)
{
    return id_bytes(&v->id);
}

static PyObject *view_get_nbytes(sspy_view *v, void *unused)
{
    return PyLong_FromUnsignedLongLong(v->size);
}

static PyObject *view_get_uid(sspy_view *v, void *unused)
{
    return uid_object(v->uid);
}

static PyObject *view_repr(sspy_view *v)
{
    char hex[2 * SS_ID_SIZE + 1];

    id_hex(&v->id, hex);
    return PyUnicode_FromFormat("<sealstore.ObjectView %s, %llu bytes>", hex,
                                (unsigned long long)v->size);
}

static PyGetSetDef view_getset[] = {
    { "id", (getter)view_get_id, NULL, "the object's id", NULL },
    { "nbytes", (getter)view_get_nbytes, NULL, "the object's size in bytes", NULL },
    { "uid", (getter)view_get_uid, NULL,
      "the uid of the process that created the object, as the store recorded it\n"
      "(None: unknown)", NULL },
    { NULL },
};

static PyTypeObject sspy_ViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sealstore.ObjectView",
    .tp_basicsize = sizeof(sspy_view),
    .tp_dealloc = (destructor)view_dealloc,
    .tp_repr = (reprfunc)view_repr,
    .tp_as_buffer = &view_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Read-only bytes of one sealed object, mapped from the store.\n\n"
              "Every memoryview and array that get() returns is built on one of these\n"
              "(memoryview.obj, or the end of an array's .base chain). It holds the\n"
              "store reference that keeps the object's memory mapped; the reference\n"
              "is released when the last view built on it is collected.",
    .tp_getset = view_getset,
};

/* --------------------------------------------------------------- layout */

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) & ~(a - 1);
}

uint64_t sspy_layout(uint64_t pickle_size, Py_ssize_t n, const Py_ssize_t *lens,
                     uint64_t *offsets, uint64_t *table_offset)
{
    uint64_t end = sizeof(struct sspy_header) + pickle_size;

    *table_offset = align_up(end, 8);
    end = *table_offset + (uint64_t)n * sizeof(struct sspy_bufent);
    for (Py_ssize_t i = 0; i < n; i++) {
        offsets[i] = align_up(end, SSPY_ALIGN);
        end = offsets[i] + (uint64_t)lens[i];
        if (end < offsets[i] || end > (UINT64_MAX >> 2)) {
            PyErr_SetString(PyExc_OverflowError, "object too large");
            return 0;
        }
    }
    return end;
}

int sspy_is_raw(PyObject *obj)
{
    return PyBytes_Check(obj) || PyByteArray_Check(obj) || PyMemoryView_Check(obj);
}

PyObject *sspy_pickle(PyObject *obj, PyObject **buffers)
{
    PyObject *list, *cb = NULL, *kw = NULL, *args = NULL, *res = NULL;

    list = PyList_New(0);
    if (!list)
        return NULL;
    cb = PyObject_GetAttrString(list, "append");
    if (cb)
        kw = Py_BuildValue("{s:i,s:O}", "protocol", 5, "buffer_callback", cb);
    if (kw)
        args = PyTuple_Pack(1, obj);
    if (args)
        res = PyObject_Call(sspy_dumps, args, kw);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(cb);
    if (!res || !PyBytes_Check(res)) {
        if (res) {
            PyErr_SetString(PyExc_TypeError, "pickle.dumps did not return bytes");
            Py_CLEAR(res);
        }
        Py_DECREF(list);
        return NULL;
    }
    *buffers = list;
    return res;
}

/* ------------------------------------------------------------------ put */

/* Discard a half-made object; its failure leaves nothing more to do (the
 * store drops unsealed objects of a client that disconnects). */
static void abort_quiet(ss_client *c, const ss_id *id)
{
    int rc = ss_abort(c, id);

    (void)rc;
}

/* Seal the object created under `id` (at `data`) and drop the creator's
 * reference, that very one: a view of an older object with this id may
 * still be alive. On failure abort it, so nothing is left behind. GIL
 * released by caller. */
static int seal_release(ss_client *c, const ss_id *id, void *data)
{
    ss_object o = { .id = *id, .data = data };
    int rc;

    /* EBUSY: a writable mapping or pinned pages exist somewhere for a
     * moment; the object stays unsealed, so a short retry is safe. */
    for (int tries = 0;; tries++) {
        rc = ss_seal(c, id);
        if (rc != -EBUSY || tries == 4)
            break;
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (rc < 0) {
        if (rc != -EPERM) /* EPERM: the store aborted it already */
            abort_quiet(c, id);
        return rc;
    }
    (void)ss_release_object(c, &o);
    return 0;
}

static int put_raw(sspy_client *self, const ss_id *id, PyObject *obj, unsigned flags,
                   uint64_t *size)
{
    Py_buffer v;
    void *dst;
    int rc;

    if (PyObject_GetBuffer(obj, &v, PyBUF_FULL_RO) < 0)
        return -1;
    *size = (uint64_t)v.len;
    if (PyBuffer_IsContiguous(&v, 'C')) {
        Py_BEGIN_ALLOW_THREADS
        rc = ss_put_ex(self->c, id, v.buf, (uint64_t)v.len, NULL, 0, flags);
        Py_END_ALLOW_THREADS
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = ss_create_ex(self->c, id, (uint64_t)v.len, NULL, 0, flags, &dst);
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            /* PyBuffer_ToContiguous allocates: needs the GIL */
            if (PyBuffer_ToContiguous(dst, &v, v.len, 'C') < 0) {
                abort_quiet(self->c, id);
                PyBuffer_Release(&v);
                return -1;
            }
            Py_BEGIN_ALLOW_THREADS
            rc = seal_release(self->c, id, dst);
            Py_END_ALLOW_THREADS
        }
    }
    if (rc < 0)
        raise_put(self, rc, id, (uint64_t)v.len);
    PyBuffer_Release(&v);
    return rc < 0 ? -1 : 0;
}

struct put_plan {
    struct sspy_header hdr;
    const char *pickle;
    Py_ssize_t n;
    const Py_buffer **views; /* contiguous: pickle refuses the others */
    Py_ssize_t *lens;
    uint64_t *offsets;
};

/*
 * A pickled object's layout as ss_putv() iovecs, in order: the header,
 * the pickle, the zero gaps, the buffer table and the out-of-band
 * buffers. The pickle and the buffers are passed where they are (the
 * pickle's bytes, the exporters' memory: the library or the store reads
 * them during the call, this module copies nothing); the header, the
 * gaps and the table are gathered into `scratch`, each run of
 * consecutive gathered pieces one iovec, and so are the buffers `pass`
 * leaves out (past SSPY_DIRECT_MAX buffers) or, with gather_all, every
 * piece (then scratch is the whole object).
 * Ownership: iov and scratch are PyMem blocks of this struct, freed by
 * vec_free(); the direct iovecs point into the plan's pickle and
 * PickleBuffers, which the caller holds until the put returns (a
 * PickleBuffer keeps its exporter's buffer exported, so a bytearray
 * cannot be resized and an array's memory cannot go meanwhile).
 */
struct put_vec {
    struct iovec *iov;
    int n;            /* iovecs used */
    char *scratch;
    uint64_t used;    /* scratch bytes used */
    int gather_all;   /* every piece into scratch */
    unsigned char *pass; /* PyMem: pass[i], buffer i passed as it is; NULL: all */
    int run;          /* the last iovec is a run in scratch */
    int fill;         /* 0: count iov and scratch only; 1: write them */
};

/* One piece of the layout: `len` bytes at src (NULL: zeros); `as_is`:
 * passed where it is (src stays valid until the put returns), else
 * gathered. */
static void vec_add(struct put_vec *v, const void *src, uint64_t len, int as_is)
{
    if (len == 0)
        return;
    if (as_is && !v->gather_all) {
        if (v->fill)
            v->iov[v->n] = (struct iovec){ (void *)src, (size_t)len };
        v->n++;
        v->run = 0;
        return;
    }
    if (v->fill) {
        if (src)
            memcpy(v->scratch + v->used, src, (size_t)len);
        else
            memset(v->scratch + v->used, 0, (size_t)len);
        if (v->run)
            v->iov[v->n - 1].iov_len += (size_t)len;
        else
            v->iov[v->n] = (struct iovec){ v->scratch + v->used, (size_t)len };
    }
    if (!v->run)
        v->n++;
    v->run = 1;
    v->used += len;
}

/* Walk the layout once (counting, or filling: v->fill). Needs no GIL. */
static void vec_walk(const struct put_plan *p, struct put_vec *v)
{
    const struct sspy_header *h = &p->hdr;
    uint64_t end = h->pickle_offset + h->pickle_size;

    v->n = 0;
    v->used = 0;
    v->run = 0;
    vec_add(v, h, sizeof(*h), 0);
    vec_add(v, p->pickle, h->pickle_size, 1);
    vec_add(v, NULL, h->table_offset - end, 0);
    for (Py_ssize_t i = 0; i < p->n; i++) {
        struct sspy_bufent e = { p->offsets[i], (uint64_t)p->lens[i] };

        vec_add(v, &e, sizeof(e), 0);
    }
    end = h->table_offset + (uint64_t)p->n * sizeof(struct sspy_bufent);
    for (Py_ssize_t i = 0; i < p->n; i++) {
        vec_add(v, NULL, p->offsets[i] - end, 0);
        vec_add(v, p->views[i]->buf, (uint64_t)p->lens[i], !v->pass || v->pass[i]);
        end = p->offsets[i] + (uint64_t)p->lens[i];
    }
}

struct len_idx {
    Py_ssize_t len, i;
};

static int cmp_len_desc(const void *a, const void *b)
{
    const struct len_idx *x = a, *y = b;

    return (x->len < y->len) - (x->len > y->len);
}

/* Choose the buffers passed as they are: all, unless there are more than
 * SSPY_DIRECT_MAX; then the SSPY_DIRECT_MAX longest (v->pass). 0, or -1
 * with an exception. */
static int choose_direct(const struct put_plan *p, struct put_vec *v)
{
    struct len_idx *l;

    if (v->gather_all || p->n <= SSPY_DIRECT_MAX)
        return 0;
    l = PyMem_Malloc((size_t)p->n * sizeof(*l));
    v->pass = PyMem_Calloc((size_t)p->n, 1);
    if (!l || !v->pass) {
        PyMem_Free(l);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < p->n; i++)
        l[i] = (struct len_idx){ p->lens[i], i };
    qsort(l, (size_t)p->n, sizeof(*l), cmp_len_desc);
    for (Py_ssize_t k = 0; k < SSPY_DIRECT_MAX; k++)
        v->pass[l[k].i] = 1;
    PyMem_Free(l);
    return 0;
}

static void vec_free(struct put_vec *v)
{
    PyMem_Free(v->iov);
    PyMem_Free(v->scratch);
    PyMem_Free(v->pass);
    *v = (struct put_vec){ 0 };
}

/* Lay p out as iovecs in *v; gather_all: every piece into scratch (one
 * iovec: the whole object). Returns 0, or -1 with an exception. */
static int vec_build(const struct put_plan *p, struct put_vec *v, int gather_all)
{
    *v = (struct put_vec){ .gather_all = gather_all };
    if (choose_direct(p, v) < 0) {
        vec_free(v);
        return -1;
    }
    vec_walk(p, v);
    if (v->used > SIZE_MAX / 2) {
        vec_free(v);
        PyErr_SetString(PyExc_OverflowError, "object too large");
        return -1;
    }
    v->iov = PyMem_Malloc((size_t)v->n * sizeof(*v->iov) + 1);
    v->scratch = PyMem_Malloc((size_t)v->used + 1);
    if (!v->iov || !v->scratch) {
        vec_free(v);
        PyErr_NoMemory();
        return -1;
    }
    v->fill = 1;
    if (v->used > SSPY_NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        vec_walk(p, v);
        Py_END_ALLOW_THREADS
    } else {
        vec_walk(p, v);
    }
    return 0;
}

static void plan_free(struct put_plan *p, PyObject *pk, PyObject *bufs)
{
    PyMem_Free(p->views);
    PyMem_Free(p->lens);
    PyMem_Free(p->offsets);
    Py_DECREF(pk);
    Py_DECREF(bufs);
}

/*
 * Pickle obj and lay it out (header, table, buffers) in *p; returns the
 * pickle (p->pickle points into it) and *bufs, its out-of-band buffers,
 * both to be dropped with plan_free() after the copy; NULL with an
 * exception (a pickling error gets a note naming `what` was not stored).
 */
static PyObject *plan_pickle(PyObject *obj, struct put_plan *p, PyObject **bufs,
                             const char *what)
{
    uint64_t total, table_off;
    PyObject *pk;

    *p = (struct put_plan){ 0 };
    pk = sspy_pickle(obj, bufs);
    if (!pk) {
        add_note(what);
        return NULL;
    }
    p->n = PyList_GET_SIZE(*bufs);
    p->views = PyMem_Calloc((size_t)p->n + 1, sizeof(*p->views));
    p->lens = PyMem_Calloc((size_t)p->n + 1, sizeof(*p->lens));
    p->offsets = PyMem_Calloc((size_t)p->n + 1, sizeof(*p->offsets));
    if (!p->views || !p->lens || !p->offsets) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < p->n; i++) {
        p->views[i] = PyPickleBuffer_GetBuffer(PyList_GET_ITEM(*bufs, i));
        if (!p->views[i])
            goto fail;
        p->lens[i] = p->views[i]->len;
        if (!PyBuffer_IsContiguous(p->views[i], 'A')) { /* pickle refuses these already */
            PyErr_SetString(PyExc_BufferError, "non-contiguous out-of-band buffer");
            goto fail;
        }
    }
    if (p->n > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many out-of-band buffers");
        goto fail;
    }
    p->pickle = PyBytes_AS_STRING(pk);
    total = sspy_layout((uint64_t)PyBytes_GET_SIZE(pk), p->n, p->lens, p->offsets, &table_off);
    if (!total)
        goto fail;
    p->hdr = (struct sspy_header){
        .magic = SSPY_MAGIC, .version = SSPY_VERSION, .nbuffers = (uint32_t)p->n,
        .header_size = sizeof(struct sspy_header),
        .pickle_offset = sizeof(struct sspy_header),
        .pickle_size = (uint64_t)PyBytes_GET_SIZE(pk),
        .table_offset = table_off, .total_size = total,
    };
    return pk;
fail:
    plan_free(p, pk, *bufs);
    return NULL;
}

/* One ss_putv() of the layout: the out-of-band buffers go from where
 * they are (see struct put_vec), with the GIL released. */
static int put_pickled(sspy_client *self, const ss_id *id, PyObject *obj, unsigned flags,
                       uint64_t *size)
{
    struct put_plan p;
    struct put_vec v;
    PyObject *bufs = NULL, *pk;
    int rc, ret = -1;

    pk = plan_pickle(obj, &p, &bufs,
                     "sealstore.put: the object cannot be pickled (protocol 5); nothing was stored");
    if (!pk)
        return -1;
    *size = p.hdr.total_size;
    if (vec_build(&p, &v, 0) == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = ss_putv(self->c, id, v.iov, v.n, SSPY_META, SSPY_META_LEN, flags);
        Py_END_ALLOW_THREADS
        vec_free(&v);
        if (rc < 0)
            raise_put(self, rc, id, p.hdr.total_size);
        else
            ret = 0;
    }
    plan_free(&p, pk, bufs); /* the buffers' exports end here, after the put */
    return ret;
}

/* The lifetime keyword: None (until deleted) or "creator" (deleted by the
 * store when this client's connection ends: SS_LIFETIME_CREATOR). */
static int parse_lifetime(PyObject *o, unsigned *flags)
{
    *flags = 0;
    if (o == Py_None)
        return 0;
    if (PyUnicode_Check(o) && PyUnicode_CompareWithASCIIString(o, "creator") == 0) {
        *flags = SS_LIFETIME_CREATOR;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "lifetime must be None or \"creator\", not %R", o);
    return -1;
}

/* put(obj, id=None, *, lifetime=None): store obj under id (random if
 * None); *size gets the stored object's size. Returns the new id bytes,
 * or NULL. */
static PyObject *put_common(sspy_client *self, PyObject *args, PyObject *kw, const char *fmt,
                            uint64_t *size)
{
    static char *kwlist[] = { "obj", "id", "lifetime", NULL };
    PyObject *obj, *idobj = Py_None, *life = Py_None;
    unsigned flags;
    ss_id id;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &obj, &idobj, &life) ||
        parse_lifetime(life, &flags) < 0)
        return NULL;
    if (idobj == Py_None ? random_id(&id) < 0 : parse_id(idobj, &id) < 0)
        return NULL;
    if (op_begin(self) < 0)
        return NULL;
    rc = sspy_is_raw(obj) ? put_raw(self, &id, obj, flags, size)
                          : put_pickled(self, &id, obj, flags, size);
    op_end(self);
    return rc < 0 ? NULL : id_bytes(&id);
}

static PyObject *client_put(sspy_client *self, PyObject *args, PyObject *kw)
{
    uint64_t size;

    return put_common(self, args, kw, "O|O$O:put", &size);
}

/* _put(obj, id=None) -> (id, size): what put_ref() builds a Ref from. */
static PyObject *client_put_sized(sspy_client *self, PyObject *args, PyObject *kw)
{
    uint64_t size = 0;
    PyObject *id = put_common(self, args, kw, "O|O$O:put_ref", &size);

    return id ? Py_BuildValue("(NK)", id, (unsigned long long)size) : NULL;
}

/* ------------------------------------------------------------- put_many */

/*
 * put_many(objs, ids=None, *, lifetime=None): every item is tried, in
 * order. An item goes into an ss_put_many() batch when it is small or
 * flat: contiguous raw bytes (passed straight from the caller's buffer),
 * or a pickled object of at most SSPY_SMALL_OBJECT bytes (assembled in
 * private memory: ss_put_many() takes one buffer an item). The rest
 * (larger pickled objects: one ss_putv() each; non-contiguous
 * memoryviews) go through put()'s own path at their place, after the
 * batch of the items before them.
 * Failures are collected per item; see put_many_raise().
 */
struct pm_item {
    Py_buffer view;   /* raw, batched: the caller's bytes (held) */
    char *staged;     /* pickled, batched: PyMem buffer */
    int has_view;
    int batched;      /* 1: goes through ss_put_many */
    PyObject *exc;    /* this item's exception (a failure), or NULL */
};

/* Serialize objs[i] for the batch, or leave it for the normal path.
 * Returns 0, or -1 with an exception (the item's failure). */
static int pm_stage(PyObject *obj, struct pm_item *it, ss_put_item *pi)
{
    struct put_plan p;
    PyObject *bufs = NULL, *pk;
    uint64_t total;

    if (sspy_is_raw(obj)) {
        if (PyObject_GetBuffer(obj, &it->view, PyBUF_FULL_RO) < 0)
            return -1;
        it->has_view = 1;
        if (PyBuffer_IsContiguous(&it->view, 'C')) {
            it->batched = 1;
            pi->data = it->view.buf;
            pi->size = (uint64_t)it->view.len;
        }
        return 0;
    }
    pk = plan_pickle(obj, &p, &bufs,
                     "sealstore.put_many: the object cannot be pickled (protocol 5); "
                     "it was not stored");
    if (!pk)
        return -1;
    total = p.hdr.total_size;
    if (total <= SSPY_SMALL_OBJECT) { /* else put()'s path, pickled again there */
        struct put_vec v;

        if (vec_build(&p, &v, 1) < 0) {
            plan_free(&p, pk, bufs);
            return -1;
        }
        it->staged = v.scratch; /* the whole object: v.used == total */
        v.scratch = NULL;
        vec_free(&v);
        it->batched = 1;
        pi->data = it->staged;
        pi->size = total;
        pi->meta = SSPY_META;
        pi->meta_size = SSPY_META_LEN;
    }
    plan_free(&p, pk, bufs);
    return 0;
}

/* The pending exception, taken (normalized) as item's failure. */
static void pm_fail(struct pm_item *it)
{
    PyObject *t, *v, *tb;

    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v && tb)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    it->exc = v;
}

/* Put the batched items waiting in b[0..*nb) (indices idx[]) in one
 * ss_put_many() and record their failures. -1: the call failed as a
 * whole (nothing tried), its exception pending. */
static int pm_flush(sspy_client *self, struct pm_item *its, ss_put_item *b, size_t *idx,
                    int *st, size_t *nb)
{
    size_t k = *nb;
    int rc;

    *nb = 0;
    if (k == 0)
        return 0;
    Py_BEGIN_ALLOW_THREADS
    rc = ss_put_many(self->c, b, k, st);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_rc(self, rc, "put_many", NULL, NULL);
        return -1;
    }
    for (size_t j = 0; j < k; j++) {
        if (st[j] < 0) {
            raise_put(self, st[j], &b[j].id, b[j].size);
            pm_fail(&its[idx[j]]);
        }
    }
    return 0;
}

/*
 * Some items failed: raise the first failure's exception (the one put()
 * would have raised for that item) with .failed, {index: exception} of
 * every failed item, and .ids, the ids of all items (the others were
 * stored), plus a note naming the failed indices.
 */
static void put_many_raise(struct pm_item *its, size_t n, PyObject *ids)
{
    PyObject *failed = PyDict_New(), *first = NULL, *note, *keys;
    size_t nf = 0;

    for (size_t i = 0; i < n && failed; i++) {
        if (!its[i].exc)
            continue;
        if (!first)
            first = its[i].exc;
        nf++;
        PyObject *k = PyLong_FromSize_t(i);
        if (!k || PyDict_SetItem(failed, k, its[i].exc) < 0)
            Py_CLEAR(failed);
        Py_XDECREF(k);
    }
    if (!failed || PyObject_SetAttrString(first, "failed", failed) < 0 ||
        PyObject_SetAttrString(first, "ids", ids) < 0) {
        Py_XDECREF(failed);
        return; /* that error is pending */
    }
    keys = PyDict_Keys(failed);
    note = keys ? PyUnicode_FromFormat("sealstore.put_many: %zu of %zu items failed (indices "
                                       "%S, in .failed); the others were stored (.ids)",
                                       nf, n, keys)
                : NULL;
    Py_XDECREF(keys);
    PyErr_Clear();
    Py_DECREF(failed);
    PyErr_SetObject((PyObject *)Py_TYPE(first), first);
    if (note) {
        PyObject *t, *v, *tb, *r;

        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        r = PyObject_CallMethod(v, "add_note", "O", note);
        Py_XDECREF(r);
        if (!r)
            PyErr_Clear();
        Py_DECREF(note);
        PyErr_Restore(t, v, tb);
    }
}

static PyObject *client_put_many(sspy_client *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "objs", "ids", "lifetime", NULL };
    PyObject *objs_in, *ids_in = Py_None, *life = Py_None, *objs = NULL, *idseq = NULL;
    PyObject *ids = NULL, *ret = NULL;
    struct pm_item *its = NULL;
    ss_put_item *pis = NULL, *batch = NULL;
    size_t *idx = NULL, nb = 0;
    int *st = NULL, failed = 0, fatal = 0;
    unsigned flags;
    size_t n;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$O:put_many", kwlist, &objs_in, &ids_in,
                                     &life) ||
        parse_lifetime(life, &flags) < 0)
        return NULL;
    /* a tuple of its own: another thread may change a list given while
     * the GIL is released below */
    objs = PySequence_Tuple(objs_in);
    if (!objs)
        return NULL;
    n = (size_t)PySequence_Fast_GET_SIZE(objs);
    if (ids_in != Py_None) {
        idseq = PySequence_Fast(ids_in, "put_many: ids must be an iterable or None");
        if (!idseq)
            goto out;
        if ((size_t)PySequence_Fast_GET_SIZE(idseq) != n) {
            PyErr_Format(PyExc_ValueError, "put_many: %zd ids for %zu objects",
                         PySequence_Fast_GET_SIZE(idseq), n);
            goto out;
        }
    }
    its = PyMem_Calloc(n + 1, sizeof(*its));
    pis = PyMem_Calloc(n + 1, sizeof(*pis));
    st = PyMem_Calloc(n + 1, sizeof(*st));
    batch = PyMem_Calloc(n + 1, sizeof(*batch));
    idx = PyMem_Calloc(n + 1, sizeof(*idx));
    ids = PyList_New((Py_ssize_t)n);
    if (!its || !pis || !st || !batch || !idx || !ids) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto out;
    }
    /* ids first: a bad id is the caller's mistake, nothing is stored */
    for (size_t i = 0; i < n; i++) {
        PyObject *b;

        if (idseq ? parse_id(PySequence_Fast_GET_ITEM(idseq, i), &pis[i].id) < 0
                  : random_id(&pis[i].id) < 0)
            goto out;
        pis[i].flags = flags;
        b = id_bytes(&pis[i].id);
        if (!b)
            goto out;
        PyList_SET_ITEM(ids, (Py_ssize_t)i, b);
    }
    for (size_t i = 0; i < n; i++)
        if (pm_stage(PySequence_Fast_GET_ITEM(objs, i), &its[i], &pis[i]) < 0)
            pm_fail(&its[i]);
    if (op_begin(self) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        PyObject *obj = PySequence_Fast_GET_ITEM(objs, i);
        uint64_t size;
        int rc;

        if (its[i].exc) /* failed already (pickling) */
            continue;
        if (its[i].batched) {
            batch[nb] = pis[i];
            idx[nb++] = i;
            continue;
        }
        /* the normal path, after the batched items before it */
        if (pm_flush(self, its, batch, idx, st, &nb) < 0) {
            fatal = 1;
            break;
        }
        rc = its[i].has_view ? put_raw(self, &pis[i].id, obj, flags, &size)
                             : put_pickled(self, &pis[i].id, obj, flags, &size);
        if (rc < 0)
            pm_fail(&its[i]);
    }
    if (!fatal && pm_flush(self, its, batch, idx, st, &nb) < 0)
        fatal = 1;
    op_end(self);
    if (fatal)
        goto out;
    for (size_t i = 0; i < n; i++)
        failed |= its[i].exc != NULL;
    if (failed)
        put_many_raise(its, n, ids);
    else
        ret = Py_NewRef(ids);
out:
    for (size_t i = 0; its && i < n; i++) {
        if (its[i].has_view)
            PyBuffer_Release(&its[i].view);
        PyMem_Free(its[i].staged);
        Py_XDECREF(its[i].exc);
    }
    PyMem_Free(its);
    PyMem_Free(pis);
    PyMem_Free(st);
    PyMem_Free(batch);
    PyMem_Free(idx);
    Py_XDECREF(ids);
    Py_XDECREF(idseq);
    Py_DECREF(objs);
    return ret;
}

/* ------------------------------------------------------------------ get */

/*
 * ss_get() one id, waiting up to `timeout` seconds (0: no wait, -1:
 * forever) in slices, so Ctrl-C and close() are noticed. Returns 1 found
 * (o filled, one reference taken), 0 not found, -1 with an exception.
 */
static int wait_get(sspy_client *self, const ss_id *id, double timeout, ss_object *o)
{
    double deadline = timeout > 0 ? now_s() + timeout : 0;
    int64_t slice;
    int rc;

    for (;;) {
        if (timeout < 0) {
            slice = SSPY_WAIT_SLICE_MS;
        } else if (timeout == 0) {
            slice = 0;
        } else {
            double left = deadline - now_s();

            slice = left <= 0 ? 0 : (int64_t)ceil(left * 1000.0);
            if (slice > SSPY_WAIT_SLICE_MS)
                slice = SSPY_WAIT_SLICE_MS;
        }
        Py_BEGIN_ALLOW_THREADS
        rc = ss_get(self->c, id, 1, slice, o);
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            raise_rc(self, rc, "get", id, NULL);
            return -1;
        }
        if (rc > 0)
            return 1;
        if (timeout == 0 || (timeout > 0 && now_s() >= deadline))
            return 0;
        if (PyErr_CheckSignals() < 0)
            return -1;
        if (self->closed) {
            PyErr_SetString(PyExc_ValueError, "sealstore client closed while get() waited");
            return -1;
        }
    }
}

/* Take one reference to `id` and wrap it; NULL with KeyError/TimeoutError
 * when absent. map_s, if not NULL, receives the time spent in ss_get. */
static sspy_view *get_view(sspy_client *self, const ss_id *id, double timeout, double *map_s)
{
    ss_object o;
    sspy_view *v = NULL;
    double t0 = now_s();
    int found;

    if (op_begin(self) < 0)
        return NULL;
    found = wait_get(self, id, timeout, &o);
    if (map_s)
        *map_s = now_s() - t0;
    if (found > 0)
        v = view_new(self, &o); /* pins++ before op_end can disconnect */
    op_end(self);
    if (found == 0) {
        if (timeout == 0)
            raise_missing(id);
        else
            raise_rc(self, -ETIMEDOUT, "get", id, " (not sealed within the timeout)");
    }
    return v;
}

static int is_pickled(const sspy_view *v)
{
    return v->meta_size == SSPY_META_LEN && memcmp(v->meta, SSPY_META, SSPY_META_LEN) == 0;
}

/* Check a pickled object's header and table against its size. */
static int parse_layout(const sspy_view *v, struct sspy_header *h)
{
    const char *why = NULL;

    if (v->size < sizeof(*h)) {
        why = "shorter than its header";
        goto bad;
    }
    memcpy(h, v->data, sizeof(*h));
    if (h->magic != SSPY_MAGIC)
        why = "bad magic";
    else if (h->version != SSPY_VERSION || h->flags != 0)
        why = "written by an unknown version of the binding";
    else if (h->header_size < sizeof(*h) || h->total_size > v->size ||
             h->pickle_offset < h->header_size || h->pickle_offset > h->total_size ||
             h->pickle_size > h->total_size - h->pickle_offset ||
             h->table_offset > h->total_size || (h->table_offset & 7) ||
             h->nbuffers > (h->total_size - h->table_offset) / sizeof(struct sspy_bufent))
        why = "header out of bounds";
    else
        for (uint32_t i = 0; i < h->nbuffers && !why; i++) {
            struct sspy_bufent e;

            memcpy(&e, v->data + h->table_offset + (uint64_t)i * sizeof(e), sizeof(e));
            if (e.offset > h->total_size || e.size > h->total_size - e.offset)
                why = "buffer table out of bounds";
        }
    if (!why)
        return 0;
bad:;
    char hex[2 * SS_ID_SIZE + 1];

    id_hex(&v->id, hex);
    PyErr_Format(PyExc_ValueError, "sealstore object %s is not a valid pickled object: %s",
                 hex, why);
    return -1;
}

static PyObject *mv_slice(PyObject *base, uint64_t off, uint64_t len)
{
    PyObject *s, *r;
    PyObject *a = PyLong_FromUnsignedLongLong(off), *b = PyLong_FromUnsignedLongLong(off + len);

    s = a && b ? PySlice_New(a, b, NULL) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    if (!s)
        return NULL;
    r = PyObject_GetItem(base, s);
    Py_DECREF(s);
    return r;
}

/*
 * Rebuild the object held by view v. Raw objects come back as one
 * read-only memoryview. Pickled ones, if their creator is trusted
 * (`trusted`: see check_trusted; else UntrustedObjectError, before
 * anything of the object is parsed): pickle.loads over a memoryview of
 * the in-band part, with read-only memoryview slices of v as buffers.
 * If bufs/h are given, they receive the buffer table (for explain).
 */
static PyObject *decode(sspy_view *v, PyObject *trusted, const char *op,
                        struct sspy_xbuf **bufs, struct sspy_header *hout)
{
    PyObject *base, *pk = NULL, *list = NULL, *kw = NULL, *args = NULL, *res = NULL;
    struct sspy_header h;

    base = PyMemoryView_FromObject((PyObject *)v);
    if (!base || !is_pickled(v))
        return base;
    if (check_trusted(trusted, op, &v->id, v->uid) < 0 || parse_layout(v, &h) < 0)
        goto out;
    if (hout)
        *hout = h;
    list = PyList_New(h.nbuffers);
    if (!list)
        goto out;
    if (bufs) {
        *bufs = PyMem_Calloc(h.nbuffers + 1, sizeof(**bufs));
        if (!*bufs) {
            PyErr_NoMemory();
            goto out;
        }
    }
    for (uint32_t i = 0; i < h.nbuffers; i++) {
        struct sspy_bufent e;
        PyObject *s;

        memcpy(&e, v->data + h.table_offset + (uint64_t)i * sizeof(e), sizeof(e));
        s = mv_slice(base, e.offset, e.size);
        if (!s)
            goto out;
        PyList_SET_ITEM(list, i, s);
        if (bufs)
            (*bufs)[i] = (struct sspy_xbuf){ .addr = v->data + e.offset,
                                             .len = (Py_ssize_t)e.size, .offset = e.offset };
    }
    pk = mv_slice(base, h.pickle_offset, h.pickle_size);
    if (pk)
        kw = Py_BuildValue("{s:O}", "buffers", list);
    if (kw)
        args = PyTuple_Pack(1, pk);
    if (args)
        res = PyObject_Call(sspy_loads, args, kw);
out:
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(pk);
    Py_XDECREF(list);
    Py_DECREF(base);
    return res;
}

static PyObject *client_get(sspy_client *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "id", "timeout", "trust", NULL };
    PyObject *idobj, *tobj = Py_None, *trobj = Py_None, *hold, *trusted, *res = NULL;
    double timeout;
    sspy_view *v;
    ss_id id;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO:get", kwlist, &idobj, &tobj, &trobj) ||
        parse_id(idobj, &id) < 0 || parse_timeout(tobj, &timeout) < 0 ||
        call_trust(self, trobj, &hold, &trusted) < 0)
        return NULL;
    v = get_view(self, &id, timeout, NULL);
    if (v) {
        res = decode(v, trusted, "get", NULL, NULL);
        Py_DECREF(v); /* what res holds on to keeps the reference */
    }
    Py_XDECREF(hold);
    return res;
}

static PyObject *client_explain(sspy_client *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "id", "timeout", "trust", NULL };
    PyObject *idobj, *tobj = Py_None, *trobj = Py_None, *hold, *trusted, *res, *x = NULL,
             *t = NULL;
    struct sspy_xbuf *bufs = NULL;
    struct sspy_header h = { 0 };
    double timeout, map_s, t0, unpickle_s;
    sspy_view *v;
    ss_id id;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO:explain", kwlist, &idobj, &tobj,
                                     &trobj) ||
        parse_id(idobj, &id) < 0 || parse_timeout(tobj, &timeout) < 0 ||
        call_trust(self, trobj, &hold, &trusted) < 0)
        return NULL;
    v = get_view(self, &id, timeout, &map_s);
    if (!v) {
        Py_XDECREF(hold);
        return NULL;
    }
    t0 = now_s();
    res = decode(v, trusted, "explain", &bufs, &h);
    Py_XDECREF(hold);
    unpickle_s = now_s() - t0;
    if (res && is_pickled(v)) {
        x = sspy_explanation(res, "pickle5", h.pickle_size, bufs, h.nbuffers, v->size);
    } else if (res) {
        struct sspy_xbuf raw = { .addr = v->data, .len = (Py_ssize_t)v->size };

        x = sspy_explanation(res, "raw", 0, &raw, 1, v->size);
    }
    PyMem_Free(bufs);
    if (x)
        t = id_bytes(&id);
    if (!t || set_new(x, "id", t) < 0 ||
        set_new(x, "map_seconds", PyFloat_FromDouble(map_s)) < 0 ||
        set_new(x, "unpickle_seconds", PyFloat_FromDouble(unpickle_s)) < 0)
        Py_CLEAR(x);
    Py_XDECREF(res);
    Py_DECREF(v);
    return x;
}

/* _size(id, timeout=None) -> int: the size of a sealed object (it is
 * mapped for a moment: share() needs the size for its Ref). */
static PyObject *client_size(sspy_client *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "id", "timeout", NULL };
    PyObject *idobj, *tobj = Py_None, *r;
    double timeout;
    sspy_view *v;
    ss_id id;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:share", kwlist, &idobj, &tobj) ||
        parse_id(idobj, &id) < 0 || parse_timeout(tobj, &timeout) < 0)
        return NULL;
    v = get_view(self, &id, timeout, NULL);
    if (!v)
        return NULL;
    r = PyLong_FromUnsignedLongLong(v->size);
    Py_DECREF(v);
    return r;
}

/*
 * Seal events, for get_async(): _subscribe() opens a second connection
 * that reports every seal (SS_EVENT_SEALED) and returns its pollable fd;
 * _event_next(fd) reads one event ((type, id, size), or None when none is
 * waiting); _unsubscribe(fd) closes it. The fd belongs to the caller.
 */
static PyObject *client_subscribe(sspy_client *self, PyObject *unused)
{
    int fd = -1, rc;

    if (op_begin(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = ss_subscribe(self->c, SS_EVENT_SEALED, &fd);
    Py_END_ALLOW_THREADS
    op_end(self);
    /* a second connection to the socket this client is connected through
     * finds nobody listening: the store is gone (as a call on the first
     * connection would soon find) */
    if (rc == -ECONNREFUSED || rc == -ENOENT)
        return raise_err(self, rc, "subscribe", NULL, NULL, 1);
    if (rc < 0)
        return raise_rc(self, rc, "subscribe", NULL, NULL);
    return PyLong_FromLong(fd);
}

/* A file descriptor argument: -1 with an exception if it is not one. */
static int fd_arg(PyObject *arg)
{
    long fd = PyLong_AsLong(arg);

    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%ld is not a file descriptor", fd);
        return -1;
    }
    return (int)fd;
}

static PyObject *mod_event_next(PyObject *m, PyObject *arg)
{
    ss_event ev;
    int fd = fd_arg(arg), rc;

    if (fd < 0)
        return NULL;
    rc = ss_event_next(fd, &ev);
    if (rc < 0)
        return raise_rc(NULL, rc, "event_next", NULL, NULL);
    if (rc == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(INK)", ev.type, id_bytes(&ev.id), (unsigned long long)ev.size);
}

static PyObject *mod_unsubscribe(PyObject *m, PyObject *arg)
{
    int fd = fd_arg(arg);

    if (fd < 0)
        return NULL;
    ss_unsubscribe(fd);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------- other calls */

static PyObject *client_delete(sspy_client *self, PyObject *idobj)
{
    ss_id id;
    int rc;

    if (parse_id(idobj, &id) < 0 || op_begin(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = ss_delete(self->c, &id);
    Py_END_ALLOW_THREADS
    op_end(self);
    if (rc == -ENOENT)
        return raise_missing(&id);
    if (rc == -EBUSY)
        return raise_rc(self, rc, "delete", &id, " (the object is not sealed yet)");
    if (rc < 0)
        return raise_rc(self, rc, "delete", &id, NULL);
    Py_RETURN_NONE;
}

static int contains_id(sspy_client *self, PyObject *idobj)
{
    ss_id id;
    int rc;

    if (parse_id(idobj, &id) < 0 || op_begin(self) < 0)
        return -1;
    Py_BEGIN_ALLOW_THREADS
    rc = ss_contains(self->c, &id);
    Py_END_ALLOW_THREADS
    op_end(self);
    if (rc < 0) {
        raise_rc(self, rc, "contains", &id, NULL);
        return -1;
    }
    return rc > 0;
}

static PyObject *client_contains(sspy_client *self, PyObject *idobj)
{
    int rc = contains_id(self, idobj);

    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

static PyObject *u64_list(const uint64_t *a, size_t n)
{
    PyObject *l = PyList_New((Py_ssize_t)n);

    for (size_t i = 0; l && i < n; i++) {
        PyObject *x = PyLong_FromUnsignedLongLong(a[i]);

        if (!x) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }
    return l;
}

static PyObject *client_stats(sspy_client *self, PyObject *unused)
{
    ss_stats s = { .size = sizeof(s), .version = SS_STATS_VERSION };
    PyObject *d;
    int rc;

    if (op_begin(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = ss_stats_get(self->c, &s);
    Py_END_ALLOW_THREADS
    op_end(self);
    if (rc < 0)
        return raise_rc(self, rc, "stats", NULL, NULL);
    d = PyDict_New();
    if (!d)
        return NULL;
#define U(f) set_new(d, #f, PyLong_FromUnsignedLongLong(s.f)) < 0
#define A(f) set_new(d, #f, u64_list(s.f, sizeof(s.f) / sizeof(s.f[0]))) < 0
    if (U(capacity) || U(resident_bytes) || U(objects) || U(sealed_objects) ||
        U(object_bytes) || A(bytes_by_backing) || U(small_live_bytes) ||
        U(small_used_bytes) || U(small_segment_bytes) || U(pool_ready_bytes) ||
        U(pool_hits) || U(pool_misses) || U(backing_fallbacks) || A(node_bytes) ||
        U(clients) || U(creates) || U(seals) || U(aborts) || U(gets) || U(releases) ||
        U(deletes) || U(evictions) || U(waits) || U(wait_timeouts) ||
        U(protocol_errors) || U(bookkeeping_bytes) || U(pool_yields) || U(seal_waits) ||
        U(parked_requests) || U(parked_bytes) || U(fd_deferred) || U(arena_bytes) ||
        U(arena_live_bytes) || U(remote_puts) || U(trusted_producers) ||
        U(trusted_bytes))
        Py_CLEAR(d);
#undef U
#undef A
    return d;
}

/* A new reference to the lifetime an object's flags say: "creator" or None. */
static PyObject *lifetime_object(uint32_t flags)
{
    if (flags & SS_LIFETIME_CREATOR)
        return PyUnicode_FromString("creator");
    Py_INCREF(Py_None);
    return Py_None;
}

static PyObject *info_dict(const ss_obj_info *e)
{
    char backing[sizeof(e->backing) + 1];
    PyObject *d = PyDict_New();

    memcpy(backing, e->backing, sizeof(e->backing));
    backing[sizeof(e->backing)] = 0;
    if (d && (set_new(d, "id", id_bytes(&e->id)) < 0 ||
              set_new(d, "state", PyUnicode_FromString(e->state == SS_OBJ_SEALED ? "sealed"
                                                                                  : "created")) < 0 ||
              set_new(d, "size", PyLong_FromUnsignedLongLong(e->size)) < 0 ||
              set_new(d, "meta_size", PyLong_FromUnsignedLongLong(e->meta_size)) < 0 ||
              set_new(d, "refs", PyLong_FromUnsignedLong(e->refs)) < 0 ||
              set_new(d, "node", PyLong_FromLong(e->node)) < 0 ||
              set_new(d, "backing", PyUnicode_FromString(backing)) < 0 ||
              set_new(d, "uid", uid_object(e->uid)) < 0 ||
              set_new(d, "lifetime", lifetime_object(e->flags)) < 0))
        Py_CLEAR(d);
    return d;
}

static PyObject *client_list(sspy_client *self, PyObject *unused)
{
    enum { BATCH = 256 };
    ss_obj_info *batch;
    uint64_t cursor = 0;
    PyObject *out = PyList_New(0);
    int n;

    if (!out)
        return NULL;
    batch = PyMem_Malloc(BATCH * sizeof(*batch));
    if (!batch) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    if (op_begin(self) < 0)
        goto fail;
    do {
        Py_BEGIN_ALLOW_THREADS
        n = ss_list(self->c, &cursor, batch, BATCH);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            op_end(self);
            raise_rc(self, n, "list", NULL, NULL);
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            PyObject *d = info_dict(&batch[i]);

            if (!d || PyList_Append(out, d) < 0) {
                Py_XDECREF(d);
                op_end(self);
                goto fail;
            }
            Py_DECREF(d);
        }
    } while (cursor != 0);
    op_end(self);
    PyMem_Free(batch);
    return out;
fail:
    PyMem_Free(batch);
    Py_DECREF(out);
    return NULL;
}

static PyObject *client_close(sspy_client *self, PyObject *unused)
{
    self->closed = 1;
    maybe_disconnect(self);
    Py_RETURN_NONE;
}

static PyObject *client_enter(sspy_client *self, PyObject *unused)
{
    if (op_begin(self) < 0)
        return NULL;
    op_end(self);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *client_exit(sspy_client *self, PyObject *args)
{
    return client_close(self, NULL);
}

static PyObject *client_get_closed(sspy_client *self, void *unused)
{
    return PyBool_FromLong(self->closed);
}

static PyObject *client_get_live_views(sspy_client *self, void *unused)
{
    return PyLong_FromSsize_t(self->pins);
}

static PyObject *client_get_path(sspy_client *self, void *unused)
{
    return Py_NewRef(self->path);
}

static PyObject *client_get_socket(sspy_client *self, void *unused)
{
    return Py_NewRef(self->sock);
}

static PyObject *client_get_gone(sspy_client *self, void *unused)
{
    return PyBool_FromLong(self->gone);
}

static PyObject *client_get_trust(sspy_client *self, void *unused)
{
    return self->trusted ? Py_NewRef(self->trusted) : PyUnicode_FromString("any");
}

/*
 * The socket ss_connect(NULL, ...) uses, for messages and Ref: the
 * SEALSTORE_SOCKET option (set or from the environment), else
 * $XDG_RUNTIME_DIR/sealstore.sock, else /tmp/sealstore-UID/sealstore.sock
 * (the library's order; see ss_connect in sealstore.h).
 */
static PyObject *default_socket(void)
{
    char opt[4096];
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n = ss_option_get(SS_OPT_SOCKET, opt, sizeof(opt));

    if (n > 0 && (size_t)n < sizeof(opt))
        return PyUnicode_DecodeFSDefault(opt);
    if (xdg && xdg[0] == '/')
        return PyUnicode_FromFormat("%s/sealstore.sock", xdg);
    return PyUnicode_FromFormat("/tmp/sealstore-%u/sealstore.sock", (unsigned)geteuid());
}

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "path", "embed", "trust", NULL };
    PyObject *pathobj = Py_None, *fs = NULL, *trobj = Py_None, *trusted, *sock;
    int embed = 0, rc;
    sspy_client *self;
    ss_client *c = NULL;
    const char *path;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Op$O:connect", kwlist, &pathobj, &embed,
                                     &trobj) ||
        parse_trust(trobj, &trusted) < 0)
        return NULL;
    if (pathobj != Py_None && !PyUnicode_FSConverter(pathobj, &fs)) {
        Py_XDECREF(trusted);
        return NULL;
    }
    path = fs ? PyBytes_AS_STRING(fs) : NULL;
    sock = fs ? PyUnicode_DecodeFSDefault(path) : default_socket();
    if (!sock) {
        Py_XDECREF(fs);
        Py_XDECREF(trusted);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = ss_connect(path, embed ? SS_CONNECT_EMBED : 0, &c);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyObject *what = PyUnicode_FromFormat("connect %S%s", sock,
                                              fs ? "" : " (the default socket: "
                                              "SEALSTORE_SOCKET, else $XDG_RUNTIME_DIR/"
                                              "sealstore.sock, else /tmp/sealstore-UID/)");

        if (what)
            raise_rc(NULL, rc, PyUnicode_AsUTF8(what), NULL,
                     (rc == -ENOENT || rc == -ECONNREFUSED) && !embed
                         ? " (is sealstored running there? embed=True starts a store in "
                           "this process)"
                         : NULL);
        Py_XDECREF(what);
        Py_XDECREF(fs);
        Py_XDECREF(trusted);
        Py_DECREF(sock);
        return NULL;
    }
    self = (sspy_client *)type->tp_alloc(type, 0);
    if (!self) {
        ss_disconnect(c);
        Py_XDECREF(fs);
        Py_XDECREF(trusted);
        Py_DECREF(sock);
        return NULL;
    }
    self->c = c;
    self->trusted = trusted;
    self->sock = sock;
    self->pid = getpid();
    self->path = fs ? Py_NewRef(sock) : Py_NewRef(Py_None);
    Py_XDECREF(fs);
    return (PyObject *)self;
}

static void client_dealloc(sspy_client *self)
{
    /* no view can be alive: each holds a reference to this object */
    if (self->c)
        ss_disconnect(self->c);
    Py_XDECREF(self->path);
    Py_XDECREF(self->sock);
    Py_XDECREF(self->trusted);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *client_repr(sspy_client *self)
{
    const char *state = self->closed ? (self->c ? "closing" : "closed") : "open";

    if (self->gone)
        return PyUnicode_FromFormat("<sealstore.Client path=%R gone: the store at %S died, "
                                    "%zd live views>", self->path, self->sock, self->pins);
    return PyUnicode_FromFormat("<sealstore.Client path=%R %s, %zd live views>", self->path,
                                state, self->pins);
}

static PySequenceMethods client_as_sequence = {
    .sq_contains = (objobjproc)contains_id,
};

/* Docstrings start with a text signature ("name($self, ...)\n--\n\n"), so
 * inspect.signature() and IDEs see each call's parameters. */
static PyMethodDef client_methods[] = {
    { "put", (PyCFunction)(void (*)(void))client_put, METH_VARARGS | METH_KEYWORDS,
      "put($self, /, obj, id=None, *, lifetime=None)\n--\n\n"
      "Store obj and return its 20-byte id (random unless given). bytes,\n"
      "bytearray and memoryview are stored raw (and come back as a read-only\n"
      "memoryview); anything else is pickled with protocol 5, its contiguous\n"
      "numpy arrays and other PickleBuffers out of band (zero copy on get).\n"
      "Raises ObjectExistsError if the id exists, StoreFullError if the store\n"
      "is full; pickling errors propagate and leave nothing behind.\n"
      "lifetime=\"creator\": the store deletes the object when this client's\n"
      "connection ends (close, exit, crash); None: until deleted." },
    { "put_many", (PyCFunction)(void (*)(void))client_put_many, METH_VARARGS | METH_KEYWORDS,
      "put_many($self, /, objs, ids=None, *, lifetime=None)\n--\n\n"
      "Store each object of objs as put() would, in order, and return the list\n"
      "of their ids (random unless ids, one per object, are given). Raw bytes\n"
      "and pickled objects up to 64 KiB travel many to a message (far fewer\n"
      "round trips than one put() each); larger pickled objects and\n"
      "non-contiguous memoryviews go through put()'s path at their place.\n"
      "Every item is tried: if any failed, raises the first failure's\n"
      "exception (what put() would raise for it: ObjectExistsError,\n"
      "StoreFullError, a pickling error...) after the others were stored,\n"
      "with .failed ({index: exception} of every failed item) and .ids (all\n"
      "the ids). lifetime applies to every object, as in put()." },
    { "_put", (PyCFunction)(void (*)(void))client_put_sized, METH_VARARGS | METH_KEYWORDS,
      "_put($self, /, obj, id=None, *, lifetime=None)\n--\n\n"
      "put(), returning (id, size of the stored object): what put_ref() uses." },
    { "get", (PyCFunction)(void (*)(void))client_get, METH_VARARGS | METH_KEYWORDS,
      "get($self, /, id, timeout=None, trust=None)\n--\n\n"
      "Fetch an object. timeout None (or 0) does not wait: KeyError if absent;\n"
      "a number of seconds waits for it to be sealed, then raises TimeoutError;\n"
      "math.inf waits forever. Arrays and memoryviews returned point into the\n"
      "store's memory (read-only) and keep it referenced until collected.\n"
      "A pickled object is decoded only if a trusted uid created it (unpickling\n"
      "runs code its creator chose): else UntrustedObjectError. trust: None for\n"
      "the client's trust, \"any\", or uids to trust (this process's always\n"
      "is). Raw objects come back whoever created them." },
    { "_size", (PyCFunction)(void (*)(void))client_size, METH_VARARGS | METH_KEYWORDS,
      "_size($self, /, id, timeout=None)\n--\n\n"
      "The size in bytes of a sealed object (KeyError/TimeoutError as get)." },
    { "_subscribe", (PyCFunction)client_subscribe, METH_NOARGS,
      "_subscribe($self, /)\n--\n\n"
      "Open a seal event subscription; returns its pollable fd (read it\n"
      "with _event_next, close it with _unsubscribe)." },
    { "delete", (PyCFunction)client_delete, METH_O,
      "delete($self, id, /)\n--\n\n"
      "Delete a sealed object (KeyError if absent). Memory still viewed by\n"
      "arrays is freed when they are collected." },
    { "contains", (PyCFunction)client_contains, METH_O,
      "contains($self, id, /)\n--\n\n"
      "Whether a sealed object with that id exists (also: id in client)." },
    { "explain", (PyCFunction)(void (*)(void))client_explain, METH_VARARGS | METH_KEYWORDS,
      "explain($self, /, id, timeout=None, trust=None)\n--\n\n"
      "Get the object, timing the mapping (ss_get) and the unpickling apart, and\n"
      "explain which of its bytes are zero-copy and which are rebuilt. trust as\n"
      "for get()." },
    { "stats", (PyCFunction)client_stats, METH_NOARGS,
      "stats($self, /)\n--\n\nA dict of store-wide counters." },
    { "list", (PyCFunction)client_list, METH_NOARGS,
      "list($self, /)\n--\n\n"
      "Every object, as dicts (id, state, size, meta_size, refs, node, backing,\n"
      "uid: the creator's, None if unknown; lifetime: \"creator\" or None, as\n"
      "put() was given it)." },
    { "close", (PyCFunction)client_close, METH_NOARGS,
      "close($self, /)\n--\n\n"
      "Refuse further calls. The connection itself (and an embedded store)\n"
      "stays until the last array or view obtained through it is collected." },
    { "__enter__", (PyCFunction)client_enter, METH_NOARGS,
      "__enter__($self, /)\n--\n\nThe client itself." },
    { "__exit__", (PyCFunction)client_exit, METH_VARARGS,
      "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\nclose()." },
    { NULL },
};

static PyGetSetDef client_getset[] = {
    { "closed", (getter)client_get_closed, NULL, "close() was called", NULL },
    { "live_views", (getter)client_get_live_views, NULL,
      "objects currently referenced by arrays/views from this client", NULL },
    { "path", (getter)client_get_path, NULL,
      "the socket path connect() was given (None: the default socket)", NULL },
    { "socket", (getter)client_get_socket, NULL, "the socket path this client connected to",
      NULL },
    { "gone", (getter)client_get_gone, NULL,
      "a call found the store dead (it raised StoreGoneError)", NULL },
    { "trust", (getter)client_get_trust, NULL,
      "whose pickled objects get() decodes: a frozenset of uids (this process's\n"
      "included), or \"any\"", NULL },
    { NULL },
};

PyTypeObject sspy_ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sealstore.Client",
    .tp_basicsize = sizeof(sspy_client),
    .tp_dealloc = (destructor)client_dealloc,
    .tp_repr = (reprfunc)client_repr,
    .tp_as_sequence = &client_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Client(path=None, embed=False, *, trust=None)\n--\n\n"
              "A connection to a sealstore store (same as sealstore.connect()).",
    .tp_methods = client_methods,
    .tp_getset = client_getset,
    .tp_new = client_new,
};

/* ---------------------------------------------------------------- module */

static PyObject *mod_connect(PyObject *m, PyObject *args, PyObject *kw)
{
    return client_new(&sspy_ClientType, args, kw);
}

static PyObject *mod_explain(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "obj", "client", NULL };
    PyObject *obj, *client = Py_None, *a, *r;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:explain", kwlist, &obj, &client))
        return NULL;
    if (client == Py_None)
        return sspy_explain_object(obj);
    if (!PyObject_TypeCheck(client, &sspy_ClientType)) {
        PyErr_Format(PyExc_TypeError, "client must be a sealstore.Client, not %.100s",
                     Py_TYPE(client)->tp_name);
        return NULL;
    }
    a = PyTuple_Pack(1, obj);
    if (!a)
        return NULL;
    r = client_explain((sspy_client *)client, a, NULL);
    Py_DECREF(a);
    return r;
}

static PyMethodDef mod_methods[] = {
    { "connect", (PyCFunction)(void (*)(void))mod_connect, METH_VARARGS | METH_KEYWORDS,
      "connect(path=None, embed=False, *, trust=None)\n--\n\n"
      "Connect to the store at path (None: $SEALSTORE_SOCKET, else\n"
      "$XDG_RUNTIME_DIR/sealstore.sock, else a per-user directory under /tmp).\n"
      "embed=True starts a store inside this process if none answers there;\n"
      "other processes may connect to it; it lives until this client's\n"
      "connection ends. trust: whose pickled objects get() decodes (unpickling\n"
      "runs code of the creator's choosing): None for this process's uid only,\n"
      "a uid or an iterable of uids to trust as well, or \"any\"." },
    { "explain", (PyCFunction)(void (*)(void))mod_explain, METH_VARARGS | METH_KEYWORDS,
      "explain(obj, client=None)\n--\n\n"
      "What put(obj) would store zero-copy (out-of-band buffers, mapped on\n"
      "get) and what in band (rebuilt by pickle.loads on every get), by path.\n"
      "With client, obj is an id: the stored object is fetched and the get\n"
      "is timed (map_seconds, unpickle_seconds)." },
    { "_event_next", (PyCFunction)mod_event_next, METH_O,
      "_event_next(fd, /)\n--\n\n"
      "The next event of a subscription, (type, id, size), or None if none\n"
      "is waiting (does not block)." },
    { "_unsubscribe", (PyCFunction)mod_unsubscribe, METH_O,
      "_unsubscribe(fd, /)\n--\n\nClose a subscription." },
    { NULL },
};

static struct PyModuleDef sealstore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sealstore._sealstore",
    .m_doc = "The C part of the sealstore package: import sealstore instead.",
    .m_size = -1,
    .m_methods = mod_methods,
};

static int add_exception(PyObject *m, const char *name, PyObject *bases, const char *doc,
                         PyObject **out)
{
    char full[64];

    snprintf(full, sizeof(full), "sealstore.%s", name);
    *out = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
    if (!*out)
        return -1;
    return PyModule_AddObjectRef(m, name, *out);
}

PyMODINIT_FUNC PyInit__sealstore(void)
{
    PyObject *m, *pickle, *bases, *dict, *str;

    if (PyType_Ready(&sspy_ClientType) < 0 || PyType_Ready(&sspy_ViewType) < 0 ||
        PyType_Ready(&sspy_ExplanationType) < 0)
        return NULL;
    pickle = PyImport_ImportModule("pickle");
    if (!pickle)
        return NULL;
    sspy_dumps = PyObject_GetAttrString(pickle, "dumps");
    sspy_loads = PyObject_GetAttrString(pickle, "loads");
    Py_DECREF(pickle);
    if (!sspy_dumps || !sspy_loads)
        return NULL;
    m = PyModule_Create(&sealstore_module);
    if (!m)
        return NULL;
    if (add_exception(m, "Error", PyExc_OSError,
                      "A sealstore failure; .errno holds the errno or SS_E_* code.",
                      &sspy_Error) < 0 ||
        add_exception(m, "StoreFullError", sspy_Error,
                      "The object does not fit in the store (ENOSPC). .requested: the size\n"
                      "asked for; .capacity, .resident, .object_bytes: the store's capacity,\n"
                      "what it holds in memory and its objects' bytes (None if unknown).",
                      &StoreFullError) < 0)
        goto fail;
    bases = PyTuple_Pack(2, sspy_Error, PyExc_ConnectionError);
    if (!bases || add_exception(m, "StoreGoneError", bases,
                                "The store this client was connected to is gone (it died or\n"
                                "was stopped: EPIPE, ECONNRESET, ENOTCONN). .socket names it;\n"
                                "connect again once it is back.",
                                &StoreGoneError) < 0) {
        Py_XDECREF(bases);
        goto fail;
    }
    Py_DECREF(bases);
    /* a KeyError (what a dict raises) whose str() shows the id in hex */
    dict = PyDict_New();
    str = PyCFunction_New(&notfound_str_def, NULL);
    if (str)
        Py_SETREF(str, PyInstanceMethod_New(str));
    if (!dict || !str || PyDict_SetItemString(dict, "__str__", str) < 0) {
        Py_XDECREF(dict);
        Py_XDECREF(str);
        goto fail;
    }
    Py_DECREF(str);
    ObjectNotFoundError = PyErr_NewExceptionWithDoc(
        "sealstore.ObjectNotFoundError",
        "No object with that id (a KeyError: args[0] and .id are the id's\n"
        "bytes; str() shows it in hex).", PyExc_KeyError, dict);
    Py_DECREF(dict);
    if (!ObjectNotFoundError ||
        PyModule_AddObjectRef(m, "ObjectNotFoundError", ObjectNotFoundError) < 0)
        goto fail;
    bases = PyTuple_Pack(2, sspy_Error, PyExc_FileExistsError);
    if (!bases || add_exception(m, "ObjectExistsError", bases,
                                "An object with that id exists already (EEXIST).",
                                &ObjectExistsError) < 0) {
        Py_XDECREF(bases);
        goto fail;
    }
    Py_DECREF(bases);
    bases = PyTuple_Pack(2, sspy_Error, PyExc_PermissionError);
    if (!bases || add_exception(m, "UntrustedObjectError", bases,
                                "get() refused to unpickle an object created by a uid this\n"
                                "client does not trust (EPERM): unpickling runs code of the\n"
                                "creator's choosing. .uid: the creator (None: unknown),\n"
                                ".id: the object. Pass trust= to connect() or get() to\n"
                                "accept it.",
                                &UntrustedObjectError) < 0) {
        Py_XDECREF(bases);
        goto fail;
    }
    Py_DECREF(bases);
    if (PyModule_AddObjectRef(m, "Client", (PyObject *)&sspy_ClientType) < 0 ||
        PyModule_AddObjectRef(m, "ObjectView", (PyObject *)&sspy_ViewType) < 0 ||
        PyModule_AddObjectRef(m, "Explanation", (PyObject *)&sspy_ExplanationType) < 0 ||
        PyModule_AddIntConstant(m, "ID_SIZE", SS_ID_SIZE) < 0 ||
        PyModule_AddStringConstant(m, "__version__", ss_version()) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
