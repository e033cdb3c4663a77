"""Coverage-guided fuzz targets (atheris) for every parser that reads outside bytes.

See tests/fuzz/README.md: one module per target (``tests.fuzz.fuzz_<name>``), seeds in
``tests/fuzz/corpus/<name>/``, the runner in ``tests.fuzz.run``.
"""
