/* Validation's fast path in C: `Acceptor(...)(event_type, record, position) -> Event | None`.
 *
 * projections/events.py's `to_event` holds every rule and every dead-letter reason. Each consumed
 * message passes it, and for a common valid event it cost as much as decoding (bench/README.md,
 * issue 15, seventh pass). This module only accepts: it returns the Event that `to_event` would
 * return for a decoded record whose checks all pass the common way (ids already lowercase, keys
 * within the key rule, no owner or edge near a size limit), and None for anything else, whereupon
 * `to_event` runs and decides, raising the reason it always raised. So it may only be faster, never
 * different: tests/test_fast_events.py compares it with `to_event`, event by event, with hypothesis,
 * over valid records and over records broken in every checked field.
 *
 * It also holds the UUID text test `to_event` itself uses (is_uuid_text), and binary COPY's row
 * formatting (format_rows, in _copy_binary.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <structmember.h>
#include <math.h>
#include <string.h>

#include "_copy_binary.h"

/* Whether the str `value` is canonical 8-4-4-4-12 hex UUID text, of either case (lowercase_only: of
 * lowercase only). The rule is projections/events.py's _UUID_TEXT regex; tests/test_fast_events.py
 * compares the two. */
static int uuid_chars(PyObject *value, int lowercase_only)
{
    if (!PyUnicode_IS_ASCII(value) || PyUnicode_GET_LENGTH(value) != 36)
        return 0;
    const Py_UCS1 *text = PyUnicode_1BYTE_DATA(value);
    for (int i = 0; i < 36; i++) {
        Py_UCS1 ch = text[i];
        int ok = (i == 8 || i == 13 || i == 18 || i == 23)
                     ? ch == '-'
                     : (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                           (!lowercase_only && ch >= 'A' && ch <= 'F');
        if (!ok)
            return 0;
    }
    return 1;
}

/* The fast path's test: an exact str (to_event refuses subclasses as ids) holding UUID text. */
static int uuid_text(PyObject *value, int lowercase_only)
{
    return PyUnicode_CheckExact(value) && uuid_chars(value, lowercase_only);
}

static PyObject *is_uuid_text(PyObject *module, PyObject *value)
{
    (void)module;
    /* str subclasses too, as the regex reads them */
    return PyBool_FromLong(PyUnicode_Check(value) && uuid_chars(value, 0));
}

enum { N_EVENT_ID, N_EVENT_TIME, N_RUN, N_TASK_RUN_ID, N_FLOW_RUN_ID, N_ASSET_KEY, N_UPSTREAM_KEYS,
       N_PROPERTIES, N_DOWNSTREAM_KEY, N_UPSTREAM_KEY, N_MATERIALIZATION_EVENT_ID, N_UPSTREAM_PROPERTIES,
       N_OWNERS, N_METADATA_JSON, N_NAMES };
static const char *NAMES[N_NAMES] = {"event_id", "event_time", "run", "task_run_id", "flow_run_id", "asset_key",
                                     "upstream_keys", "properties", "downstream_key", "upstream_key",
                                     "materialization_event_id", "upstream_properties", "owners", "metadata_json"};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *event_type; /* the Event named tuple */
    PyObject *materialization, *dependency, *metadata; /* the event type names */
    Py_ssize_t max_key_chars; /* schemas/keys.py's MAX_ASSET_KEY_LENGTH */
    char restricted[128];     /* 1 for each of schemas/keys.py's RESTRICTED_ASSET_CHARACTERS (all ASCII) */
    PyObject *field_counts;   /* events.py's _FIELD_COUNTS: fields of the newest schema, by event type */
    PyObject *parse_metadata; /* events.py's _metadata(text, text_checked) */
    PyObject *loads;          /* orjson.loads, which _metadata uses for such text */
    Py_ssize_t max_depth;     /* events.py's MAX_METADATA_DEPTH */
    Py_ssize_t max_owner_chars, max_edge_chars; /* past these lengths a size check is due: to_event's */
    PyObject *names[N_NAMES]; /* the field names, interned */
} Acceptor;

/* record[name] of a dict (NULL, no error, when missing). */
#define FIELD(record, self, n) PyDict_GetItemWithError((record), (self)->names[(n)])

/* 1 when the exact str `key` passes schemas/keys.py's validate_asset_key, 0 otherwise: at most
 * max_key_chars characters, none of the restricted ones, and a scheme of [a-z0-9]+ followed by "://"
 * (the rule's VALID_ASSET_KEY regex, "^[a-z0-9]+://"; tests/test_fast_events.py compares the two). Made
 * here for every key rather than remembered: a consumer of a million assets sees most keys again only
 * after a hundred thousand others, and events.py's cache of validated keys forgets them before that. */
