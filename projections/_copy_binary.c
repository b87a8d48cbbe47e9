/* Rows in PostgreSQL's binary COPY format, for `projections/base.py`'s `copy_rows`.
 *
 * psycopg formats a binary COPY row in C, but calls a Python dumper for every value of a type it does
 * not know in the form the projections hold: a uuid as its canonical text, a jsonb as JSON bytes. In a
 * replay worker's profile the row formatting with those dumpers was about a tenth of the samples
 * (bench/README.md, issue 15, "Tenth pass"). Here every row of one COPY is formatted at once, without a
 * Python call per value.
 *
 * `format_rows(rows, kinds)` returns the tuples' bytes (no signature, no trailer: `copy_rows` adds them),
 * or None when a value is not of the form this code knows (a uuid.UUID object, a naive datetime, an
 * integer out of range, a row of another length...): `copy_rows` then lets psycopg format the rows, which
 * accepts or refuses them as before. So this code never decides what is valid, only how known values
 * are written; tests/test_copy_binary.py compares its output with psycopg's, byte for byte, on drawn rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

#include "_copy_binary.h"

enum { KIND_TEXT, KIND_UUID, KIND_TIMESTAMPTZ, KIND_JSONB, KIND_TEXT_ARRAY, KIND_INT4, KIND_INT8, KIND_COUNT };
#define TEXT_OID 25
#define POSTGRES_EPOCH_DAYS 10957 /* 2000-01-01 counted from 1970-01-01 */

typedef struct {
    char *data;
    size_t length, capacity;
} Buffer;

static int reserve(Buffer *buffer, size_t more) {
    if (buffer->length + more <= buffer->capacity) return 0;
    size_t capacity = buffer->capacity ? buffer->capacity : 65536;
    while (capacity < buffer->length + more) capacity *= 2;
    char *grown = PyMem_Realloc(buffer->data, capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = grown;
    buffer->capacity = capacity;
    return 0;
}

static void put16(Buffer *buffer, uint16_t value) {
    unsigned char *at = (unsigned char *)buffer->data + buffer->length;
    at[0] = value >> 8;
    at[1] = value & 0xff;
    buffer->length += 2;
}

static void put32(Buffer *buffer, uint32_t value) {
    unsigned char *at = (unsigned char *)buffer->data + buffer->length;
    for (int i = 3; i >= 0; i--, value >>= 8) at[i] = value & 0xff;
    buffer->length += 4;
}

static void put64(Buffer *buffer, uint64_t value) {
    unsigned char *at = (unsigned char *)buffer->data + buffer->length;
    for (int i = 7; i >= 0; i--, value >>= 8) at[i] = value & 0xff;
    buffer->length += 8;
}

/* Result of writing one value: written, not a form this code knows (fall back), or a Python error. */
enum { WRITTEN = 0, UNKNOWN = 1, FAILED = -1 };

static int put_bytes(Buffer *buffer, const char *data, Py_ssize_t size, int jsonb) {
    if (size > INT32_MAX - 1) return UNKNOWN;
    if (reserve(buffer, 5 + (size_t)size) < 0) return FAILED;
    put32(buffer, (uint32_t)(size + jsonb));
    if (jsonb) buffer->data[buffer->length++] = 1; /* jsonb's binary format: version 1, then the text */
    memcpy(buffer->data + buffer->length, data, (size_t)size);
    buffer->length += (size_t)size;
    return WRITTEN;
}

/* A str's UTF-8 bytes, as text or (jsonb) after jsonb's version byte. */
static int put_str(Buffer *buffer, PyObject *value, int jsonb) {
    if (!PyUnicode_CheckExact(value)) return UNKNOWN;
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &size);
    if (utf8 == NULL) {
        PyErr_Clear(); /* a lone surrogate: psycopg names it */
        return UNKNOWN;
    }
    return put_bytes(buffer, utf8, size, jsonb);
}

static int put_text(Buffer *buffer, PyObject *value) { return put_str(buffer, value, 0); }

