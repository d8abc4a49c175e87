"""Every stage computes with one OpenBLAS kernel family, whatever the processor picks, so the collaborative model's
floats (and so its rankings and metrics) are the same bytes on every machine of this kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import botify_lab

# What the child reports: the kernel family numpy's (and scipy's) OpenBLAS runs, after importing the package first.
PROBE = (
    "import json, sys, botify_lab, numpy, scipy.linalg\n"
    "from threadpoolctl import threadpool_info\n"
    "print(json.dumps(sorted({i.get('architecture') for i in threadpool_info() if i['internal_api'] == 'openblas'})))"
)


def openblas_kernels(**environment) -> list[str]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("OPENBLAS_CORETYPE", "BOTIFY_LAB_NATIVE_BLAS")
    }
    env.update(environment)
    completed = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout)


@pytest.mark.skipif(not botify_lab._has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_the_package_pins_one_openblas_kernel_family_whatever_the_machine_chose():
    assert openblas_kernels() == [botify_lab.PINNED_OPENBLAS_CORETYPE]
    assert openblas_kernels(OPENBLAS_CORETYPE="Sandybridge") == [botify_lab.PINNED_OPENBLAS_CORETYPE]
    assert openblas_kernels(OPENBLAS_CORETYPE="Sandybridge", BOTIFY_LAB_NATIVE_BLAS="1") == ["Sandybridge"]


@pytest.mark.skipif(not botify_lab._has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_a_notebook_kernel_started_by_the_runner_inherits_the_pin():
    """The notebook runner imports the package, so the kernel process it starts loads the same kernels."""
    parent = (
        "import subprocess, sys, botify_lab.pipeline.notebook\n"
        f"subprocess.run([sys.executable, '-c', {PROBE!r}], check=True)"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"}
    env.pop("BOTIFY_LAB_NATIVE_BLAS", None)
    completed = subprocess.run([sys.executable, "-c", parent], env=env, capture_output=True, text=True, check=True)
    assert json.loads(completed.stdout) == [botify_lab.PINNED_OPENBLAS_CORETYPE]