static int valid_key(Acceptor *self, PyObject *key)
{
    if (key == NULL || !PyUnicode_CheckExact(key))
        return 0;
    Py_ssize_t length = PyUnicode_GET_LENGTH(key), i = 0;
    if (length > self->max_key_chars)
        return 0;
    int kind = PyUnicode_KIND(key);
    const void *data = PyUnicode_DATA(key);
    for (; i < length; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')))
            break;
    }
    if (i == 0 || length - i < 3 || PyUnicode_READ(kind, data, i) != ':' ||
        PyUnicode_READ(kind, data, i + 1) != '/' || PyUnicode_READ(kind, data, i + 2) != '/')
        return 0;
    /* the scheme and its "://" hold no restricted character: the rest may */
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *text = data;
        for (i += 3; i < length; i++)
            if (text[i] < 128 && self->restricted[text[i]])
                return 0;
    } else {
        for (i += 3; i < length; i++) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, i);
            if (ch < 128 && self->restricted[ch])
                return 0;
        }
    }
    return 1;
}

/* 1 when `properties` needs no owner check beyond what to_event's inline test settles. */
static int owners_fine(Acceptor *self, PyObject *properties)
{
    if (properties == NULL || properties == Py_None)
        return 1;
    if (!PyDict_CheckExact(properties))
        return 0;
    if (PyDict_GET_SIZE(properties) == 0)
        return 1;
    PyObject *owners = FIELD(properties, self, N_OWNERS);
    if (owners == NULL || owners == Py_None)
        return 1;
    if (!PyList_CheckExact(owners))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(owners); i++) {
        PyObject *owner = PyList_GET_ITEM(owners, i);
        if (!PyUnicode_CheckExact(owner) || PyUnicode_GET_LENGTH(owner) > self->max_owner_chars)
            return 0;
    }
    return 1;
}

/* 1 when parsed metadata needs nothing `_check_json(value, strings=False)` would refuse: finite numbers, at
 * most max_depth levels of containers (the document itself is level 1); 0 on any doubt. */
static int metadata_fine(Acceptor *self, PyObject *value, Py_ssize_t depth)
{
    if (PyFloat_CheckExact(value))
        return isfinite(PyFloat_AS_DOUBLE(value));
    if (PyDict_CheckExact(value)) {
        if (depth > self->max_depth)
            return 0;
        Py_ssize_t at = 0;
        PyObject *name, *item;
        while (PyDict_Next(value, &at, &name, &item))
            if (!metadata_fine(self, item, depth + 1))
                return 0;
        return 1;
    }
    if (PyList_CheckExact(value)) {
        if (depth > self->max_depth)
            return 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++)
            if (!metadata_fine(self, PyList_GET_ITEM(value, i), depth + 1))
                return 0;
        return 1;
    }
    /* str, int, bool, None: nothing to check when the decoder proved the text free of NUL and no
     * backslash can make a character of it; any other type is a doubt */
    return PyUnicode_CheckExact(value) || PyLong_CheckExact(value) || value == Py_None || PyBool_Check(value);
}

/* `_metadata(text, True)` for the common text: without a backslash (its strings are pieces of the text,
 * which the decoder proved free of NUL and lone surrogates) and without 19 digits in a row (an integer
 * orjson might read as a float), orjson.loads, then the checks above. NULL with no error when in doubt:
 * `_metadata` decides. */
static PyObject *common_metadata(Acceptor *self, PyObject *text)
{
    if (!PyUnicode_CheckExact(text))
        return NULL;
    Py_ssize_t length = PyUnicode_GET_LENGTH(text), digits = 0;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch == '\\')
            return NULL;
        digits = (ch >= '0' && ch <= '9') ? digits + 1 : 0;
        if (digits >= 19)
            return NULL;
    }
    PyObject *value = PyObject_CallOneArg(self->loads, text);
    if (value == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyDict_CheckExact(value) || !metadata_fine(self, value, 1)) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

/* The Event (event_type, event_id, event_time, asset_key, materialization_event_id, record, position,
 * metadata); steals nothing. */
static PyObject *new_event(Acceptor *self, PyObject *items[8])
{
    PyObject *event = self->event_type->tp_alloc(self->event_type, 8);
    if (event == NULL)
        return NULL;
    for (int i = 0; i < 8; i++)
        PyTuple_SET_ITEM(event, i, Py_NewRef(items[i]));
    return event;
}

