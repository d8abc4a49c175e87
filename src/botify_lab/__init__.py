"""Research code the pipeline stages and notebooks call: logs, models, exports and A/B analysis.

Importing the package pins OpenBLAS to one kernel family (`OPENBLAS_CORETYPE=Haswell`: AVX2 and FMA, which every
x86-64 machine of this project's kind has) before numpy loads it. OpenBLAS otherwise picks its kernels by processor
(SkylakeX on an Intel Xeon, Haswell where the platform sets it, as on AMD EPYC here), and kernels of different
widths sum in different orders: the collaborative model's ALS fit and its rankings then differ in the last bits from
machine to machine, and `make repro` would not give the committed bytes. Every stage imports this package before
numpy, and a notebook's kernel inherits the variable from the runner. `BOTIFY_LAB_NATIVE_BLAS=1` leaves the
processor's own choice (faster on some machines, not reproducible across them).
"""

import os

PINNED_OPENBLAS_CORETYPE = "Haswell"


def _has_avx2_and_fma() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx2" in flags and "fma" in flags
    except OSError:
        pass
    return False


if not os.environ.get("BOTIFY_LAB_NATIVE_BLAS") and _has_avx2_and_fma():
    os.environ["OPENBLAS_CORETYPE"] = PINNED_OPENBLAS_CORETYPE
