/* Binary COPY rows in C (projections/_copy_binary.c), part of the `_fast_events` extension. */
#ifndef ASSETLOG_COPY_BINARY_H
#define ASSETLOG_COPY_BINARY_H
#include <Python.h>

PyObject *assetlog_format_rows(PyObject *module, PyObject *args);
int assetlog_copy_binary_init(void);

#endif
