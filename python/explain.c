/* SPDX-License-Identifier: MIT */
/*
 * explain(): which bytes of an object are zero-copy and which are rebuilt
 * by pickle.loads() on every get, and where in the object each one sits.
 *
 * How buffers are mapped to paths: pickle's buffer_callback gives the
 * out-of-band buffers in layout order, but not where they came from. So we
 * walk the object (dicts, lists, tuples, instances' __dict__) depth-first,
 * in pickle's order, and ask every buffer exporter we meet for its buffer:
 * an exporter whose buffer starts at the same address with the same length
 * as a pending out-of-band buffer is that buffer's source, and its path is
 * the buffer's path. (For a stored object the addresses are the buffers'
 * places in the mapping, which the arrays that pickle.loads rebuilt point
 * into.) A buffer produced by a custom __reduce__ from something the walk
 * does not reach keeps path None.
 *
 * In-band sizes: the in-band total is exact (the pickle's length). It is
 * split by path: a container that holds a buffer somewhere below is opened
 * up; any other part is measured by pickling it alone (its length minus the
 * PROTO/FRAME/STOP framing). What remains (keys, container opcodes, the
 * array headers pointing at the buffers) is reported as the root's
 * "structure" entry, so the entries add up to inband_bytes (objects shared
 * between parts are counted in each part, which the remainder absorbs; it
 * is clamped at 0).
 */
#include "sspy.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Parts at least this big get a note on how to make them zero-copy. */
#define SSPY_NOTE_MIN (64 * 1024)
/* Deeper structures are measured as one part. */
#define SSPY_MAX_DEPTH 64

struct walk {
    struct sspy_xbuf *bufs;
    Py_ssize_t n;
    Py_ssize_t unmatched;
    PyObject *seen;    /* set of id() of visited objects */
    PyObject *inband;  /* list of entry dicts */
    PyObject *scratch; /* buffer_callback target when measuring */
    uint64_t inband_sum;
    int depth;
    int frame_col;     /* the object walked next is a column of a DataFrame */
};

/* d[key] = v, consuming the new reference v (NULL: error). */
static int set_new(PyObject *d, const char *key, PyObject *v)
{
    int rc = v ? PyDict_SetItemString(d, key, v) : -1;

    Py_XDECREF(v);
    return rc;
}

