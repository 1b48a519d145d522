"""XLA:CPU compiler options for the compiled programs that run the model on a CPU.

jaxlib 0.10's XLA:CPU hands reductions to YNNPACK fusions, which sum over a leading axis
30-40x slower than XLA's own loops (measured: four [8, 6, 256, 256] sums over the batch axis,
78 ms of CPU time against 1.7 ms). A train step is full of such sums: the gradient of the
relative-position bias shared by the batch and the layers, Adafactor's factored second
moments, the layer-norm and softmax statistics. Keeping YNNPACK for the matrix products only
removes that cost and changes nothing else. These options can only be given to a top-level
`jax.jit` (the model's own jitted methods are inlined into the caller's program), so the
train step passes them when its mesh is on CPU devices.
"""
from __future__ import annotations

from typing import Optional

import jax

CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


def compiler_options(devices) -> Optional[dict[str, str]]:
    """The options for a program on `devices` (a sequence or numpy array of jax devices)."""
    first = next(iter(getattr(devices, "flat", devices)), None)
    platform = first.platform if first is not None else jax.default_backend()
    return dict(CPU_COMPILER_OPTIONS) if platform == "cpu" else None