/* Only for a record the compiled decoder read (decode_checked's text_checked): it proved that no string
 * holds a NUL character, the one check of to_event this function does not repeat. */
static PyObject *accept(Acceptor *self, PyObject *event_type, PyObject *record, PyObject *position)
{
    PyObject *parsed = NULL; /* a metadata event's parsed metadata_json (owned) */
    if (!PyDict_CheckExact(record) || !PyUnicode_CheckExact(event_type))
        Py_RETURN_NONE;
    PyObject *count = PyDict_GetItemWithError(self->field_counts, event_type);
    if (count == NULL || !PyLong_CheckExact(count) || PyDict_GET_SIZE(record) < PyLong_AsSsize_t(count)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *event_id = FIELD(record, self, N_EVENT_ID);
    if (event_id == NULL || !uuid_text(event_id, 1))
        goto undecided;
    PyObject *event_time = FIELD(record, self, N_EVENT_TIME);
    if (event_time == NULL || !PyDateTime_Check(event_time) || !_PyDateTime_HAS_TZINFO(event_time))
        goto undecided; /* a naive time: its tzinfo is None */
    PyObject *run = FIELD(record, self, N_RUN);
    if (run == NULL || !PyDict_CheckExact(run))
        goto undecided;
    PyObject *run_id = FIELD(run, self, N_TASK_RUN_ID);
    if (run_id == NULL || !uuid_text(run_id, 0))
        goto undecided;
    run_id = FIELD(run, self, N_FLOW_RUN_ID);
    if (run_id != NULL && run_id != Py_None && !uuid_text(run_id, 0))
        goto undecided;

    PyObject *asset_key, *materialization_id, *metadata = Py_None;
    if (event_type == self->materialization || PyUnicode_Compare(event_type, self->materialization) == 0) {
        asset_key = FIELD(record, self, N_ASSET_KEY);
        if (!valid_key(self, asset_key))
            goto undecided;
        PyObject *upstreams = FIELD(record, self, N_UPSTREAM_KEYS);
        if (upstreams != NULL && upstreams != Py_None) {
            if (!PyList_CheckExact(upstreams))
                goto undecided;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(upstreams); i++)
                if (!valid_key(self, PyList_GET_ITEM(upstreams, i)))
                    goto undecided;
        }
        materialization_id = event_id;
        if (!owners_fine(self, FIELD(record, self, N_PROPERTIES)))
            goto undecided;
    } else if (event_type == self->dependency || PyUnicode_Compare(event_type, self->dependency) == 0) {
        asset_key = FIELD(record, self, N_DOWNSTREAM_KEY);
        PyObject *upstream = FIELD(record, self, N_UPSTREAM_KEY);
        if (!valid_key(self, asset_key) || !valid_key(self, upstream) ||
            PyUnicode_GET_LENGTH(asset_key) + PyUnicode_GET_LENGTH(upstream) > self->max_edge_chars)
            goto undecided;
        materialization_id = FIELD(record, self, N_MATERIALIZATION_EVENT_ID);
        if (materialization_id == NULL || !uuid_text(materialization_id, 1))
            goto undecided;
        if (!owners_fine(self, FIELD(record, self, N_UPSTREAM_PROPERTIES)))
            goto undecided;
    } else if (event_type == self->metadata || PyUnicode_Compare(event_type, self->metadata) == 0) {
        asset_key = FIELD(record, self, N_ASSET_KEY);
        if (!valid_key(self, asset_key))
            goto undecided;
        materialization_id = FIELD(record, self, N_MATERIALIZATION_EVENT_ID);
        if (materialization_id == NULL || !uuid_text(materialization_id, 1))
            goto undecided;
        PyObject *text = FIELD(record, self, N_METADATA_JSON);
        if (text == NULL)
            goto undecided;
        /* the last check to_event makes (the text was proven free of NUL by the decoder: text_checked) */
        parsed = common_metadata(self, text);
        if (parsed == NULL)
            parsed = PyObject_CallFunctionObjArgs(self->parse_metadata, text, Py_True, NULL);
        if (parsed == NULL)
            goto undecided; /* to_event parses it again and raises its reason */
        metadata = parsed;
    } else {
        goto undecided;
    }
    if (PyErr_Occurred())
        goto undecided;
    PyObject *items[8] = {event_type, event_id, event_time, asset_key, materialization_id, record, position,
                          metadata};
    PyObject *event = new_event(self, items);
    Py_XDECREF(parsed);
    return event;

undecided:
    Py_XDECREF(parsed);
    PyErr_Clear();
    Py_RETURN_NONE;
}

