/* Compiled Avro readers for the consumers' hot path: `Reader(program)(data, pos) -> dict`.
 *
 * Decoding was a fifth to a quarter of a consumer's CPU even with a reader generated in Python per
 * writer schema (specialised.py). This module interprets the same reading program that specialised.py
 * derives from a writer schema (`program()`: nested tuples such as ("record", names, fields),
 * ("union", null_index, other), ("enum", symbols), ("array", item), ("string",), ("int",), ("long",),
 * ("timestamp-micros",), ("null",)). The program is turned once into a tree of C nodes; each call
 * walks it over the bytes and builds exactly the dict the generated Python reader returns.
 *
 * Same contract as the generated Python readers: strict, no error reporting. Anything unusual raises
 * (ValueError, or UnicodeDecodeError / OverflowError where Python's own conversions would), and
 * SchemaRegistry.decode_checked then lets fastavro decode the same bytes and name the problem. So
 * this code may only be faster, never different: tests/test_compiled_reader.py compares it with the
 * generated reader and with fastavro, event by event, with hypothesis.
 */
#include "_avro_program.h"
#include <datetime.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const unsigned char *start, *p, *end;
} cursor;

#define US_PER_DAY 86400000000LL
#define EPOCH_ORDINAL 719163   /* date(1970, 1, 1).toordinal() */
#define MAX_ORDINAL 3652059    /* date(9999, 12, 31).toordinal() */

/* ---- reading ---- */

static int refuse(const cursor *c, const char *why)
{
    PyErr_Format(PyExc_ValueError, "%s at byte %zd", why, (Py_ssize_t)(c->p - c->start));
    return -1;
}

/* The next zigzag varint, read as specialised._varint_tail reads it: at most 10 bytes, below 2**64. */
static int read_long(cursor *c, int64_t *out)
{
    if (c->p >= c->end)
        return refuse(c, "truncated");
    uint64_t value = *c->p++;
    if (value & 0x80) {
        value &= 0x7F;
        for (int shift = 7;; shift += 7) {
            if (c->p >= c->end)
                return refuse(c, "truncated");
            uint64_t byte = *c->p++;
            if (shift == 63) {
                if (byte & 0x80)
                    return refuse(c, "varint longer than 10 bytes");
                if (byte > 1)
                    return refuse(c, "varint beyond 64 bits");
            }
            value |= (byte & 0x7F) << shift;
            if (!(byte & 0x80))
                break;
        }
    }
    *out = (int64_t)(value >> 1) ^ -(int64_t)(value & 1);
    return 0;
}

/* _EPOCH + timedelta(microseconds=v), with datetime's range (years 1 to 9999) and its OverflowError. */
static PyObject *timestamp(int64_t micros)
{
    int64_t days = micros / US_PER_DAY, rest = micros % US_PER_DAY;
    if (rest < 0) {
        rest += US_PER_DAY;
        days -= 1;
    }
    if (days + EPOCH_ORDINAL < 1 || days + EPOCH_ORDINAL > MAX_ORDINAL) {
        PyErr_SetString(PyExc_OverflowError, "date value out of range");
        return NULL;
    }
    /* civil date of a day count since 1970-01-01 (H. Hinnant's days_from_civil, inverted) */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    int year = (int)(yoe + era * 400 + (month <= 2));
    int64_t seconds = rest / 1000000;
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        year, month, day, (int)(seconds / 3600), (int)(seconds / 60 % 60), (int)(seconds % 60),
        (int)(rest % 1000000), PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
}