static int hex_value(Py_UCS4 c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* Where each byte's two hex digits start in the canonical text; hyphens at 8, 13, 18 and 23. */
static const int DIGITS_AT[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

static int put_uuid(Buffer *buffer, PyObject *value) {
    /* The canonical text (8-4-4-4-12 hex digits, either case), as validation accepts it. */
    if (!PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) != 36) return UNKNOWN;
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    if (PyUnicode_READ(kind, data, 8) != '-' || PyUnicode_READ(kind, data, 13) != '-'
        || PyUnicode_READ(kind, data, 18) != '-' || PyUnicode_READ(kind, data, 23) != '-')
        return UNKNOWN;
    unsigned char out[16];
    for (int n = 0; n < 16; n++) {
        int high = hex_value(PyUnicode_READ(kind, data, DIGITS_AT[n]));
        int low = hex_value(PyUnicode_READ(kind, data, DIGITS_AT[n] + 1));
        if (high < 0 || low < 0) return UNKNOWN;
        out[n] = (unsigned char)(high << 4 | low);
    }
    if (reserve(buffer, 20) < 0) return FAILED;
    put32(buffer, 16);
    memcpy(buffer->data + buffer->length, out, 16);
    buffer->length += 16;
    return WRITTEN;
}

static int64_t days_from_civil(int64_t year, int64_t month, int64_t day) {
    /* Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm). */
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t year_of_era = year - era * 400;
    int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

static int put_timestamptz(Buffer *buffer, PyObject *value) {
    if (!PyDateTime_Check(value)) return UNKNOWN;
    PyObject *tzinfo = PyDateTime_DATE_GET_TZINFO(value); /* borrowed; None when naive */
    if (tzinfo == Py_None) return UNKNOWN; /* naive: psycopg decides */
    int64_t offset_us = 0;
    if (tzinfo != PyDateTime_TimeZone_UTC) {
        PyObject *offset = PyObject_CallMethod(value, "utcoffset", NULL);
        if (offset == NULL) return FAILED;
        if (!PyDelta_Check(offset)) {
            Py_DECREF(offset);
            return UNKNOWN;
        }
        offset_us = ((int64_t)PyDateTime_DELTA_GET_DAYS(offset) * 86400 + PyDateTime_DELTA_GET_SECONDS(offset))
                        * 1000000 + PyDateTime_DELTA_GET_MICROSECONDS(offset);
        Py_DECREF(offset);
    }
    int64_t days = days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                   PyDateTime_GET_DAY(value)) - POSTGRES_EPOCH_DAYS;
    int64_t seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(value) * 3600
                      + PyDateTime_DATE_GET_MINUTE(value) * 60 + PyDateTime_DATE_GET_SECOND(value);
    int64_t micros = seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value) - offset_us;
    if (reserve(buffer, 12) < 0) return FAILED;
    put32(buffer, 8);
    put64(buffer, (uint64_t)micros);
    return WRITTEN;
}

static int put_jsonb(Buffer *buffer, PyObject *value) {
    if (PyBytes_CheckExact(value)) return put_bytes(buffer, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), 1);
    return put_str(buffer, value, 1);
}

static int put_text_array(Buffer *buffer, PyObject *value) {
    /* A one-dimensional text[] from a list of str and None, as array_send writes it (an empty one has
     * no dimension). */
    if (!PyList_CheckExact(value)) return UNKNOWN;
    Py_ssize_t count = PyList_GET_SIZE(value);
    if (count > INT32_MAX / 4) return UNKNOWN;
    size_t start = buffer->length;
    if (reserve(buffer, 24) < 0) return FAILED;
    put32(buffer, 0); /* the length, written below */
    int has_null = 0;
    for (Py_ssize_t i = 0; i < count; i++) has_null |= PyList_GET_ITEM(value, i) == Py_None;
    put32(buffer, count ? 1 : 0);
    put32(buffer, (uint32_t)has_null);
    put32(buffer, TEXT_OID);
    if (count) {
        put32(buffer, (uint32_t)count);
        put32(buffer, 1);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(value, i);
        int status;
        if (item == Py_None) {
            if (reserve(buffer, 4) < 0) return FAILED;
            put32(buffer, UINT32_MAX);
            status = WRITTEN;
        } else {
            status = put_text(buffer, item);
        }
        if (status != WRITTEN) return status;
    }
    size_t size = buffer->length - start - 4;
    if (size > INT32_MAX) return UNKNOWN;
    Buffer at_length = {buffer->data, start, buffer->capacity};
    put32(&at_length, (uint32_t)size);
    return WRITTEN;
}