static PyObject *type_name(PyObject *o)
{
    PyObject *t = (PyObject *)Py_TYPE(o), *r = NULL;
    PyObject *mod = PyObject_GetAttrString(t, "__module__");
    PyObject *qn = PyObject_GetAttrString(t, "__qualname__");

    if (mod && qn && PyUnicode_Check(mod) && PyUnicode_Check(qn))
        r = PyUnicode_CompareWithASCIIString(mod, "builtins") == 0
                ? Py_NewRef(qn)
                : PyUnicode_FromFormat("%U.%U", mod, qn);
    Py_XDECREF(mod);
    Py_XDECREF(qn);
    if (!r) {
        PyErr_Clear();
        r = PyUnicode_FromString(Py_TYPE(o)->tp_name);
    }
    return r;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The out-of-band buffer [addr, addr + len) lies in (a column of a
 * DataFrame block is part of the block's buffer), or NULL. */
static struct sspy_xbuf *oob_holding(const struct walk *w, const void *addr, Py_ssize_t len)
{
    const char *a = addr;

    for (Py_ssize_t i = 0; i < w->n; i++)
        if (w->bufs[i].addr <= a && a + len <= w->bufs[i].addr + w->bufs[i].len)
            return &w->bufs[i];
    return NULL;
}

/*
 * In-band bytes of o pickled alone, without the framing, and the time
 * pickle.loads takes to rebuild it (*secs). Pickled alone, a part may
 * give buffers out of band that are not the object's: an array that was
 * pickled in band at put (not contiguous then) comes back from a get
 * contiguous. Those count as in-band bytes: that is where they are.
 */
static int measure(struct walk *w, PyObject *o, uint64_t *out, double *secs)
{
    PyObject *p = sspy_pickle(o, &w->scratch), *kw = NULL, *args = NULL, *r = NULL;
    Py_ssize_t len, ovh = 3; /* PROTO 5 (2 bytes) + STOP */
    uint64_t extra = 0;
    double t0;

    if (!p)
        return -1;
    len = PyBytes_GET_SIZE(p);
    if (len > 2 && (unsigned char)PyBytes_AS_STRING(p)[2] == 0x95) /* FRAME */
        ovh += 9;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(w->scratch); i++) {
        const Py_buffer *v = PyPickleBuffer_GetBuffer(PyList_GET_ITEM(w->scratch, i));

        if (!v)
            goto out;
        if (!oob_holding(w, v->buf, v->len))
            extra += (uint64_t)v->len;
    }
    *out = (len > ovh ? (uint64_t)(len - ovh) : 0) + extra;
    if (extra > 0) {
        /* time the get as it is: those buffers in band, copied by loads */
        PyObject *in = PyObject_CallFunction(sspy_dumps, "Oi", o, 5);

        if (!in)
            goto out;
        Py_SETREF(p, in);
        Py_CLEAR(w->scratch);
        w->scratch = PyList_New(0);
        if (!w->scratch)
            goto out;
    }
    kw = Py_BuildValue("{s:O}", "buffers", w->scratch);
    args = kw ? PyTuple_Pack(1, p) : NULL;
    t0 = now_s();
    r = args ? PyObject_Call(sspy_loads, args, kw) : NULL;
    *secs = now_s() - t0;
out:
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_DECREF(p);
    Py_CLEAR(w->scratch);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int has_attr(PyObject *o, const char *name)
{
    int r = PyObject_HasAttrString(o, name);

    return r > 0;
}

/* Advice for a big in-band part, or NULL. */
static const char *advice(PyObject *o)
{
    if (PyBytes_Check(o) || PyByteArray_Check(o))
        return "copied on every get: store it as a numpy array (np.frombuffer) or put() "
               "it on its own (raw, zero-copy)";
    if (PyUnicode_Check(o))
        return "a large str is decoded and copied on every get";
    if (PyList_Check(o) || PyTuple_Check(o))
        return "rebuilt item by item on every get: a numpy array of the items would be "
               "zero-copy";
    if (has_attr(o, "dtype") && has_attr(o, "shape")) {
        PyObject *dt = PyObject_GetAttrString(o, "dtype");
        PyObject *has_obj = dt ? PyObject_GetAttrString(dt, "hasobject") : NULL;
        int objs = has_obj && PyObject_IsTrue(has_obj) > 0;

        Py_XDECREF(has_obj);
        Py_XDECREF(dt);
        PyErr_Clear();
        if (objs)
            return "dtype=object: every element is pickled on its own at put and rebuilt on "
                   "every get; a fixed-width dtype (numbers, 'U<n>'/'S<n>' strings) or a "
                   "categorical makes it one zero-copy buffer";
        return "copied at put and rebuilt on every get: it was pickled in band because it "
               "was not contiguous when put (a slice like a[::2], a transpose); "
               "np.ascontiguousarray(a) before put makes it zero-copy";
    }
    if (PyDict_Check(o))
        return "rebuilt entry by entry on every get";
    return "rebuilt by pickle on every get";
}

/* An in-band part's type; an array's with its dtype: "numpy.ndarray[object]". */
static PyObject *part_type(PyObject *o)
{
    PyObject *t = type_name(o), *dt, *r;

    if (!t || !has_attr(o, "dtype") || !has_attr(o, "shape"))
        return t;
    dt = PyObject_GetAttrString(o, "dtype");
    r = dt ? PyUnicode_FromFormat("%U[%S]", t, dt) : NULL;
    Py_XDECREF(dt);
    if (!r) {
        PyErr_Clear();
        return t;
    }
    Py_DECREF(t);
    return r;
}

/* Add an in-band entry; secs < 0: not timed. */
static int emit(struct walk *w, PyObject *o, PyObject *path, uint64_t bytes, double secs)
{
    PyObject *e = PyDict_New();
    Py_ssize_t items = -1;
    int rc = -1;

    if (!e)
        return -1;
    if (PyDict_Check(o) || PyList_Check(o) || PyTuple_Check(o) || PyAnySet_Check(o))
        items = PyObject_Length(o);
    if (set_new(e, "path", PySequence_List(path)) < 0 || set_new(e, "type", part_type(o)) < 0 ||
        set_new(e, "bytes", PyLong_FromUnsignedLongLong(bytes)) < 0)
        goto out;
    if (items >= 0 && set_new(e, "items", PyLong_FromSsize_t(items)) < 0)
        goto out;
    if (secs >= 0 && set_new(e, "seconds", PyFloat_FromDouble(secs)) < 0)
        goto out;
    if (bytes >= SSPY_NOTE_MIN && set_new(e, "note", PyUnicode_FromString(advice(o))) < 0)
        goto out;
    w->inband_sum += bytes;
    rc = PyList_Append(w->inband, e);
out:
    Py_DECREF(e);
    return rc;
}

/* A DataFrame column's buffer lies in its block's: the block's buffer
 * gets the path of the frame with the list of its columns as last step
 * (df[['a', 'c']]). 1, or -1 on error. */
static int match_column(struct sspy_xbuf *b, PyObject *o, PyObject *path)
{
    Py_ssize_t n = PyList_GET_SIZE(path);
    PyObject *col = PyList_GET_ITEM(path, n - 1), *cols;

    if (b->path) { /* another column of that block */
        cols = PyList_GET_ITEM(b->path, PyList_GET_SIZE(b->path) - 1);
        return PyList_Check(cols) && PyList_Append(cols, col) < 0 ? -1 : 1;
    }
    b->path = PyList_GetSlice(path, 0, n - 1);
    cols = PyList_New(1);
    if (!b->path || !cols) {
        Py_XDECREF(cols);
        return -1;
    }
    PyList_SET_ITEM(cols, 0, Py_NewRef(col));
    if (PyList_Append(b->path, cols) < 0) {
        Py_DECREF(cols);
        return -1;
    }
    Py_DECREF(cols);
    b->obj = Py_NewRef(o);
    return 2; /* newly matched */
}

/* Is o the source of a pending buffer? 1 matched, 2 an exporter that is
 * not (in-band data), 0 not an exporter, -1 error. A DataFrame column
 * (col) matches the buffer it lies in. */
static int match_buffer(struct walk *w, PyObject *o, PyObject *path, int col)
{
    struct sspy_xbuf *in;
    Py_buffer v;
    int r = 2;

    if (!PyObject_CheckBuffer(o))
        return 0;
    if (PyObject_GetBuffer(o, &v, PyBUF_FULL_RO) < 0) {
        PyErr_Clear();
        return 2;
    }
    for (Py_ssize_t i = 0; i < w->n; i++) {
        struct sspy_xbuf *b = &w->bufs[i];

        if (!b->path && b->addr == (const char *)v.buf && b->len == v.len) {
            b->path = PySequence_List(path);
            if (!b->path) {
                r = -1;
                break;
            }
            b->obj = Py_NewRef(o);
            w->unmatched--;
            r = 1;
            break;
        }
    }
    if (r == 2 && col && PyList_GET_SIZE(path) > 0 && (in = oob_holding(w, v.buf, v.len))) {
        r = match_column(in, o, path);
        if (r == 2) {
            w->unmatched--;
            r = 1;
        }
    }
    PyBuffer_Release(&v);
    return r;
}

/* One step of a path: dict keys as they are (str, int, ... else repr),
 * list/tuple indexes as int, attributes as ".name". */
static PyObject *key_elem(PyObject *k)
{
    if (PyUnicode_Check(k) || PyLong_Check(k) || PyFloat_Check(k) || PyBytes_Check(k) ||
        k == Py_None || PyBool_Check(k))
        return Py_NewRef(k);
    return PyObject_Repr(k);
}

/* items.append((elem, v)) for a new reference elem (NULL: error). */
static int add_pair(PyObject *items, PyObject *elem, PyObject *v)
{
    PyObject *pair = elem ? PyTuple_Pack(2, elem, v) : NULL;
    int rc = pair ? PyList_Append(items, pair) : -1;

    Py_XDECREF(elem);
    Py_XDECREF(pair);
    return rc;
}

/* The attributes in a dict (an instance's __dict__, or a state dict) as
 * (".name", value) pairs; other keys as they are. */
static int add_attrs(PyObject *items, PyObject *d)
{
    PyObject *k, *v;
    Py_ssize_t pos = 0;

    while (PyDict_Next(d, &pos, &k, &v))
        if (add_pair(items, PyUnicode_Check(k) ? PyUnicode_FromFormat(".%U", k) : key_elem(k),
                     v) < 0)
            return -1;
    return 0;
}

/* The __slots__ attributes set on o, from every class of its MRO. */
static int add_slots(PyObject *items, PyObject *o)
{
    PyObject *mro = Py_TYPE(o)->tp_mro;

    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *slots = PyDict_GetItemString(((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_dict,
                                               "__slots__");
        PyObject *names;

        if (!slots)
            continue;
        names = PyUnicode_Check(slots) ? PyTuple_Pack(1, slots) : PySequence_Tuple(slots);
        if (!names)
            return -1;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(names); k++) {
            PyObject *name = PyTuple_GET_ITEM(names, k), *v;

            if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "__dict__") == 0 ||
                PyUnicode_CompareWithASCIIString(name, "__weakref__") == 0)
                continue;
            v = PyObject_GetAttr(o, name);
            if (!v) {
                PyErr_Clear(); /* unset, __dict__, __weakref__, a mangled name */
                continue;
            }
            if (add_pair(items, PyUnicode_FromFormat(".%U", name), v) < 0) {
                Py_DECREF(v);
                Py_DECREF(names);
                return -1;
            }
            Py_DECREF(v);
        }
        Py_DECREF(names);
    }
    return 0;
}

