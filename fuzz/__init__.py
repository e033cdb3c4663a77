"""Coverage-guided fuzz targets (atheris) for every parser that reads outside bytes.

See fuzz/README.md: one module per target (``fuzz.fuzz_<name>``), seeds in
``fuzz/corpus/<name>/``, the runner in ``fuzz.run``.
"""
