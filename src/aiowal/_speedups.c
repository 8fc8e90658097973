/* aiowal._speedups: the per-entry loops of packing and reading log records, in C.
 *
 * The pure-Python paths in logfile.py define the behaviour; these two functions do the same work without an
 * interpreter step per entry field (see docs/design.md, "C accelerator"). Tests run both and compare bytes.
 *
 *   pack(entries, start, stop, data_end, max_data_end, force_first)
 *       -> None | (records, slots, end, count, first, last, last_term)
 *   read(entry_cls, buf, s, stop, hi, budget, started, out) -> budget left (< 0: stopped by the size budget)
 *   entries_ok(entries, entry_cls) -> bool (False: the Python check names what is wrong)
 *   terms_ok(entries, low) -> bool (the same: terms from low on, never decreasing)
 *   SyncWorker(): a GIL-free fdatasync thread (Linux only: it needs eventfd; absent elsewhere)
 *
 * Every argument is checked: a value out of range raises ValueError or OverflowError, a wrong type TypeError, and
 * nothing is read or written outside the buffers given. Python code that runs during a call (an attribute getter
 * of a hostile item, __index__, entry_cls()) may mutate the arguments: the loops never keep a pointer into a list
 * across such a call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__linux__) && !defined(AIOWAL_NO_EVENTFD)
#define HAVE_SYNC_WORKER 1
#include <errno.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>
#endif

#define SLOT_SIZE 32
#define TYPE_MASK 0xFFFFFFFFull

/* --- CRC32-Castagnoli ---------------------------------------------------------------------------------------- */
static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[t][n] = c;
        }
    }
}

/* Slicing-by-8 in software: any CPU. */
static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= crc;
        crc = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^ crc_table[5][(w >> 16) & 0xFF] ^
              crc_table[4][(w >> 24) & 0xFF] ^ crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
              crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW_CRC 1
/* The CRC instruction takes 3 cycles and one more can start each cycle: three independent lanes of CRC_LANE bytes
 * run side by side, and their registers are then joined. Joining: the register of lane 0 advanced over 2 lanes of
 * zero bytes, XOR lane 1's advanced over one lane, XOR lane 2's (the CRC register is linear over GF(2)). Advancing a
 * register over a fixed run of zero bytes is a 32x32 bit matrix, applied as four byte-indexed tables. */
#define CRC_LANE 64
static uint32_t crc_skip1[4][256], crc_skip2[4][256];

static uint32_t crc_zeros(uint32_t reg, size_t n) {
    while (n--) reg = crc_table[0][reg & 0xFF] ^ (reg >> 8);
    return reg;
}

static void crc_skip_init(void) {
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) {
            crc_skip1[k][b] = crc_zeros(b << (8 * k), CRC_LANE);
            crc_skip2[k][b] = crc_zeros(b << (8 * k), 2 * CRC_LANE);
        }
}