/* An instance of a class of a program (not builtins): its parts are its
 * attributes, or what its __reduce_ex__ gives pickle. */
static int is_instance(PyObject *o)
{
    PyObject *mod;
    int builtin;

    if (PyType_Check(o) || PyModule_Check(o) || PyCallable_Check(o) || PyObject_CheckBuffer(o))
        return 0;
    mod = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "__module__");
    builtin = !mod || !PyUnicode_Check(mod) ||
              PyUnicode_CompareWithASCIIString(mod, "builtins") == 0;
    Py_XDECREF(mod);
    PyErr_Clear();
    return !builtin;
}

/* The parts pickle writes for an instance: what its __reduce_ex__(5)
 * gives, the arguments (classes aside: copyreg's __newobj__ takes the
 * class) as "(arg N)" and the state: a dict (or a (dict, slots) pair) of
 * attributes as ".name", anything else as "(state)". 0, or -1 with an
 * exception when __reduce_ex__ fails. */
static int reduce_parts(PyObject *items, PyObject *o)
{
    PyObject *red = PyObject_CallMethod(o, "__reduce_ex__", "i", 5), *args, *st;
    int rc = 0;

    if (!red)
        return -1;
    if (!PyTuple_Check(red) || PyTuple_GET_SIZE(red) < 2) {
        Py_DECREF(red);
        return 0;
    }
    args = PyTuple_GET_ITEM(red, 1);
    st = PyTuple_GET_SIZE(red) >= 3 ? PyTuple_GET_ITEM(red, 2) : Py_None;
    for (Py_ssize_t i = 0; rc == 0 && PyTuple_Check(args) && i < PyTuple_GET_SIZE(args); i++)
        if (!PyType_Check(PyTuple_GET_ITEM(args, i)))
            rc = add_pair(items, PyUnicode_FromFormat("(arg %zd)", i), PyTuple_GET_ITEM(args, i));
    if (rc == 0 && PyDict_Check(st)) {
        rc = add_attrs(items, st);
    } else if (rc == 0 && PyTuple_Check(st) && PyTuple_GET_SIZE(st) == 2 &&
               (PyTuple_GET_ITEM(st, 0) == Py_None || PyDict_Check(PyTuple_GET_ITEM(st, 0))) &&
               PyDict_Check(PyTuple_GET_ITEM(st, 1))) {
        if (PyTuple_GET_ITEM(st, 0) != Py_None)
            rc = add_attrs(items, PyTuple_GET_ITEM(st, 0));
        if (rc == 0)
            rc = add_attrs(items, PyTuple_GET_ITEM(st, 1));
    } else if (rc == 0 && st != Py_None) {
        rc = add_pair(items, PyUnicode_FromString("(state)"), st);
    }
    Py_DECREF(red);
    return rc;
}

/*
 * An instance's parts, as pickle sees them (reduce_parts); if its
 * __reduce_ex__ fails, its __dict__ and __slots__ attributes. Py_None
 * when there are none.
 */
