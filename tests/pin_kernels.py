"""Pins the numeric kernels before any installed pytest plugin loads numpy (`-p tests.pin_kernels` in pyproject's
addopts: `-p` plugins load before the entry-point ones, and after `pythonpath` is set).

pytest-randomly imports numpy as it loads, before any conftest, and numpy and OpenBLAS read the pin only then: without
this the byte-exact checks (the listening world's hash, ...) would see numpy's AVX-512 loops."""

from botify_lab.kernels import pin_numeric_kernels

pin_numeric_kernels()
