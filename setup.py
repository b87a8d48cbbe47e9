"""The one part of the build pyproject.toml cannot declare without an experimental table: the C extensions.

`assetlog.schemas._avro_reader` (schemas/_avro_reader.c, _avro_program.c) is the compiled Avro reader of the consumers'
hot path (docs/development.md, "The compiled Avro reader"); `assetlog.projections._fast_events`
(projections/_fast_events.c, _copy_binary.c) is validation's fast path beside it, with binary COPY's row formatting. Both are optional: where no C compiler or
Python headers are found, the install still succeeds, decoding uses the generated Python readers and
validation `to_event` alone, with the same results (`assetlog status` says which this installation uses). Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("assetlog.schemas._avro_reader", ["schemas/_avro_reader.c", "schemas/_avro_program.c"],
              depends=["schemas/_avro_program.h"], optional=True, extra_compile_args=["-O2"]),
    Extension("assetlog.projections._fast_events", ["projections/_fast_events.c", "projections/_copy_binary.c"],
              depends=["projections/_copy_binary.h"], optional=True, extra_compile_args=["-O2"]),
])