static PyObject *instance_parts(PyObject *o)
{
    PyObject *items = PyList_New(0), *d;

    if (!items)
        return NULL;
    if (reduce_parts(items, o) < 0) {
        PyErr_Clear();
        Py_SETREF(items, PyList_New(0));
        if (!items)
            return NULL;
        d = Py_TYPE(o)->tp_dictoffset != 0 ? PyObject_GetAttrString(o, "__dict__") : NULL;
        PyErr_Clear();
        if ((d && PyDict_Check(d) && add_attrs(items, d) < 0) || add_slots(items, o) < 0) {
            Py_XDECREF(d);
            Py_DECREF(items);
            return NULL;
        }
        Py_XDECREF(d);
    }
    if (PyList_GET_SIZE(items) == 0) {
        Py_DECREF(items);
        return Py_NewRef(Py_None);
    }
    return items;
}

/* A pandas DataFrame? Its parts are its columns (frame_parts). */
static int is_dataframe(PyObject *o)
{
    PyObject *mod = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "__module__");
    const char *m = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : NULL;
    const char *name = strrchr(Py_TYPE(o)->tp_name, '.');
    int r = m && strncmp(m, "pandas.", 7) == 0 &&
            strcmp(name ? name + 1 : Py_TYPE(o)->tp_name, "DataFrame") == 0;

    Py_XDECREF(mod);
    PyErr_Clear();
    return r;
}

/*
 * A DataFrame's parts, so that explain() speaks of columns: each column's
 * values (df._mgr.iget_values(i): a numpy array, a view of its block, or
 * an extension array such as a Categorical) under its name, then
 * ".index". NULL without an exception when the frame does not look like
 * pandas 1.x/2.x (the caller falls back to the generic parts).
 */
static PyObject *frame_parts(PyObject *o)
{
    PyObject *items = PyList_New(0), *cols = PyObject_GetAttrString(o, "columns");
    PyObject *mgr = PyObject_GetAttrString(o, "_mgr"), *idx = PyObject_GetAttrString(o, "index");
    Py_ssize_t n = cols ? PyObject_Length(cols) : -1;

    for (Py_ssize_t i = 0; items && mgr && idx && i < n; i++) {
        PyObject *name = PySequence_GetItem(cols, i);
        PyObject *v = PyObject_CallMethod(mgr, "iget_values", "n", i);

        if (!name || !v || add_pair(items, key_elem(name), v) < 0)
            Py_CLEAR(items);
        Py_XDECREF(name);
        Py_XDECREF(v);
    }
    if (items && (n < 0 || !mgr || !idx || add_pair(items, PyUnicode_FromString(".index"), idx) < 0))
        Py_CLEAR(items);
    Py_XDECREF(cols);
    Py_XDECREF(mgr);
    Py_XDECREF(idx);
    PyErr_Clear();
    return items;
}

/* Children of o as a list of (path element, child) pairs, or Py_None when
 * o is a leaf. */
static PyObject *children(PyObject *o)
{
    PyObject *out, *items = NULL;

    if (PyDict_Check(o)) {
        items = PyDict_Items(o);
    } else if (PyList_Check(o) || PyTuple_Check(o)) {
        Py_ssize_t n = PySequence_Size(o);

        items = PyList_New(n);
        for (Py_ssize_t i = 0; items && i < n; i++) {
            PyObject *x = PySequence_GetItem(o, i), *pair = NULL;

            if (x)
                pair = Py_BuildValue("(nN)", i, x);
            if (!pair) {
                Py_CLEAR(items);
                break;
            }
            PyList_SET_ITEM(items, i, pair);
        }
        return items;
    } else if (is_dataframe(o) && (items = frame_parts(o)) != NULL) {
        return items;
    } else if (is_instance(o)) {
        return instance_parts(o);
    } else {
        return Py_NewRef(Py_None);
    }
    if (!items)
        return NULL;
    out = PyList_New(PyList_GET_SIZE(items));
    for (Py_ssize_t i = 0; out && i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        PyObject *np = Py_BuildValue("(NO)", key_elem(PyTuple_GET_ITEM(pair, 0)),
                                     PyTuple_GET_ITEM(pair, 1));

        if (!np) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, np);
    }
    Py_DECREF(items);
    return out;
}

static int emit_parts(struct walk *w, PyObject *kids, const int *has, PyObject *path);

/*
 * Measure o (at path) and add it as an in-band entry. A large instance of
 * a program's class is opened, so the report names the attribute that
 * carries the bytes: its parts become entries of their own, and its own
 * entry keeps what is left (class reference, opcodes).
 */
static int emit_part(struct walk *w, PyObject *o, PyObject *path)
{
    PyObject *kids;
    uint64_t bytes, before;
    double secs;
    int rc;

    if (measure(w, o, &bytes, &secs) < 0) {
        /* not picklable on its own (a part pickle reaches only through
         * its container's __reduce__): its bytes stay with the container */
        PyErr_Clear();
        Py_CLEAR(w->scratch);
        return emit(w, o, path, 0, -1);
    }
    if (bytes < SSPY_NOTE_MIN || w->depth >= SSPY_MAX_DEPTH || !is_instance(o))
        return emit(w, o, path, bytes, secs);
    kids = children(o);
    if (!kids)
        return -1;
    if (kids == Py_None) {
        Py_DECREF(kids);
        return emit(w, o, path, bytes, secs);
    }
    before = w->inband_sum;
    w->depth++;
    rc = emit_parts(w, kids, NULL, path);
    w->depth--;
    Py_DECREF(kids);
    if (rc < 0)
        return -1;
    before = w->inband_sum - before; /* the parts' bytes */
    return emit(w, o, path, bytes > before ? bytes - before : 0, -1);
}

/* Measure and add as in-band entries the children (kids, as children()
 * gives them) of the container at path whose has[i] is 0 (NULL: all). */
