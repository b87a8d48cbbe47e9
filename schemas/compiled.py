"""Which Avro reader decodes a writer schema: the compiled one when the extension was built, else Python.

The C extension `_avro_reader` (schemas/_avro_reader.c) interprets the reading program that
`specialised.program` derives from a writer schema; it reads and refuses exactly what the generated
Python reader of the same schema does, for a fraction of the CPU. It is built by `pip install`, but
optionally (setup.py): on a machine without a C compiler the install still succeeds, and this module
falls back to the generated Python readers, which stay the readable reference. `READER_KIND` says
which one this installation uses; `assetlog status` shows it to operators.
"""

from __future__ import annotations

from typing import Any

from assetlog.schemas.specialised import Reader, Unsupported, compile_reader, program

try:
    from assetlog.schemas import _avro_reader
except ImportError:  # built without a C compiler: the generated Python readers do the work
    _avro_reader = None

READER_KIND = "compiled" if _avro_reader is not None else "python"


def compiled_reader(schema: Any) -> Reader | None:
    """The C reader of `schema`; None when the extension is missing or the schema has unsupported types."""
    if _avro_reader is None:
        return None
    try:
        return _avro_reader.Reader(program(schema))
    except Unsupported:
        return None


def best_reader(schema: Any, label: str = "schema") -> Reader | None:
    """The fastest specialised reader available for `schema`, or None (then fastavro alone decodes it)."""
    return compiled_reader(schema) or compile_reader(schema, label)
