/* The reading program as a tree of C nodes: shared by the program builder (_avro_program.c) and the
 * reader that walks it (_avro_reader.c). */
#ifndef ASSETLOG_AVRO_PROGRAM_H
#define ASSETLOG_AVRO_PROGRAM_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum op { OP_NULL, OP_STRING, OP_INT, OP_LONG, OP_TIMESTAMP, OP_ENUM, OP_ARRAY, OP_UNION, OP_RECORD };

typedef struct node {
    enum op op;
    int null_index;         /* union: the branch index that means null (0 or 1) */
    Py_ssize_t count;       /* record: fields; enum: symbols */
    Py_ssize_t min_width;   /* fewest bytes a value takes: lets an array refuse a count the bytes cannot hold */
    PyObject *constant;     /* record: tuple of field names; enum: tuple of symbols (owned) */
    struct node *children;  /* record: one per field; array: the item; union: the non-null branch */
} node;

#define MAX_DEPTH 64

/* Build `out` from a reading program (specialised.py's `program()`); -1 with ValueError if it is not one. */
int avro_build_node(PyObject *step, node *out, int depth);

/* Release what avro_build_node made (also after a failed build). */
void avro_free_node(node *n);

#endif