static int emit_parts(struct walk *w, PyObject *kids, const int *has, PyObject *path)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(kids); i++) {
        PyObject *pair = PyList_GET_ITEM(kids, i);

        if (has && has[i] != 0)
            continue;
        if (PyList_Append(path, PyTuple_GET_ITEM(pair, 0)) < 0 ||
            emit_part(w, PyTuple_GET_ITEM(pair, 1), path) < 0 ||
            PyList_SetSlice(path, PyList_GET_SIZE(path) - 1, PyList_GET_SIZE(path), NULL) < 0)
            return -1;
    }
    return 0;
}

/*
 * Walk o at path. Returns 1 if a pending buffer was found in it, 0 if not
 * (the caller measures it as an in-band part), 2 if it was seen before
 * (pickle writes a memo reference: nothing to count), -1 on error.
 */
static int walk(struct walk *w, PyObject *o, PyObject *path)
{
    PyObject *kids, *key;
    int *has = NULL, any = 0, r;
    Py_ssize_t n;

    int col = w->frame_col, frame;

    w->frame_col = 0;
    if ((w->unmatched == 0 && !col) || w->depth >= SSPY_MAX_DEPTH)
        return 0;
    if (!(o == Py_None || PyBool_Check(o) || PyLong_CheckExact(o) || PyFloat_CheckExact(o))) {
        key = PyLong_FromVoidPtr(o);
        if (!key)
            return -1;
        r = PySet_Contains(w->seen, key);
        if (r == 0)
            r = PySet_Add(w->seen, key);
        else if (r > 0)
            r = 2;
        Py_DECREF(key);
        if (r != 0)
            return r;
    }
    r = match_buffer(w, o, path, col);
    if (r != 0)
        return r == 2 ? 0 : r;
    kids = children(o);
    if (!kids)
        return -1;
    if (kids == Py_None) {
        Py_DECREF(kids);
        return 0;
    }
    frame = is_dataframe(o);
    n = PyList_GET_SIZE(kids);
    has = PyMem_Calloc((size_t)n + 1, sizeof(*has));
    if (!has) {
        Py_DECREF(kids);
        PyErr_NoMemory();
        return -1;
    }
    w->depth++;
    for (Py_ssize_t i = 0; i < n && any >= 0; i++) {
        PyObject *pair = PyList_GET_ITEM(kids, i);

        if (PyList_Append(path, PyTuple_GET_ITEM(pair, 0)) < 0) {
            any = -1;
            break;
        }
        w->frame_col = frame;
        has[i] = walk(w, PyTuple_GET_ITEM(pair, 1), path);
        if (PyList_SetSlice(path, PyList_GET_SIZE(path) - 1, PyList_GET_SIZE(path), NULL) < 0 ||
            has[i] < 0)
            any = -1;
        else if (has[i] == 1)
            any = 1;
    }
    w->depth--;
    /* opened up: measure the siblings that hold no buffer */
    if (any == 1 && emit_parts(w, kids, has, path) < 0)
        any = -1;
    PyMem_Free(has);
    Py_DECREF(kids);
    return any;
}

/* dtype and shape of a buffer's source: numpy-like .dtype/.shape, else
 * the buffer's own format and shape. */
static int describe_buffer(PyObject *e, const struct sspy_xbuf *b)
{
    PyObject *dtype = NULL, *shape = NULL;
    const Py_buffer *v = b->view;
    Py_buffer own;
    int got = 0;

    if (b->obj && has_attr(b->obj, "dtype") && has_attr(b->obj, "shape")) {
        PyObject *dt = PyObject_GetAttrString(b->obj, "dtype");

        dtype = dt ? PyObject_Str(dt) : NULL;
        Py_XDECREF(dt);
        shape = dtype ? PyObject_GetAttrString(b->obj, "shape") : NULL;
        if (!shape)
            return -1;
    } else {
        if (!v && b->obj && PyObject_GetBuffer(b->obj, &own, PyBUF_FULL_RO) == 0) {
            v = &own;
            got = 1;
        }
        PyErr_Clear();
        if (v) {
            dtype = PyUnicode_FromString(v->format ? v->format : "B");
            shape = PyTuple_New(v->ndim);
            for (int i = 0; shape && dtype && i < v->ndim; i++)
                PyTuple_SET_ITEM(shape, i, PyLong_FromSsize_t(v->shape ? v->shape[i]
                                                                        : v->len / v->itemsize));
            if (shape && v->ndim == 0 && v->len != v->itemsize) {
                Py_DECREF(shape);
                shape = Py_BuildValue("(n)", v->len);
            }
        } else {
            dtype = Py_NewRef(Py_None);
            shape = Py_NewRef(Py_None);
        }
        if (got)
            PyBuffer_Release(&own);
        if (!dtype || !shape) {
            Py_XDECREF(dtype);
            Py_XDECREF(shape);
            return -1;
        }
    }
    if (set_new(e, "dtype", dtype) < 0 || set_new(e, "shape", shape) < 0)
        return -1;
    return 0;
}

PyObject *sspy_explanation(PyObject *root, const char *kind, uint64_t inband_bytes,
                           struct sspy_xbuf *bufs, Py_ssize_t n, uint64_t object_bytes)
{
    struct walk w = { .bufs = bufs, .n = n, .unmatched = n };
    PyObject *x = NULL, *path = NULL, *blist = NULL;
    uint64_t zc = 0;
    int r;

