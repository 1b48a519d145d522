"""What to change when a training step does not fit in device memory.

Shared by the plan (`t0-train --dry_run`, before launch) and the trainer (an XLA out-of-memory
at run time), so both name the same gin knobs. The order follows what dominates: activations
and temporaries shrink with more microbatches, rematerialisation and scanned layers; the
parameters and Adafactor state shrink only with more devices holding each of them (the FSDP
rules, a wider model axis).
"""
from __future__ import annotations

from typing import Optional

from t0_jax.model.config import T5Config


def memory_advice(config: T5Config, *, batch_size: int, num_microbatches: int,
                  num_partitions: int, partition_rules: str, num_devices: int,
                  state_dominates: bool = False) -> list[str]:
    """Concrete gin changes, the most effective first; each names the knob and its new value."""
    data = max(num_devices // max(num_partitions, 1), 1)
    activations = []
    micro = num_microbatches * 2
    if batch_size % micro == 0 and (batch_size // micro) % data == 0:
        activations.append(f"--gin.NUM_MICROBATCHES={micro} (each microbatch "
                           f"{batch_size // micro // data} rows per data shard; activations "
                           "shrink about in proportion)")
    if config.remat_policy not in ("full", "nothing_saveable"):
        activations.append("--gin.REMAT_POLICY=\"'full'\" (recompute each layer in the backward "
                           "pass: keeps only layer inputs)")
    if not config.scan_layers:
        activations.append("--gin.SCAN_LAYERS=True (one layer's program, reused: with remat "
                           "only one layer's activations are live)")
    state = []
    if partition_rules != "fsdp":
        state.append("--gin_file=partitioning/fsdp.gin (PARTITION_RULES='fsdp': parameters and "
                     "Adafactor state also split over the data axis)")
    wider = _next_partitions(num_partitions, num_devices, batch_size, num_microbatches)
    if wider:
        state.append(f"--gin.NUM_PARTITIONS={wider} (wider model axis: weights, optimizer state "
                     "and per-head/MLP activations split over more devices)")
    advice = state + activations if state_dominates else activations + state
    return advice or ["use a slice with more devices or more memory per device"]


def _next_partitions(num_partitions: int, num_devices: int, batch_size: int,
                     num_microbatches: int) -> Optional[int]:
    """The next model-axis width that divides the devices and leaves the batch divisible."""
    p = num_partitions * 2
    while p <= num_devices:
        data = num_devices // p
        if num_devices % p == 0 and (batch_size // num_microbatches) % data == 0:
            return p
        p *= 2
    return None


class OutOfMemoryError(RuntimeError):
    """XLA ran out of device memory running the train step (exit status 2: a config change)."""


def is_out_of_memory(error: BaseException) -> bool:
    """XLA's RESOURCE_EXHAUSTED (allocation at run time, or a TPU program too big to load)."""
    return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


def out_of_memory_error(error: BaseException, *, step: int, last_checkpoint: Optional[str],
                        advice: list[str]) -> OutOfMemoryError:
    """One message: what happened at which step, that the last checkpoint is kept, what to
    change, and how to check the change before launching again."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    kept = (f"the last checkpoint, {last_checkpoint}, is kept and a rerun resumes from it"
            if last_checkpoint else "no checkpoint was written yet")
    return OutOfMemoryError(
        f"out of device memory in train step {step} ({first[:200]}); {kept}. "
        f"{format_advice(advice)}. Check a change before launching with the same command and "
        "--dry_run (add --topology=NAME for a TPU slice).")


def format_advice(advice: list[str]) -> str:
    return "Try, in this order: " + "; ".join(f"({i}) {a}" for i, a in enumerate(advice, 1))
