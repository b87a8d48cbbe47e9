/* Building the node tree of a reading program (see _avro_reader.c for what the program is). */
#include "_avro_program.h"

#include <string.h>

void avro_free_node(node *n)
{
    if (n->children != NULL) {
        Py_ssize_t k = n->op == OP_RECORD ? n->count : 1;
        for (Py_ssize_t i = 0; i < k; i++)
            avro_free_node(&n->children[i]);
        PyMem_Free(n->children);
        n->children = NULL;
    }
    Py_CLEAR(n->constant);
}

static int bad_program(const char *why)
{
    PyErr_Format(PyExc_ValueError, "not a reading program: %s", why);
    return -1;
}

static int build_children(node *out, Py_ssize_t k)
{
    out->children = PyMem_Calloc((size_t)(k > 0 ? k : 1), sizeof(node));
    if (out->children == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int string_tuple(PyObject *value)
{
    if (!PyTuple_CheckExact(value))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(value); i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(value, i)))
            return 0;
    return 1;
}

int avro_build_node(PyObject *step, node *out, int depth)
{
    if (depth > MAX_DEPTH)
        return bad_program("nested too deeply");
    if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) < 1 || !PyUnicode_Check(PyTuple_GET_ITEM(step, 0)))
        return bad_program("each step is a tuple starting with its operation's name");
    const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(step, 0));
    Py_ssize_t size = PyTuple_GET_SIZE(step);
    if (name == NULL)
        return -1;
    out->min_width = 1;
    if (strcmp(name, "null") == 0 && size == 1) {
        out->op = OP_NULL;
        out->min_width = 0;
    } else if (strcmp(name, "string") == 0 && size == 1) {
        out->op = OP_STRING;
    } else if (strcmp(name, "int") == 0 && size == 1) {
        out->op = OP_INT;
    } else if (strcmp(name, "long") == 0 && size == 1) {
        out->op = OP_LONG;
    } else if (strcmp(name, "timestamp-micros") == 0 && size == 1) {
        out->op = OP_TIMESTAMP;
    } else if (strcmp(name, "enum") == 0 && size == 2) {
        PyObject *symbols = PyTuple_GET_ITEM(step, 1);
        if (!string_tuple(symbols))
            return bad_program("enum symbols must be a tuple of str");
        out->op = OP_ENUM;
        out->count = PyTuple_GET_SIZE(symbols);
        out->constant = Py_NewRef(symbols);
    } else if (strcmp(name, "array") == 0 && size == 2) {
        out->op = OP_ARRAY;
        if (build_children(out, 1) < 0)
            return -1;
        return avro_build_node(PyTuple_GET_ITEM(step, 1), &out->children[0], depth + 1);
    } else if (strcmp(name, "union") == 0 && size == 3) {
        long null_index = PyLong_Check(PyTuple_GET_ITEM(step, 1)) ? PyLong_AsLong(PyTuple_GET_ITEM(step, 1)) : -1;
        if (null_index != 0 && null_index != 1) {
            PyErr_Clear();
            return bad_program("a union's null index must be 0 or 1");
        }
        out->op = OP_UNION;
        out->null_index = (int)null_index;
        if (build_children(out, 1) < 0)
            return -1;
        return avro_build_node(PyTuple_GET_ITEM(step, 2), &out->children[0], depth + 1);
    } else if (strcmp(name, "record") == 0 && size == 3) {
        PyObject *names = PyTuple_GET_ITEM(step, 1), *fields = PyTuple_GET_ITEM(step, 2);
        if (!string_tuple(names) || !PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != PyTuple_GET_SIZE(names))
            return bad_program("a record needs a tuple of names and a tuple of as many fields");
        out->op = OP_RECORD;
        out->count = PyTuple_GET_SIZE(names);
        out->constant = Py_NewRef(names);
        out->min_width = 0;
        if (build_children(out, out->count) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < out->count; i++) {
            if (avro_build_node(PyTuple_GET_ITEM(fields, i), &out->children[i], depth + 1) < 0)
                return -1;
            out->min_width += out->children[i].min_width;
        }
    } else {
        PyErr_Format(PyExc_ValueError, "not a reading program: unknown operation %R", step);
        return -1;
    }
    return 0;
}