    w.seen = PySet_New(NULL);
    w.inband = PyList_New(0);
    path = PyList_New(0);
    if (!w.seen || !w.inband || !path)
        goto out;
    r = walk(&w, root, path);
    if (r < 0)
        goto out;
    if (strcmp(kind, "raw") != 0) {
        /* the rest: the root as a whole, or its structure around the parts */
        uint64_t rest;
        PyObject *e, *tn;

        if (r != 1) {
            /* nothing below is zero-copy: still break the top level down */
            PyObject *kids = children(root);

            if (!kids)
                goto out;
            r = kids != Py_None && PyList_GET_SIZE(kids) > 0;
            if (r && emit_parts(&w, kids, NULL, path) < 0) {
                Py_DECREF(kids);
                goto out;
            }
            Py_DECREF(kids);
            if (!r) {
                uint64_t ignored;
                double secs;

                if (measure(&w, root, &ignored, &secs) < 0 ||
                    emit(&w, root, path, inband_bytes, secs) < 0)
                    goto out;
            }
        }
        rest = inband_bytes > w.inband_sum ? inband_bytes - w.inband_sum : 0;
        if (r == 1 && (rest > 0 || PyList_GET_SIZE(w.inband) == 0)) {
            e = PyDict_New();
            tn = type_name(root);
            if (!e || !tn || set_new(e, "path", PyList_New(0)) < 0 ||
                set_new(e, "type", PyUnicode_FromFormat("%U structure", tn)) < 0 ||
                set_new(e, "bytes", PyLong_FromUnsignedLongLong(rest)) < 0 ||
                set_new(e, "note", PyUnicode_FromString(
                                       "containers, keys, opcodes and the headers of "
                                       "out-of-band buffers")) < 0 ||
                PyList_Append(w.inband, e) < 0) {
                Py_XDECREF(e);
                Py_XDECREF(tn);
                goto out;
            }
            Py_DECREF(e);
            Py_DECREF(tn);
        }
    }
    blist = PyList_New(n);
    if (!blist)
        goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyDict_New();

        if (!e)
            goto out;
        PyList_SET_ITEM(blist, i, e);
        zc += (uint64_t)bufs[i].len;
        if (set_new(e, "path", bufs[i].path ? Py_NewRef(bufs[i].path) : Py_NewRef(Py_None)) < 0 ||
            set_new(e, "type", bufs[i].obj ? type_name(bufs[i].obj)
                                           : PyUnicode_FromString("PickleBuffer")) < 0 ||
            describe_buffer(e, &bufs[i]) < 0 ||
            set_new(e, "bytes", PyLong_FromSsize_t(bufs[i].len)) < 0 ||
            set_new(e, "offset", PyLong_FromUnsignedLongLong(bufs[i].offset)) < 0)
            goto out;
    }
    x = PyObject_CallNoArgs((PyObject *)&sspy_ExplanationType);
    if (!x)
        goto out;
    if (set_new(x, "kind", PyUnicode_FromString(kind)) < 0 ||
        set_new(x, "type", type_name(root)) < 0 ||
        set_new(x, "zero_copy_bytes", PyLong_FromUnsignedLongLong(zc)) < 0 ||
        set_new(x, "inband_bytes", PyLong_FromUnsignedLongLong(inband_bytes)) < 0 ||
        set_new(x, "object_bytes", PyLong_FromUnsignedLongLong(object_bytes)) < 0 ||
        PyDict_SetItemString(x, "buffers", blist) < 0 ||
        PyDict_SetItemString(x, "inband", w.inband) < 0)
        Py_CLEAR(x);
out:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_CLEAR(bufs[i].path);
        Py_CLEAR(bufs[i].obj);
    }
    Py_XDECREF(blist);
    Py_XDECREF(path);
    Py_XDECREF(w.seen);
    Py_XDECREF(w.inband);
    Py_XDECREF(w.scratch);
    return x;
}

PyObject *sspy_explain_object(PyObject *obj)
{
    PyObject *pk, *pbs = NULL, *x = NULL;
    struct sspy_xbuf *bufs = NULL;
    Py_ssize_t n, *lens = NULL;
    uint64_t *offs = NULL, table_off, total;

    if (sspy_is_raw(obj)) {
        struct sspy_xbuf b = { 0 };
        Py_buffer v;

        if (PyObject_GetBuffer(obj, &v, PyBUF_FULL_RO) < 0)
            return NULL;
        b.addr = v.buf;
        b.len = v.len;
        PyBuffer_Release(&v);
        return sspy_explanation(obj, "raw", 0, &b, 1, (uint64_t)b.len);
    }
    pk = sspy_pickle(obj, &pbs);
    if (!pk)
        return NULL;
    n = PyList_GET_SIZE(pbs);
    bufs = PyMem_Calloc((size_t)n + 1, sizeof(*bufs));
    lens = PyMem_Calloc((size_t)n + 1, sizeof(*lens));
    offs = PyMem_Calloc((size_t)n + 1, sizeof(*offs));
    if (!bufs || !lens || !offs) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_buffer *v = PyPickleBuffer_GetBuffer(PyList_GET_ITEM(pbs, i));

        if (!v)
            goto out;
        bufs[i].addr = v->buf;
        bufs[i].len = lens[i] = v->len;
        bufs[i].view = v;
    }
    total = sspy_layout((uint64_t)PyBytes_GET_SIZE(pk), n, lens, offs, &table_off);
    if (!total)
        goto out;
    for (Py_ssize_t i = 0; i < n; i++)
        bufs[i].offset = offs[i];
    x = sspy_explanation(obj, "pickle5", (uint64_t)PyBytes_GET_SIZE(pk), bufs, n, total);
out:
    PyMem_Free(bufs);
    PyMem_Free(lens);
    PyMem_Free(offs);
    Py_DECREF(pk);
    Py_DECREF(pbs);
    return x;
}

/* ----------------------------------------------------------- Explanation */