static inline uint32_t crc_skip(uint32_t t[4][256], uint32_t reg) {
    return t[0][reg & 0xFF] ^ t[1][(reg >> 8) & 0xFF] ^ t[2][(reg >> 16) & 0xFF] ^ t[3][reg >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    while (n >= 3 * CRC_LANE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_LANE; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + CRC_LANE + i, 8);
            memcpy(&w2, p + 2 * CRC_LANE + i, 8);
            c = __builtin_ia32_crc32di(c, w0);
            c1 = __builtin_ia32_crc32di(c1, w1);
            c2 = __builtin_ia32_crc32di(c2, w2);
        }
        c = crc_skip(crc_skip2, (uint32_t)c) ^ crc_skip(crc_skip1, (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * CRC_LANE;
        n -= 3 * CRC_LANE;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    while (n--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

static int use_hw_crc = 0;

/* The same value as the crc32c package's crc32c(data, value): pre- and post-inverted. */
static uint32_t crc32c(uint32_t value, const unsigned char *p, size_t n) {
    uint32_t crc = ~value;
#ifdef HAVE_HW_CRC
    if (use_hw_crc) return ~crc_hw(crc, p, n);
#endif
    return ~crc_soft(crc, p, n);
}

/* "O&" converters: a Python int in range, else OverflowError (TypeError for what is not an int). */
static int to_u64(PyObject *o, void *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "an int is required, not %.100s", Py_TYPE(o)->tp_name);
        return 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o); /* OverflowError below 0 or above 2**64 - 1 */
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return 0;
    *(uint64_t *)out = (uint64_t)v;
    return 1;
}

static int to_u32(PyObject *o, void *out) {
    uint64_t v;
    if (!to_u64(o, &v)) return 0;
    if (v > 0xFFFFFFFFull) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return 0;
    }
    *(uint32_t *)out = (uint32_t)v;
    return 1;
}

static PyObject *py_crc32c(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    uint32_t value = 0;
    if (!PyArg_ParseTuple(args, "y*|O&", &view, to_u32, &value)) return NULL;
    uint32_t crc = crc32c(value, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

/* --- big-endian helpers -------------------------------------------------------------------------------------- */
static inline void put_u64(unsigned char *p, uint64_t v) {
    for (int k = 7; k >= 0; k--) {
        p[k] = (unsigned char)(v & 0xFF);
        v >>= 8;
    }
}

static inline void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v = (v << 8) | p[k];
    return v;
}

static inline uint32_t get_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static PyObject *s_term, *s_index, *s_type, *s_data;

/* An unsigned 64-bit field of an Entry (term, index, type). */
static int get_u64_attr(PyObject *e, PyObject *name, uint64_t *out) {
    PyObject *v = PyObject_GetAttr(e, name);
    if (v == NULL) return -1;
    int ok = to_u64(v, out);
    Py_DECREF(v);
    return ok ? 0 : -1;
}

/* --- pack ------------------------------------------------------------------------------------------------------ */
/* No record may end past the largest file offset (off_t). */
#define MAX_FILE_OFFSET ((uint64_t)INT64_MAX)

typedef struct {
    uint64_t term, index, type;
    PyObject *data; /* bytes, owned */
} Item;

static PyObject *py_pack(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *seq_in;
    Py_ssize_t start, stop;
    uint64_t data_end, max_data_end;
    int force_first;
    if (!PyArg_ParseTuple(args, "OnnO&O&p", &seq_in, &start, &stop, to_u64, &data_end, to_u64, &max_data_end,
                          &force_first))
        return NULL;
    if (data_end > MAX_FILE_OFFSET) {
        PyErr_SetString(PyExc_OverflowError, "data_end is past the largest file offset");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(seq_in, "entries must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(seq);
    if (start < 0 || stop < start || stop > total) {
        PyErr_Format(PyExc_ValueError, "entries [%zd, %zd) are outside a sequence of %zd", start, stop, total);
        Py_DECREF(seq);
        return NULL;
    }
    /* Our own references to the items: a getter of one item may mutate (or empty) the caller's list. */
    PyObject *own = PyList_Check(seq) ? PyList_GetSlice(seq, start, stop) : PySequence_GetSlice(seq, start, stop);
    Py_DECREF(seq);
    if (own == NULL) return NULL;
    Py_ssize_t want = stop - start;
    Item *it = want ? PyMem_New(Item, (size_t)want) : NULL;
    if (want && it == NULL) {
        Py_DECREF(own);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL, *records = NULL, *slots = NULL;
    Py_ssize_t n = 0;
    uint64_t end = data_end;
    /* Pass 1: fields and payloads of the entries that fit under the data cap. */
    for (Py_ssize_t k = 0; k < want; k++) {
        PyObject *e = PySequence_Fast_GET_ITEM(own, k); /* a new list nobody else sees, or a tuple */
        Item *x = &it[n];
        x->data = PyObject_GetAttr(e, s_data);
        if (x->data == NULL) goto done;
        if (!PyBytes_Check(x->data)) {
            PyErr_SetString(PyExc_TypeError, "Entry.data must be bytes");
            Py_DECREF(x->data);
            goto done;
        }
        uint64_t len = (uint64_t)PyBytes_GET_SIZE(x->data);
        if (len > 0xFFFFFFFFull) {
            PyErr_SetString(PyExc_ValueError, "an entry's data is larger than 4 GiB - 1");
            Py_DECREF(x->data);
            goto done;
        }
        int fits = end <= max_data_end && 4 + len <= max_data_end - end; /* end + 4 + len <= cap, no wrap */
        if (!fits && !(k == 0 && force_first)) {
            Py_DECREF(x->data);
            break;
        }
        if (4 + len > MAX_FILE_OFFSET - end) {
            PyErr_SetString(PyExc_OverflowError, "a record would end past the largest file offset");
            Py_DECREF(x->data);
            goto done;
        }
        if (get_u64_attr(e, s_term, &x->term) < 0 || get_u64_attr(e, s_index, &x->index) < 0 ||
            get_u64_attr(e, s_type, &x->type) < 0) {
            Py_DECREF(x->data);
            goto done;
        }
        if (x->type > TYPE_MASK) {
            PyErr_SetString(PyExc_ValueError, "an entry's type does not fit in 32 bits");
            Py_DECREF(x->data);
            goto done;
        }
        end += 4 + len;
        n++;
    }
    if (n == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* Pass 2: records (u32 BE length + payload) and slots, with each record's CRC32C in its type word. */
    records = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(end - data_end)); /* <= MAX_FILE_OFFSET */
    slots = n > PY_SSIZE_T_MAX / SLOT_SIZE ? PyErr_NoMemory() : PyBytes_FromStringAndSize(NULL, n * SLOT_SIZE);
    if (records == NULL || slots == NULL) goto done;
    unsigned char *r = (unsigned char *)PyBytes_AS_STRING(records);
    unsigned char *sl = (unsigned char *)PyBytes_AS_STRING(slots);
    uint64_t off = data_end;
    for (Py_ssize_t k = 0; k < n; k++) {
        Item *x = &it[k];
        uint32_t len = (uint32_t)PyBytes_GET_SIZE(x->data);
        unsigned char head[32];
        put_u64(head, x->term);
        put_u64(head + 8, x->index);
        put_u64(head + 16, off);
        put_u32(head + 24, (uint32_t)x->type);
        put_u32(head + 28, len);
        const unsigned char *payload = (const unsigned char *)PyBytes_AS_STRING(x->data);
        uint32_t crc = crc32c(crc32c(0, head, 32), payload, len);
        put_u32(r, len);
        memcpy(r + 4, payload, len);
        r += 4 + (size_t)len;
        put_u64(sl, x->term);
        put_u64(sl + 8, x->index);
        put_u64(sl + 16, off);
        put_u64(sl + 24, ((uint64_t)crc << 32) | x->type);
        sl += SLOT_SIZE;
        off += 4 + (uint64_t)len;
    }
    result = Py_BuildValue("(OOKnKKK)", records, slots, (unsigned long long)end, n,
                           (unsigned long long)it[0].index, (unsigned long long)it[n - 1].index,
                           (unsigned long long)it[n - 1].term);
done:
    for (Py_ssize_t k = 0; k < n; k++) Py_DECREF(it[k].data);
    PyMem_Free(it);
    Py_XDECREF(records);
    Py_XDECREF(slots);
    Py_DECREF(own);
    return result;
}

/* --- read ------------------------------------------------------------------------------------------------------ */
static inline long long varint_len(uint64_t v) {
    long long n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Go's raftpb.Entry.Size(): term, index and type always counted, data only when not empty. */
static inline long long entry_size(uint64_t term, uint64_t index, int64_t etype, uint32_t len) {
    long long size = 3 + varint_len(term) + varint_len(index) + varint_len((uint64_t)etype);
    if (len) size += 1 + varint_len(len) + len;
    return size;
}

static int set_attr_steal(PyObject *e, PyObject *name, PyObject *v) {
    if (v == NULL) return -1;
    int rc = PyObject_SetAttr(e, name, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *py_read(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *entry_cls, *buf_obj, *hi_obj, *out;
    Py_ssize_t s, stop;
    long long budget;
    int started;
    if (!PyArg_ParseTuple(args, "OOnnO!LpO!", &entry_cls, &buf_obj, &s, &stop, &PyLong_Type, &hi_obj, &budget,
                          &started, &PyList_Type, &out))
        return NULL;
    if (budget < 0) { /* kept >= 0 before each step, so that budget - cost cannot overflow */
        PyErr_SetString(PyExc_ValueError, "budget must not be negative");
        return NULL;
    }
    /* hi is exclusive; one past the largest u64 index (or more) means no bound, a negative one excludes all. */
    int bounded = 1, nothing = 0;
    unsigned long long hi = PyLong_AsUnsignedLongLong(hi_obj);
    if (hi == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear();
        PyObject *zero = PyLong_FromLong(0);
        int negative = zero == NULL ? -1 : PyObject_RichCompareBool(hi_obj, zero, Py_LT);
        Py_XDECREF(zero);
        if (negative < 0) return NULL;
        nothing = negative;
        bounded = 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(buf_obj, &view, PyBUF_SIMPLE) < 0) return NULL; /* held: buf cannot be resized */
    const unsigned char *base = view.buf;
    uint64_t size = (uint64_t)view.len;
    PyObject *result = NULL;
    if (s < 0 || stop < s || (uint64_t)stop > size / SLOT_SIZE) {
        PyErr_SetString(PyExc_ValueError, "slot range outside the file");
        goto done;
    }
    for (Py_ssize_t k = s; k < stop && !nothing; k++) {
        const unsigned char *slot = base + (size_t)k * SLOT_SIZE;
        uint64_t term = get_u64(slot), index = get_u64(slot + 8), off = get_u64(slot + 16);
        int64_t etype = (int32_t)(uint32_t)(get_u64(slot + 24) & TYPE_MASK); /* int32, as Dgraph reads it */
        if (bounded && index >= hi) break;
        if (off > size || size - off < 4) {
            PyErr_Format(PyExc_ValueError, "a data offset points past the end of the file (slot %zd, offset %llu)",
                         k, (unsigned long long)off);
            goto done;
        }
        uint32_t len = get_u32(base + off);
        if (size - off - 4 < len) {
            PyErr_Format(PyExc_ValueError, "offset %llu: record of %lu bytes runs past end of file",
                         (unsigned long long)off, (unsigned long)len);
            goto done;
        }
        long long cost = entry_size(term, index, etype, len);
        if (started && cost > budget) {
            budget = -1;
            break;
        }
        budget -= cost;
        started = 1;
        PyObject *e = PyObject_CallNoArgs(entry_cls);
        if (e == NULL) goto done;
        if (set_attr_steal(e, s_term, PyLong_FromUnsignedLongLong(term)) < 0 ||
            set_attr_steal(e, s_index, PyLong_FromUnsignedLongLong(index)) < 0 ||
            set_attr_steal(e, s_type, PyLong_FromLongLong(etype)) < 0 ||
            (len && set_attr_steal(e, s_data, PyBytes_FromStringAndSize((const char *)base + off + 4, len)) < 0) ||
            PyList_Append(out, e) < 0) {
            Py_DECREF(e);
            goto done;
        }
        Py_DECREF(e);
        if (budget < 0) break;
    }
    result = PyLong_FromLongLong(budget);
done:
    PyBuffer_Release(&view);
    return result;
}

/* --- check ----------------------------------------------------------------------------------------------------- */
static PyObject *py_entries_ok(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *seq_in, *entry_cls;
    if (!PyArg_ParseTuple(args, "OO!", &seq_in, &PyType_Type, &entry_cls)) return NULL;
    PyObject *seq = PySequence_Fast(seq_in, "entries must be a sequence");
    if (seq == NULL) return NULL;
    PyObject *result = Py_False;
    uint64_t prev = 0;
    /* The size and each item are read afresh after every getter call: a getter may mutate the list. */
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(seq, k));
        uint64_t index;
        int rc = !PyObject_TypeCheck(item, (PyTypeObject *)entry_cls) ? 1 : get_u64_attr(item, s_index, &index);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        if (rc > 0) goto done;
        if (k == 0 ? index == 0 : index != prev + 1 || prev == UINT64_MAX) goto done;
        prev = index;
    }
    result = Py_True;
done:
    Py_DECREF(seq);
    return Py_NewRef(result);
}

/* Whether every item's term is >= low and none is below the one before it (False: the Python check says which). */
static PyObject *py_terms_ok(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *seq_in;
    uint64_t low;
    if (!PyArg_ParseTuple(args, "OO&", &seq_in, to_u64, &low)) return NULL;
    PyObject *seq = PySequence_Fast(seq_in, "entries must be a sequence");
    if (seq == NULL) return NULL;
    PyObject *result = Py_False;
    /* The size and each item are read afresh after every getter call: a getter may mutate the list. */
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(seq, k));
        uint64_t term;
        int rc = get_u64_attr(item, s_term, &term);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        if (term < low) goto done;
        low = term;
    }
    result = Py_True;
done:
    Py_DECREF(seq);
    return Py_NewRef(result);
}

/* --- SyncWorker ----------------------------------------------------------------------------------------------- */
#ifdef HAVE_SYNC_WORKER
/* A thread that runs fdatasync on a set of descriptors without ever taking the GIL, and reports through an
 * eventfd the event loop watches (add_reader). A Python worker thread must take the GIL before and after each
 * fdatasync, and waits for the loop thread to let go of it both times; this one does not. One request at a time:
 * AsyncDiskStorage's writer awaits each sync before it asks for the next. */
#define SYNC_MAX_FDS 16

typedef struct {
    PyObject_HEAD
    pthread_t thread;
    pthread_mutex_t mu; /* guards stop, pending, done, nfds, fds, err */
    pthread_cond_t cv;
    int sync_init;      /* mu and cv initialised (in tp_new) */
    int started;        /* the thread runs (with the GIL held: started, closing, efd, notify_fd) */
    int closing;        /* a close() is joining the thread */
    int efd;            /* the eventfd as Python sees it: -1 once close() began */
    int notify_fd;      /* the same eventfd as the thread writes it, closed only after the thread ended */
    int stop, pending, done, nfds, err;
    int fds[SYNC_MAX_FDS];
} SyncWorker;

static void *sync_worker_main(void *arg) {
    SyncWorker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->pending && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        if (!w->pending) break; /* stopped; a request submitted before close() still runs first */
        int nfds = w->nfds, fds[SYNC_MAX_FDS];
        memcpy(fds, w->fds, sizeof(int) * (size_t)nfds);
        pthread_mutex_unlock(&w->mu);
        int err = 0;
        for (int k = 0; k < nfds && !err; k++)
            if (fdatasync(fds[k]) != 0) err = errno ? errno : EIO;
        pthread_mutex_lock(&w->mu);
        w->err = err;
        w->pending = 0;
        w->done = 1;
        /* The eventfd is written without the lock: the loop thread it wakes takes the lock in result() at once,
         * and must not find it held by this thread. */
        pthread_mutex_unlock(&w->mu);
        uint64_t one = 1;
        while (write(w->notify_fd, &one, sizeof one) < 0 && errno == EINTR) {
        }
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Stop the thread and close the eventfd. Python sees the worker closed before the GIL is let go for the join; a
 * close() from another thread meanwhile returns at once (it never joins the thread or closes the fd twice). */
static void sync_worker_stop(SyncWorker *w) {
    if (w->closing) return;
    int started = w->started;
    w->started = 0;
    w->efd = -1;
    if (started) {
        w->closing = 1;
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(w->thread, NULL);
        Py_END_ALLOW_THREADS
        w->closing = 0;
    }
    if (w->notify_fd >= 0) {
        close(w->notify_fd);
        w->notify_fd = -1;
    }
}

static int sync_worker_init(SyncWorker *w, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist)) return -1;
    if (w->started || w->closing || w->notify_fd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "SyncWorker already started");
        return -1;
    }
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    w->stop = w->pending = w->done = w->err = w->nfds = 0;
    w->notify_fd = efd;
    int rc = pthread_create(&w->thread, NULL, sync_worker_main, w);
    if (rc != 0) {
        w->notify_fd = -1;
        close(efd);
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    w->efd = efd;
    w->started = 1;
    return 0;
}

static PyObject *sync_worker_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds)) {
    SyncWorker *w = (SyncWorker *)type->tp_alloc(type, 0);
    if (w == NULL) return NULL;
    w->efd = w->notify_fd = -1;
    w->started = w->closing = 0;
    if (pthread_mutex_init(&w->mu, NULL) != 0 || pthread_cond_init(&w->cv, NULL) != 0) {
        Py_DECREF(w); /* sync_init is 0: dealloc destroys nothing */
        return PyErr_NoMemory();
    }
    w->sync_init = 1;
    return (PyObject *)w;
}

static void sync_worker_dealloc(SyncWorker *w) {
    sync_worker_stop(w);
    if (w->sync_init) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
    }
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static int sync_worker_check_open(SyncWorker *w) {
    if (w->started) return 0;
    PyErr_SetString(PyExc_RuntimeError, "SyncWorker is closed");
    return -1;
}

static PyObject *sync_worker_submit(SyncWorker *w, PyObject *arg) {
    Py_ssize_t n = PySequence_Check(arg) ? PySequence_Size(arg) : -1;
    if (n < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "fds must be a sequence of ints");
        return NULL;
    }
    if (n > SYNC_MAX_FDS) {
        PyErr_SetString(PyExc_ValueError, "too many descriptors for one sync");
        return NULL;
    }
    /* A tuple of our own: __index__ of an item may mutate the caller's list. */
    PyObject *seq = PySequence_Tuple(arg);
    if (seq == NULL) return NULL;
    n = PyTuple_GET_SIZE(seq);
    if (n > SYNC_MAX_FDS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many descriptors for one sync");
        return NULL;
    }
    int fds[SYNC_MAX_FDS];
    for (Py_ssize_t k = 0; k < n; k++) {
        long fd = PyLong_AsLong(PyTuple_GET_ITEM(seq, k));
        if (fd == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        if (fd < 0 || fd > INT32_MAX) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "not a file descriptor");
            return NULL;
        }
        fds[k] = (int)fd;
    }
    Py_DECREF(seq);
    if (sync_worker_check_open(w) < 0) return NULL;
    pthread_mutex_lock(&w->mu);
    if (w->pending || w->done) {
        pthread_mutex_unlock(&w->mu);
        PyErr_SetString(PyExc_RuntimeError, "a sync is already in flight");
        return NULL;
    }
    memcpy(w->fds, fds, sizeof(int) * (size_t)n);
    w->nfds = (int)n;
    w->pending = 1;
    pthread_mutex_unlock(&w->mu);
    /* Signalled after the unlock: the thread it wakes does not block at once on the lock this thread holds. It
     * only ever waits for pending or stop, and the cv outlives both threads (destroyed in dealloc, after the join). */
    pthread_cond_signal(&w->cv);
    Py_RETURN_NONE;
}

