"""One set of numeric kernels on every machine of this kind, so the same seed gives the same bytes everywhere.

Two libraries pick their code by processor, and code of different widths rounds differently:
- OpenBLAS (numpy's and scipy's BLAS) picks SkylakeX kernels on an Intel Xeon and Haswell ones where the platform sets
  it (as on AMD EPYC), and kernels of different widths sum in different orders: the collaborative model's ALS fit and
  its rankings then differ in the last bits. Pinned to `OPENBLAS_CORETYPE=Haswell` (AVX2 and FMA, which every
  x86-64-v3 processor has).
- numpy's own SIMD loops: with AVX-512 it runs other `exp`/`log`/`power` code (within an ulp, not the same ulp), so
  the world generator wrote a `users.json` differing in the last digit and the simulated user's listen times could
  differ. Pinned by switching numpy's AVX-512 dispatch off (`NPY_DISABLE_CPU_FEATURES`), so an AVX-512 machine runs
  the AVX2 loops every x86-64-v3 machine runs.
- numba compiles the training's LazyAdam for the processor it runs on. Its element-wise passes round the same at any
  vector width, but its dot products sum in vector lanes (reassociated), and the lane count follows the instruction
  set: pinned to Haswell code (`NUMBA_CPU_NAME`) and to the x86-64-v3 instruction set (`NUMBA_CPU_FEATURES`; with
  the CPU name alone numba still passes the host's features, so an AVX-512 machine summed in 16 lanes, and an AMD
  EPYC with AVX-512 trained round 1's model to another test MSE in the sixth digit and served other lists), so the
  compiled code and its cache are one and the same on every x86-64-v3 machine.
- torch runs its matrix products and its vector math (sqrt, rsqrt, exp, log) in MKL, which picks its code by
  processor too. On an Intel Xeon with AVX-512, MKL's AVX-512 branch gave a sqrt one ulp off in 0.7% of values
  (its AVX2 branch: none), so a cosine model's validation losses differed from an AMD EPYC's in the last digits,
  and its sgemm gave other last bits of the export's scores. Pinned to MKL's AVX2 branch (`MKL_CBWR`, its
  conditional numerical reproducibility): the same code on every Intel processor with AVX2. On other vendors'
  processors MKL ignores the branch and picks its own code (only its `COMPATIBLE` branch is the same everywhere,
  at twice the time of a matrix product, and its sqrt is not correctly rounded either); what the pipeline keeps of
  those floats (ranked lists, losses rounded to 6 digits) has come out the same on the EPYCs and the Xeon.

One more variable is about time, not bytes: OpenMP's idle threads (numba's, for LazyAdam's threaded steps, and
torch's) wait passively (`OMP_WAIT_POLICY`, unless the caller set it). By default they spin between parallel regions,
and when two stages share the 2 cores a spinning thread takes the core the other stage's thread needs: a threaded
training step took 10.7 ms against 5.6 ms on one thread beside another training, and 4.5-5 ms waiting passively; alone,
2.9 ms passively against 2.5 ms spinning (the 128-dim cosine model; `bench/train_step.py` measures it).

The variables act only when the library loads, so `pin_numeric_kernels()` runs before numpy: importing `botify_lab`
or `sim` calls it (every stage, notebook runner and `python -m sim` does), and processes they start inherit it.
`BOTIFY_LAB_NATIVE_BLAS=1` leaves the processor's own choice (faster on some machines, not reproducible across them).
"""

from __future__ import annotations

import os

PINNED_OPENBLAS_CORETYPE = "Haswell"
DISABLED_NUMPY_FEATURES = "X86_V4 AVX512_ICL AVX512_SPR"  # numpy 2.x's AVX-512 dispatch targets
PINNED_NUMBA_CPU = "haswell"
PINNED_MKL_BRANCH = "AVX2"
# x86-64-v3 (what NUMBA_CPU_NAME=haswell implies, none of AVX-512): LLVM's feature names, as numba passes them.
PINNED_NUMBA_FEATURES = (
    "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sahf,+sse,+sse2,"
    "+sse3,+sse4.1,+sse4.2,+ssse3,+xsave"
)
OPT_OUT_VARIABLE = "BOTIFY_LAB_NATIVE_BLAS"
IDLE_THREADS_WAIT = "PASSIVE"


def processor_info() -> dict:
    """The first processor's entries of /proc/cpuinfo (`model name`, `flags`, ...); empty where there is none."""
    info: dict = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if not key.strip():
                    break
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def has_avx2_and_fma() -> bool:
    flags = processor_info().get("flags", "").split()
    return "avx2" in flags and "fma" in flags


def pin_numeric_kernels() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", IDLE_THREADS_WAIT)
    if os.environ.get(OPT_OUT_VARIABLE) or not has_avx2_and_fma():
        return
    os.environ["OPENBLAS_CORETYPE"] = PINNED_OPENBLAS_CORETYPE
    os.environ["NPY_DISABLE_CPU_FEATURES"] = DISABLED_NUMPY_FEATURES
    os.environ["NUMBA_CPU_NAME"] = PINNED_NUMBA_CPU
    os.environ["NUMBA_CPU_FEATURES"] = PINNED_NUMBA_FEATURES
    os.environ["MKL_CBWR"] = PINNED_MKL_BRANCH