void sspy_human(uint64_t b, char *out, size_t len)
{
    static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    int u = 0;

    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%llu B", (unsigned long long)b);
    else
        snprintf(out, len, "%.1f %s", v, unit[u]);
}

static PyObject *human_obj(PyObject *n)
{
    char buf[32];
    unsigned long long b = n && PyLong_Check(n) ? PyLong_AsUnsignedLongLong(n) : 0;

    if (PyErr_Occurred())
        PyErr_Clear();
    sspy_human(b, buf, sizeof(buf));
    return PyUnicode_FromString(buf);
}

/* ["key"][0].attr; "(root)" for the empty path, "?" for None. */
static PyObject *path_str(PyObject *path)
{
    PyObject *parts, *sep, *r;

    if (!path || path == Py_None)
        return PyUnicode_FromString("?");
    if (!PyList_Check(path) || PyList_GET_SIZE(path) == 0)
        return PyUnicode_FromString("(root)");
    parts = PyList_New(0);
    for (Py_ssize_t i = 0; parts && i < PyList_GET_SIZE(path); i++) {
        PyObject *k = PyList_GET_ITEM(path, i), *s;

        if (PyUnicode_Check(k) && PyUnicode_GET_LENGTH(k) > 0 &&
            (PyUnicode_READ_CHAR(k, 0) == '.' || PyUnicode_READ_CHAR(k, 0) == '('))
            s = Py_NewRef(k); /* an attribute, or a __reduce__ argument */
        else
            s = PyUnicode_FromFormat("[%R]", k);
        if (!s || PyList_Append(parts, s) < 0)
            Py_CLEAR(parts);
        Py_XDECREF(s);
    }
    if (!parts)
        return NULL;
    sep = PyUnicode_FromString("");
    r = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    return r;
}

/* lines.append(fmt % args); consumes args. */
static int line(PyObject *lines, const char *fmt, PyObject *args)
{
    PyObject *f, *s = NULL;
    int rc = -1;

    if (!args)
        return -1;
    f = PyUnicode_FromString(fmt);
    if (f)
        s = PyUnicode_Format(f, args);
    if (s)
        rc = PyList_Append(lines, s);
    Py_XDECREF(s);
    Py_XDECREF(f);
    Py_DECREF(args);
    return rc;
}

static PyObject *get(PyObject *d, const char *k)
{
    PyObject *v = d && PyDict_Check(d) ? PyDict_GetItemString(d, k) : NULL;

    return v ? v : Py_None;
}

/* Reports list at most this many rows per table: the largest ones. */
#define SSPY_FOLD 20

/*
 * Which entries of `list` (dicts with "bytes") a report shows: all of
 * them up to SSPY_FOLD, else the SSPY_FOLD largest (in list order).
 * Returns a PyMem array of n flags (NULL with an exception); *hidden_n
 * and *hidden_bytes say what was left out.
 */
static char *fold(PyObject *list, Py_ssize_t n, Py_ssize_t *hidden_n, uint64_t *hidden_bytes)
{
    char *shown = PyMem_Calloc((size_t)n + 1, 1);
    PyObject *order = NULL;

    *hidden_n = 0;
    *hidden_bytes = 0;
    if (!shown) {
        PyErr_NoMemory();
        return NULL;
    }
    if (n <= SSPY_FOLD) {
        memset(shown, 1, (size_t)n);
        return shown;
    }
    order = PyList_New(n);
    for (Py_ssize_t i = 0; order && i < n; i++) {
        PyObject *t = Py_BuildValue("(On)", get(PyList_GET_ITEM(list, i), "bytes"), i);

        if (!t)
            Py_CLEAR(order);
        else
            PyList_SET_ITEM(order, i, t);
    }
    if (!order || PyList_Sort(order) < 0 || PyList_Reverse(order) < 0) {
        Py_XDECREF(order);
        PyMem_Free(shown);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *t = PyList_GET_ITEM(order, k);
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));

        if (k < SSPY_FOLD) {
            shown[i] = 1;
        } else {
            (*hidden_n)++;
            *hidden_bytes += PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(t, 0));
        }
    }
    Py_DECREF(order);
    return shown;
}

static int fold_line(PyObject *lines, Py_ssize_t hidden_n, uint64_t hidden_bytes)
{
    char h[32];

    if (hidden_n == 0)
        return 0;
    sspy_human(hidden_bytes, h, sizeof(h));
    return line(lines, "  ... %d smaller ones, %s in all (the Explanation's lists hold every one)",
                Py_BuildValue("(ns)", hidden_n, h));
}

/* "12.3 us", "4.56 ms", "1.23 s"; "" when not timed. */
static PyObject *secs_str(PyObject *o)
{
    double s = o && PyFloat_Check(o) ? PyFloat_AsDouble(o) : -1;

    if (s < 0)
        return PyUnicode_FromString("");
    if (s < 1e-3)
        return PyUnicode_FromFormat("%d.%d us", (int)(s * 1e6), (int)(s * 1e7) % 10);
    if (s < 1)
        return PyUnicode_FromFormat("%d.%02d ms", (int)(s * 1e3), (int)(s * 1e5) % 100);
    return PyUnicode_FromFormat("%d.%02d s", (int)s, (int)(s * 100) % 100);
}

static int is_structure(PyObject *e)
{
    PyObject *t = get(e, "type"), *suffix = PyUnicode_FromString(" structure");
    Py_ssize_t n = PyUnicode_Check(t) ? PyUnicode_GET_LENGTH(t) : 0;
    int r = suffix && n > 10 && PyUnicode_Tailmatch(t, suffix, 0, n, 1) == 1;

    Py_XDECREF(suffix);
    PyErr_Clear();
    return r;
}