static int put_integer(Buffer *buffer, PyObject *value, int bytes) {
    if (!PyLong_CheckExact(value)) return UNKNOWN;
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred()) return FAILED;
    if (overflow || (bytes == 4 && (number < INT32_MIN || number > INT32_MAX))) return UNKNOWN;
    if (reserve(buffer, 4 + (size_t)bytes) < 0) return FAILED;
    put32(buffer, (uint32_t)bytes);
    if (bytes == 4) put32(buffer, (uint32_t)(int32_t)number);
    else put64(buffer, (uint64_t)number);
    return WRITTEN;
}

static int put_value(Buffer *buffer, PyObject *value, int kind) {
    if (value == Py_None) {
        if (reserve(buffer, 4) < 0) return FAILED;
        put32(buffer, UINT32_MAX); /* -1: NULL */
        return WRITTEN;
    }
    switch (kind) {
    case KIND_TEXT: return put_text(buffer, value);
    case KIND_UUID: return put_uuid(buffer, value);
    case KIND_TIMESTAMPTZ: return put_timestamptz(buffer, value);
    case KIND_JSONB: return put_jsonb(buffer, value);
    case KIND_TEXT_ARRAY: return put_text_array(buffer, value);
    case KIND_INT4: return put_integer(buffer, value, 4);
    case KIND_INT8: return put_integer(buffer, value, 8);
    default: return UNKNOWN;
    }
}

PyObject *assetlog_format_rows(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *rows, *kinds_object;
    if (!PyArg_ParseTuple(args, "OO!:format_rows", &rows, &PyTuple_Type, &kinds_object)) return NULL;
    Py_ssize_t columns = PyTuple_GET_SIZE(kinds_object);
    if (columns == 0 || columns > 1600) {
        PyErr_SetString(PyExc_ValueError, "format_rows: between 1 and 1600 columns");
        return NULL;
    }
    int kinds[1600];
    for (Py_ssize_t c = 0; c < columns; c++) {
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(kinds_object, c));
        if (kind == -1 && PyErr_Occurred()) return NULL;
        if (kind < 0 || kind >= KIND_COUNT) {
            PyErr_Format(PyExc_ValueError, "format_rows: unknown column kind %ld", kind);
            return NULL;
        }
        kinds[c] = (int)kind;
    }
    PyObject *iterator = PyObject_GetIter(rows);
    if (iterator == NULL) return NULL;
    Buffer buffer = {NULL, 0, 0};
    int status = WRITTEN;
    PyObject *row;
    while (status == WRITTEN && (row = PyIter_Next(iterator)) != NULL) {
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != columns) {
            status = UNKNOWN;
        } else if (reserve(&buffer, 2) < 0) {
            status = FAILED;
        } else {
            put16(&buffer, (uint16_t)columns);
            for (Py_ssize_t c = 0; c < columns && status == WRITTEN; c++)
                status = put_value(&buffer, PyTuple_GET_ITEM(row, c), kinds[c]);
        }
        Py_DECREF(row);
    }
    Py_DECREF(iterator);
    if (status == WRITTEN && PyErr_Occurred()) status = FAILED; /* the iteration itself failed */
    PyObject *result = NULL;
    if (status == WRITTEN) result = PyBytes_FromStringAndSize(buffer.data ? buffer.data : "", (Py_ssize_t)buffer.length);
    else if (status == UNKNOWN) result = Py_NewRef(Py_None);
    PyMem_Free(buffer.data);
    return result;
}

int assetlog_copy_binary_init(void) {
    PyDateTime_IMPORT;
    return PyDateTimeAPI == NULL ? -1 : 0;
}