static PyObject *read_value(const node *n, cursor *c)
{
    int64_t v;
    switch (n->op) {
    case OP_NULL:
        Py_RETURN_NONE;
    case OP_LONG:
        if (read_long(c, &v) < 0)
            return NULL;
        return PyLong_FromLongLong(v);
    case OP_INT:
        if (read_long(c, &v) < 0)
            return NULL;
        if (v < INT32_MIN || v > INT32_MAX) {
            refuse(c, "int out of range");
            return NULL;
        }
        return PyLong_FromLong((long)v);
    case OP_TIMESTAMP:
        if (read_long(c, &v) < 0)
            return NULL;
        return timestamp(v);
    case OP_STRING: {
        if (read_long(c, &v) < 0)
            return NULL;
        if (v < 0 || v > c->end - c->p) {
            refuse(c, "string length");
            return NULL;
        }
        /* in valid UTF-8 a zero byte is only ever U+0000, which PostgreSQL text cannot store */
        if (memchr(c->p, 0, (size_t)v) != NULL) {
            refuse(c, "NUL in a string");
            return NULL;
        }
        PyObject *text = PyUnicode_DecodeUTF8((const char *)c->p, (Py_ssize_t)v, "strict");
        c->p += v;
        return text;
    }
    case OP_ENUM:
        if (read_long(c, &v) < 0)
            return NULL;
        if (v < 0 || v >= n->count) {
            refuse(c, "enum index");
            return NULL;
        }
        return Py_NewRef(PyTuple_GET_ITEM(n->constant, (Py_ssize_t)v));
    case OP_UNION:
        if (read_long(c, &v) < 0)
            return NULL;
        if (v == n->null_index)
            Py_RETURN_NONE;
        if (v == 1 - n->null_index)
            return read_value(&n->children[0], c);
        refuse(c, "union index");
        return NULL;
    case OP_ARRAY: {
        PyObject *items = PyList_New(0);
        if (items == NULL)
            return NULL;
        for (;;) {
            if (read_long(c, &v) < 0)
                goto array_error;
            if (v == 0)
                break;
            /* a negative count announces a block size (valid Avro, but fastavro's to judge) */
            if (v < 0 || (n->children[0].min_width > 0 && v > (c->end - c->p) / n->children[0].min_width)) {
                refuse(c, v < 0 ? "array block with a size" : "array count past the end");
                goto array_error;
            }
            for (int64_t i = 0; i < v; i++) {
                PyObject *item = read_value(&n->children[0], c);
                if (item == NULL)
                    goto array_error;
                int failed = PyList_Append(items, item);
                Py_DECREF(item);
                if (failed)
                    goto array_error;
            }
        }
        return items;
    array_error:
        Py_DECREF(items);
        return NULL;
    }
    case OP_RECORD: {
        PyObject *record = PyDict_New();
        if (record == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n->count; i++) {
            PyObject *value = read_value(&n->children[i], c);
            if (value == NULL || PyDict_SetItem(record, PyTuple_GET_ITEM(n->constant, i), value) < 0) {
                Py_XDECREF(value);
                Py_DECREF(record);
                return NULL;
            }
            Py_DECREF(value);
        }
        return record;
    }
    }
    PyErr_SetString(PyExc_SystemError, "unknown operation");
    return NULL;
}

/* ---- the Reader type ---- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *program;
    node root;
} Reader;

static PyObject *reader_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Reader *reader = (Reader *)self;
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Reader takes two positional arguments: (data: bytes, pos: int)");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    const unsigned char *start = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    cursor c = {start, start + (pos < 0 ? 0 : pos > size ? size : pos), start + size};
    if (pos < 0 || pos > size) {
        refuse(&c, "start outside the data");
        return NULL;
    }
    PyObject *record = read_value(&reader->root, &c);
    if (record != NULL && c.p != c.end) {
        Py_DECREF(record);
        refuse(&c, "trailing bytes");
        return NULL;
    }
    return record;
}

static PyObject *reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *program;
    static char *keywords[] = {"program", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Reader", keywords, &program))
        return NULL;
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = reader_vectorcall;
    self->program = Py_NewRef(program);
    if (avro_build_node(program, &self->root, 0) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void reader_dealloc(Reader *self)
{
    avro_free_node(&self->root);
    Py_CLEAR(self->program);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef reader_members[] = {
    {"program", T_OBJECT, offsetof(Reader, program), READONLY, "the reading program this reader interprets"},
    {NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "assetlog.schemas._avro_reader.Reader",
    .tp_doc = PyDoc_STR("Reader(program)(data, pos) -> dict: the Avro body of one writer schema, read "
                        "strictly from data[pos:] to its end (raises on anything unusual)."),
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = reader_new,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
    .tp_members = reader_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "assetlog.schemas._avro_reader",
    .m_doc = PyDoc_STR("Compiled Avro readers interpreting specialised.program(); see schemas/compiled.py."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__avro_reader(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL || PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