static PyObject *explanation_str(PyObject *self)
{
    PyObject *lines = PyList_New(0), *nl, *r = NULL;
    PyObject *bl = get(self, "buffers"), *il = get(self, "inband"), *notes;
    Py_ssize_t nb = PyList_Check(bl) ? PyList_GET_SIZE(bl) : 0;
    Py_ssize_t ni = PyList_Check(il) ? PyList_GET_SIZE(il) : 0, hidden_n;
    uint64_t hidden_bytes;
    char *shown = NULL;

    notes = PyList_New(0);
    if (!lines || !notes)
        goto out;
    if (line(lines, "sealstore.explain: %s stored as %s, %s in the store",
             Py_BuildValue("(OON)", get(self, "type"), get(self, "kind"),
                           human_obj(get(self, "object_bytes")))) < 0 ||
        (get(self, "note") != Py_None &&
         line(lines, "  note: %s", Py_BuildValue("(O)", get(self, "note"))) < 0) ||
        line(lines, "  zero-copy %10s in %d out-of-band buffer(s): mapped read-only, never copied",
             Py_BuildValue("(Nn)", human_obj(get(self, "zero_copy_bytes")), nb)) < 0 ||
        line(lines, "  in-band   %10s pickle: rebuilt by pickle.loads on every get",
             Py_BuildValue("(N)", human_obj(get(self, "inband_bytes")))) < 0)
        goto out;
    if (get(self, "map_seconds") != Py_None &&
        line(lines, "  get took  %.1f us mapping (ss_get) + %.1f us unpickling",
             Py_BuildValue("(dd)", PyFloat_AsDouble(get(self, "map_seconds")) * 1e6,
                           PyFloat_AsDouble(get(self, "unpickle_seconds")) * 1e6)) < 0)
        goto out;
    if (nb > 0 &&
        (line(lines, "out-of-band buffers (zero-copy):", PyTuple_New(0)) < 0 ||
         line(lines, "  %-30s %-16s %-10s %-16s %10s %12s",
              Py_BuildValue("(ssssss)", "path", "type", "dtype", "shape", "bytes", "offset")) < 0))
        goto out;
    if (!(shown = fold(bl, nb, &hidden_n, &hidden_bytes)))
        goto out;
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *e = PyList_GET_ITEM(bl, i);

        if (shown[i] &&
            line(lines, "  %-30s %-16s %-10s %-16s %10s %12s",
                 Py_BuildValue("(NONNNO)", path_str(get(e, "path")), get(e, "type"),
                               PyObject_Str(get(e, "dtype")), PyObject_Str(get(e, "shape")),
                               human_obj(get(e, "bytes")), get(e, "offset"))) < 0)
            goto out;
    }
    if (fold_line(lines, hidden_n, hidden_bytes) < 0)
        goto out;
    PyMem_Free(shown);
    shown = NULL;
    if (ni > 0 &&
        (line(lines, "in-band parts (copied on every get):", PyTuple_New(0)) < 0 ||
         line(lines, "  %-30s %-34s %8s %10s %10s",
              Py_BuildValue("(sssss)", "path", "type", "items", "bytes", "unpickle")) < 0))
        goto out;
    if (!(shown = fold(il, ni, &hidden_n, &hidden_bytes)))
        goto out;
    for (Py_ssize_t i = 0; i < ni; i++) {
        PyObject *e = PyList_GET_ITEM(il, i), *p;

        if (!shown[i])
            continue;
        p = path_str(get(e, "path"));
        if (!p || line(lines, "  %-30s %-34s %8s %10s %10s",
                       Py_BuildValue("(NONNN)", Py_NewRef(p), get(e, "type"),
                                     get(e, "items") == Py_None
                                         ? PyUnicode_FromString("")
                                         : PyObject_Str(get(e, "items")),
                                     human_obj(get(e, "bytes")),
                                     secs_str(get(e, "seconds")))) < 0) {
            Py_XDECREF(p);
            goto out;
        }
        if (get(e, "note") != Py_None && !is_structure(e) &&
            line(notes, "  %s: %s", Py_BuildValue("(OO)", p, get(e, "note"))) < 0) {
            Py_DECREF(p);
            goto out;
        }
        Py_DECREF(p);
    }
    if (fold_line(lines, hidden_n, hidden_bytes) < 0)
        goto out;
    if (PyList_GET_SIZE(notes) > 0 &&
        (line(lines, "notes:", PyTuple_New(0)) < 0 || PyList_SetSlice(lines, PY_SSIZE_T_MAX,
                                                                      PY_SSIZE_T_MAX, notes) < 0))
        goto out;
    nl = PyUnicode_FromString("\n");
    if (nl) {
        r = PyUnicode_Join(nl, lines);
        Py_DECREF(nl);
    }
out:
    PyMem_Free(shown);
    Py_XDECREF(notes);
    Py_XDECREF(lines);
    return r;
}

PyTypeObject sspy_ExplanationType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sealstore.Explanation",
    .tp_basicsize = sizeof(PyDictObject),
    .tp_base = &PyDict_Type,
    .tp_str = explanation_str,
    .tp_repr = explanation_str, /* a REPL or notebook shows the report */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE |
                Py_TPFLAGS_DICT_SUBCLASS,
    .tp_doc = "Explanation(*args, **kwargs)\n--\n\n"
              "What sealstore stores zero-copy and what in band (a dict; str() is a report).\n\n"
              "Keys: kind ('pickle5' or 'raw'), type, zero_copy_bytes, inband_bytes,\n"
              "object_bytes, buffers (path, type, dtype, shape, bytes, offset per\n"
              "out-of-band buffer), inband (path, type, bytes[, items, note] per part);\n"
              "for an id also id, map_seconds and unpickle_seconds.",
};