static PyObject *acceptor_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 3 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Acceptor(event_type, record, position) takes 3 positional arguments");
        return NULL;
    }
    return accept((Acceptor *)callable, args[0], args[1], args[2]);
}

static PyObject *acceptor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *event_type, *materialization, *dependency, *metadata, *restricted_key_chars, *field_counts;
    PyObject *parse_metadata, *loads;
    Py_ssize_t max_key_chars, max_owner_chars, max_edge_chars, max_depth;
    static char *keywords[] = {"event", "materialization", "dependency", "metadata", "restricted_key_chars",
                               "max_key_chars", "field_counts", "parse_metadata", "loads", "max_owner_chars",
                               "max_edge_chars", "max_depth", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!UUUUnO!OOnnn:Acceptor", keywords, &PyType_Type, &event_type,
                                     &materialization, &dependency, &metadata, &restricted_key_chars,
                                     &max_key_chars, &PyDict_Type, &field_counts, &parse_metadata, &loads,
                                     &max_owner_chars, &max_edge_chars, &max_depth))
        return NULL;
    if (!PyUnicode_IS_ASCII(restricted_key_chars)) {
        PyErr_SetString(PyExc_ValueError, "Acceptor: restricted_key_chars must all be ASCII");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type) || !PyCallable_Check(parse_metadata) ||
        !PyCallable_Check(loads)) {
        PyErr_SetString(PyExc_TypeError, "Acceptor: event must be a tuple type, parse_metadata and loads callable");
        return NULL;
    }
    Acceptor *self = (Acceptor *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = acceptor_vectorcall;
    self->event_type = (PyTypeObject *)Py_NewRef(event_type);
    self->materialization = Py_NewRef(materialization);
    self->dependency = Py_NewRef(dependency);
    self->metadata = Py_NewRef(metadata);
    self->max_key_chars = max_key_chars;
    memset(self->restricted, 0, sizeof self->restricted);
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(restricted_key_chars); i++)
        self->restricted[PyUnicode_1BYTE_DATA(restricted_key_chars)[i]] = 1;
    self->field_counts = Py_NewRef(field_counts);
    self->parse_metadata = Py_NewRef(parse_metadata);
    self->loads = Py_NewRef(loads);
    self->max_depth = max_depth;
    self->max_owner_chars = max_owner_chars;
    self->max_edge_chars = max_edge_chars;
    for (int i = 0; i < N_NAMES; i++) {
        self->names[i] = PyUnicode_InternFromString(NAMES[i]);
        if (self->names[i] == NULL) {
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

static void acceptor_dealloc(Acceptor *self)
{
    Py_CLEAR(self->event_type);
    Py_CLEAR(self->materialization);
    Py_CLEAR(self->dependency);
    Py_CLEAR(self->metadata);
    Py_CLEAR(self->field_counts);
    Py_CLEAR(self->parse_metadata);
    Py_CLEAR(self->loads);
    for (int i = 0; i < N_NAMES; i++)
        Py_CLEAR(self->names[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject AcceptorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "assetlog.projections._fast_events.Acceptor",
    .tp_doc = PyDoc_STR("Acceptor(...)(event_type, record, position) -> Event | None: the Event to_event "
                        "returns for a record whose checks all pass the common way; None: let to_event decide."),
    .tp_basicsize = sizeof(Acceptor),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = acceptor_new,
    .tp_dealloc = (destructor)acceptor_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Acceptor, vectorcall),
};

static PyMethodDef functions[] = {
    {"is_uuid_text", is_uuid_text, METH_O,
     PyDoc_STR("is_uuid_text(value) -> bool: canonical 8-4-4-4-12 hex UUID text (either case), as "
               "projections.events._UUID_TEXT.fullmatch decides")},
    {"format_rows", assetlog_format_rows, METH_VARARGS,
     PyDoc_STR("format_rows(rows, kinds) -> bytes | None: the rows' binary COPY tuples (projections/_copy_binary.c), "
               "or None when a value is not of a form it knows")},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "assetlog.projections._fast_events",
    .m_doc = PyDoc_STR("Validation's fast path in C; projections/events.py holds the rules."),
    .m_size = -1,
    .m_methods = functions,
};

PyMODINIT_FUNC PyInit__fast_events(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL || assetlog_copy_binary_init() < 0 || PyType_Ready(&AcceptorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Acceptor", (PyObject *)&AcceptorType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
