"""Every stage computes with one OpenBLAS kernel family, numpy's AVX2 loops and MKL's AVX2 branch, whatever the
processor offers, so the world, the simulated listens, the collaborative model's and the exports' floats are the same
bytes on every machine of this kind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys

import pytest

from botify_lab import kernels
from tests.conftest import REPO_ROOT

# What the child reports: the kernel family numpy's (and scipy's) OpenBLAS runs, after importing the package first.
PROBE = (
    "import json, sys, botify_lab, numpy, scipy.linalg\n"
    "from threadpoolctl import threadpool_info\n"
    "print(json.dumps(sorted({i.get('architecture') for i in threadpool_info() if i['internal_api'] == 'openblas'})))"
)


UNPINNED = (
    "OPENBLAS_CORETYPE",
    "NPY_DISABLE_CPU_FEATURES",
    "NUMBA_CPU_NAME",
    "NUMBA_CPU_FEATURES",
    "MKL_CBWR",
    "OMP_WAIT_POLICY",
    kernels.OPT_OUT_VARIABLE,
)


def unpinned_output(code: str, **environment: str) -> str:
    """What a child Python prints, started without the pins (the package must set them itself)."""
    env = {**unpinned_environment(), **environment}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def openblas_kernels(**environment) -> list[str]:
    return json.loads(unpinned_output(PROBE, **environment))


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_the_package_pins_one_openblas_kernel_family_whatever_the_machine_chose():
    assert openblas_kernels() == [kernels.PINNED_OPENBLAS_CORETYPE]
    assert openblas_kernels(OPENBLAS_CORETYPE="Sandybridge") == [kernels.PINNED_OPENBLAS_CORETYPE]
    assert openblas_kernels(OPENBLAS_CORETYPE="Sandybridge", BOTIFY_LAB_NATIVE_BLAS="1") == ["Sandybridge"]


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_numba_compiles_the_training_kernels_for_one_processor_whatever_the_machine():
    probe = "import botify_lab, numba; print(numba.config.CPU_NAME, numba.config.CPU_FEATURES)"
    pinned = f"{kernels.PINNED_NUMBA_CPU} {kernels.PINNED_NUMBA_FEATURES}"
    for extra, expected in (({}, pinned), ({kernels.OPT_OUT_VARIABLE: "1"}, "None None")):
        assert unpinned_output(probe, **extra).strip() == expected


# The training's reassociated float32 dot product (LazyAdam's weight-decay term) over fixed vectors of these lengths,
# as float32 bits, compiled for the pinned x86-64-v3 code. With the host's features on an AMD EPYC with AVX-512 the
# lengths 100 and 1000 gave 3248522101 and 3252640639 (16 lanes): the 2023 Contextual's dimension is 100.
DOT_LENGTHS = (10, 32, 100, 128, 1000)
DOT_BITS = [1043208890, 1069967565, 3248522100, 1099931838, 3252640641]
DOT_PROBE = (
    "import json, numpy as np, botify_lab\n"
    "from botify_lab.research.lazy_adam import _dot\n"
    "bits = []\n"
    f"for n in {DOT_LENGTHS}:\n"
    "    a, b = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)\n"
    "    bits.append(int(np.float32(_dot(a, b)).view(np.uint32)))\n"
    "print(json.dumps(bits))"
)


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_the_trainings_dot_products_sum_in_the_same_lanes_on_every_machine():
    assert json.loads(unpinned_output(DOT_PROBE)) == DOT_BITS


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_a_notebook_kernel_started_by_the_runner_inherits_the_pin():
    """The notebook runner imports the package, so the kernel process it starts loads the same kernels."""
    parent = (
        "import subprocess, sys, botify_lab.pipeline.notebook\n"
        f"subprocess.run([sys.executable, '-c', {PROBE!r}], check=True)"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"}
    env.pop(kernels.OPT_OUT_VARIABLE, None)
    completed = subprocess.run([sys.executable, "-c", parent], env=env, capture_output=True, text=True, check=True)
    assert json.loads(completed.stdout) == [kernels.PINNED_OPENBLAS_CORETYPE]


# MKL keeps to a pinned code branch on Intel processors only (elsewhere it picks its own code whatever the setting).
on_mkls_branches = pytest.mark.skipif(
    kernels.processor_info().get("vendor_id") != "GenuineIntel" or not kernels.has_avx2_and_fma(),
    reason="MKL keeps its AVX2 branch on Intel processors with AVX2 only",
)


def test_idle_openmp_threads_wait_passively_unless_the_caller_chose():
    probe = "import os, botify_lab; print(os.environ['OMP_WAIT_POLICY'])"
    assert unpinned_output(probe).strip() == kernels.IDLE_THREADS_WAIT
    assert unpinned_output(probe, OMP_WAIT_POLICY="ACTIVE").strip() == "ACTIVE"


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_the_package_pins_mkl_to_its_avx2_branch_whatever_the_caller_set():
    probe = "import os, botify_lab; print(os.environ['MKL_CBWR'])"
    assert unpinned_output(probe).strip() == unpinned_output(probe, MKL_CBWR="AVX512").strip() == "AVX2"


# sha256 of torch's float32 product of two fixed 300 x 100 matrices (MKL's sgemm, as the export scores every track) on
# MKL's AVX2 branch, the pinned one; its AVX-512 branch gives other last bits.
MATMUL_SHA256 = "17251fc4b57ee49997ffbe18dbffd7dcabaa35bed39da1e5137a14823e75d210"
MATMUL_PROBE = (
    "import hashlib, numpy as np, botify_lab, torch\n"
    "draw = lambda n: np.random.default_rng(n).standard_normal((300, 100)).astype(np.float32)\n"
    "a, b = torch.from_numpy(draw(1)), torch.from_numpy(draw(2))\n"
    "print(hashlib.sha256((a @ b.T).numpy().tobytes()).hexdigest())"
)


@on_mkls_branches
def test_torch_matrix_products_run_mkls_avx2_branch_on_every_intel_processor():
    assert unpinned_output(MATMUL_PROBE).strip() == MATMUL_SHA256
    if "avx512f" in kernels.processor_info().get("flags", "").split():
        native = unpinned_output(MATMUL_PROBE, MKL_CBWR="AVX512", **{kernels.OPT_OUT_VARIABLE: "1"})
        assert native.strip() != MATMUL_SHA256  # what the pin prevents: the processor's own branch, other bits


def unpinned_environment() -> dict:
    return {key: value for key, value in os.environ.items() if key not in UNPINNED}


# sha256 of numpy's exp, log and power over a fixed float64 grid, as the simulated user and the world generator call
# them, with numpy's AVX2 loops (the pinned ones; measured on an AMD EPYC without AVX-512). numpy's AVX-512 loops give
# other last bits, so an unpinned AVX-512 machine fails here.
TRANSCENDENTALS_SHA256 = "a34b1ab72340c70310fd2abb148f34ce8e95da5d366f5668d647f29045ade25c"
TRANSCENDENTALS = (
    "import hashlib, sim, numpy as np\n"
    "grid = np.linspace(-40.0, 40.0, 200_001)\n"
    "digest = hashlib.sha256()\n"
    "for values in (np.exp(grid), np.log(np.abs(grid) + 1e-3), np.power(0.8, np.abs(grid)), 1 / (1 + np.exp(-grid))):\n"
    "    digest.update(values.tobytes())\n"
    "print(digest.hexdigest())"
)


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_importing_sim_pins_numpys_loops_to_the_same_floats_on_every_machine():
    assert unpinned_output(TRANSCENDENTALS).strip() == TRANSCENDENTALS_SHA256


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
@pytest.mark.skipif(bool(os.environ.get(kernels.OPT_OUT_VARIABLE)), reason="the pin is switched off here")
def test_the_test_process_itself_runs_the_pinned_loops():
    """pytest-randomly loads numpy before any conftest: tests/pin_kernels.py (a `-p` plugin in pyproject's addopts)
    must pin first, or every in-process byte check of the suite would see the AVX-512 loops."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(TRANSCENDENTALS, {})
    assert printed.getvalue().strip() == TRANSCENDENTALS_SHA256


# sha256 of each file of a small catalog-tree world from params.yaml's knobs (`python -m sim world --source generated`),
# on the pinned loops (the listening world's own digest is in tests/sim/test_listening.py).
# A change of the `world:` knobs changes them on purpose; the pinned bytes are the same on any machine, so record
# the new ones wherever the test runs.
SMALL_WORLD_SHA256 = {
    "tracks.json": "0bba51ee610718bbae3dadab8b5d693024aa2514081ffef447f46191b58c8153",
    "tracks.npy": "d3feda36f7e56c6fa3c21b09289c0724c32a51387473c0e698c62327e549ab6c",
    "users.json": "ad1addf53a817228bc803021cceb71684e82dc0f4dfd91c5d0bbd9776651c936",
    "world.json": "0966ab65dc389d2a932d6af76a2fbe4582bb88452dae055af002b0d555864703",
}


@pytest.mark.skipif(not kernels.has_avx2_and_fma(), reason="the pin needs AVX2 and FMA (x86-64-v3)")
def test_the_world_generator_writes_the_same_bytes_on_every_machine(tmp_path):
    out = tmp_path / "world"
    command = [sys.executable, "-m", "sim", "world", "--out", str(out), "--params", str(REPO_ROOT / "params.yaml")]
    command += ["--source", "generated", "--tracks", "3000", "--users", "400"]
    subprocess.run(command, env=unpinned_environment(), cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    digests = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(out.iterdir())}
    assert digests == SMALL_WORLD_SHA256
