"""Research code the pipeline stages and notebooks call: logs, models, exports and A/B analysis.

Importing the package pins the numeric kernels before numpy loads (`botify_lab.kernels`), so every stage computes
the same bytes on every machine of this kind.
"""

from botify_lab.kernels import pin_numeric_kernels

pin_numeric_kernels()