/* None while the sync runs; else its errno (0: every fdatasync succeeded), and the worker takes a new request. */
static PyObject *sync_worker_result(SyncWorker *w, PyObject *Py_UNUSED(ignored)) {
    if (sync_worker_check_open(w) < 0) return NULL;
    uint64_t v;
    while (read(w->efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&w->mu);
    int done = w->done, err = w->err;
    if (done) w->done = 0;
    pthread_mutex_unlock(&w->mu);
    if (!done) Py_RETURN_NONE;
    return PyLong_FromLong(err);
}

static PyObject *sync_worker_fileno(SyncWorker *w, PyObject *Py_UNUSED(ignored)) {
    if (sync_worker_check_open(w) < 0) return NULL;
    return PyLong_FromLong(w->efd);
}

static PyObject *sync_worker_close(SyncWorker *w, PyObject *Py_UNUSED(ignored)) {
    sync_worker_stop(w);
    Py_RETURN_NONE;
}

static PyMethodDef sync_worker_methods[] = {
    {"submit", (PyCFunction)sync_worker_submit, METH_O, "Start fdatasync of each descriptor, in order."},
    {"result", (PyCFunction)sync_worker_result, METH_NOARGS, "None while running, else the errno (0: done)."},
    {"fileno", (PyCFunction)sync_worker_fileno, METH_NOARGS, "The eventfd that becomes readable when a sync ends."},
    {"close", (PyCFunction)sync_worker_close, METH_NOARGS, "Stop the thread (after the sync submitted, if any) and close."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SyncWorkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "aiowal._speedups.SyncWorker",
    .tp_basicsize = sizeof(SyncWorker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A GIL-free fdatasync thread reporting through an eventfd.",
    .tp_new = sync_worker_new,
    .tp_init = (initproc)sync_worker_init,
    .tp_dealloc = (destructor)sync_worker_dealloc,
    .tp_methods = sync_worker_methods,
};
#endif /* HAVE_SYNC_WORKER */

static PyMethodDef methods[] = {
    {"entries_ok", py_entries_ok, METH_VARARGS, "Whether every item is an entry_cls, indexes contiguous from >= 1."},
    {"terms_ok", py_terms_ok, METH_VARARGS, "Whether every item's term is >= low and never below the one before."},
    {"pack", py_pack, METH_VARARGS, "Records and slots of entries[start:stop] that fit in a log file."},
    {"read", py_read, METH_VARARGS, "Append the Entry objects of slots [s, stop) with index < hi to out."},
    {"crc32c", py_crc32c, METH_VARARGS, "CRC32-Castagnoli of data, continuing from value."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "aiowal._speedups", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    crc_init();
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    use_hw_crc = __builtin_cpu_supports("sse4.2") != 0;
    crc_skip_init();
#endif
    s_term = PyUnicode_InternFromString("term");
    s_index = PyUnicode_InternFromString("index");
    s_type = PyUnicode_InternFromString("type");
    s_data = PyUnicode_InternFromString("data");
    if (!s_term || !s_index || !s_type || !s_data) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
#ifdef HAVE_SYNC_WORKER
    if (PyType_Ready(&SyncWorkerType) < 0 || PyModule_AddObjectRef(m, "SyncWorker", (PyObject *)&SyncWorkerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    if (PyModule_AddIntConstant(m, "HARDWARE_CRC", use_hw_crc) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
