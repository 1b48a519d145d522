"""A plan before launch: compile the real train step ahead of time and report its memory.

`plan_train_step(...)` builds the trainer's state layout (`state.state_layout`) and its jitted
step (`steps.jit_train_step`) for a mesh of `devices`, lowers it with ShapeDtypeStructs that
carry the shardings the trainer's arrays have, and compiles it. Nothing is allocated, no data
and no checkpoint are read, so a laptop can plan a run for a TPU slice it does not have
(`devices` from `topologies.slice_devices`, REFERENCE.md §9).

Per device it reports the parameters and Adafactor state (from their shard shapes), XLA's
temporaries (`compiled.memory_analysis()`) and the program's total, against the device's
memory. FLOPs per step are counted analytically (`metrics.flops_per_sequence`):
`compiled.cost_analysis()` counts a loop body once, so scanned layers and microbatch
accumulation would be undercounted by their trip counts. The MFU bound is model FLOPs over
the FLOPs the program executes (rematerialisation recomputes part of the forward pass).
"""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from t0_jax.model.config import T5Config
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from t0_jax.train import metrics as metrics_lib, steps
from t0_jax.train.memory_advice import is_out_of_memory, memory_advice
from t0_jax.train.state import abstract_with_shardings, make_optimizer, state_layout

# The compiled program's total must stay under this share of a device's memory: the runtime
# keeps some for itself (TPU: ~0.75 of 16 GiB per core), and fragmentation needs slack.
USABLE_FRACTION = 0.95
PACKED_FEATURES = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions",
                   "decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                   "decoder_segment_ids", "decoder_positions")
UNPACKED_FEATURES = ("encoder_input_tokens", "decoder_target_tokens", "decoder_input_tokens",
                     "decoder_loss_weights")
# libtpu's refusal, e.g. "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required
# for HLO temporaries (38.45G) exceeds available HBM (15.25G)." (XLA prints binary units: G = GiB)
_OOM_TEMPORARIES = re.compile(r"temporaries \(([\d.]+)([KMGT]?)i?B?\)")
_OOM_AVAILABLE = re.compile(r"available HBM \(([\d.]+)([KMGT]?)i?B?\)")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclasses.dataclass
class Plan:
    """What one compiled train step needs per device, and whether that fits."""

    target: str  # "local cpu" or the --topology name
    device_kind: str
    mesh_shape: dict
    model: dict  # size summary of the config
    run: dict  # batch, lengths, microbatches, scan, remat, rules
    bytes_per_device: dict  # params, optimizer, batch, temporaries, total
    device_memory_bytes: Optional[int]
    flops_per_step: float  # global, analytic (model FLOPs)
    executed_flops_per_step: float  # with rematerialisation's recompute
    peak_flops_per_device: Optional[float]
    compile_seconds: float
    advice: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)  # what the plan changed, and why
    compile_error: Optional[str] = None  # the compiler's out-of-memory message, first line

    @property
    def num_devices(self) -> int:
        n = 1
        for v in self.mesh_shape.values():
            n *= v
        return n

    @property
    def fits(self) -> Optional[bool]:
        """None when the device's memory is unknown (a CPU without --device_memory_gib); False
        when the compiler itself ran out of device memory."""
        if self.compile_error is not None:
            return False
        if self.device_memory_bytes is None:
            return None
        return self.bytes_per_device["total"] <= USABLE_FRACTION * self.device_memory_bytes

    @property
    def mfu_bound(self) -> float:
        return self.flops_per_step / self.executed_flops_per_step

    @property
    def min_step_seconds(self) -> Optional[float]:
        if not self.peak_flops_per_device:
            return None
        return self.executed_flops_per_step / (self.peak_flops_per_device * self.num_devices)

    def to_json(self) -> dict:
        return {"fits": self.fits, "target": self.target, "device_kind": self.device_kind,
                "num_devices": self.num_devices, "mesh_shape": self.mesh_shape,
                "model": self.model, "run": self.run,
                "bytes_per_device": self.bytes_per_device,
                "device_memory_bytes": self.device_memory_bytes,
                "usable_fraction": USABLE_FRACTION,
                "flops_per_step": self.flops_per_step,
                "executed_flops_per_step": self.executed_flops_per_step,
                "peak_flops_per_device": self.peak_flops_per_device,
                "mfu_bound": self.mfu_bound, "min_step_seconds": self.min_step_seconds,
                "compile_seconds": round(self.compile_seconds, 1), "advice": self.advice,
                "notes": self.notes, "compile_error": self.compile_error}


def abstract_batch(mesh, batch_size: int, lengths: Mapping[str, int], pack: bool) -> dict:
    """The trainer's global batch as ShapeDtypeStructs: int32 [batch, length], rows over
    `data` (what host_arrays.host_to_global builds from the seqio features)."""
    sharding = mesh_lib.batch_sharding(mesh, 2)
    names = PACKED_FEATURES if pack else UNPACKED_FEATURES
    return {k: jax.ShapeDtypeStruct(
        (batch_size, lengths["inputs"] if k.startswith("encoder") else lengths["targets"]),
        jnp.int32, sharding=sharding) for k in names}


def recompute_flops_per_sequence(abstract_params, config: T5Config, input_length: int,
                                 target_length: int) -> float:
    """Forward FLOPs rematerialisation repeats in the backward pass, per sequence.

    'full' reruns each layer's forward (its weight matmuls: 2 FLOPs per weight per token, and
    its attention matmuls); 'dots_with_no_batch_dims_saveable' reruns only the attention
    matmuls; 'dots_saveable' and 'none' keep every matmul output. The logits projection is
    outside the layers and never recomputed.
    """
    policy = config.remat_policy
    if policy in ("none", "dots_saveable"):
        return 0.0
    total = metrics_lib.flops_per_sequence(abstract_params, config, input_length, target_length)
    n_enc, n_dec = metrics_lib.matmul_params(abstract_params)
    n_dec -= config.emb_dim * config.vocab_size  # logits_dense
    dense = 6.0 * (n_enc * input_length + n_dec * target_length)
    logits = 6.0 * config.emb_dim * config.vocab_size * target_length
    attention = total - dense - logits
    if policy == "dots_with_no_batch_dims_saveable":
        return attention / 3.0
    return (dense + attention) / 3.0


def model_axis_for(requested: int, num_devices: int, target: str) -> tuple[int, list[str]]:
    """(model axis to plan with, notes): an axis wider than the target's devices (an
    experiment's 16-way axis asked of an 8-device slice) becomes the widest that divides them,
    so the plan still answers "does it fit"; any other axis is kept (the mesh checks it)."""
    if requested <= num_devices:
        return requested, []
    return num_devices, [
        f"NUM_PARTITIONS={requested} is wider than the {num_devices} devices of {target}: "
        f"planned with NUM_PARTITIONS={num_devices}, the widest model axis this slice allows "
        "(--gin.NUM_PARTITIONS=N plans another)"]


def plan_train_step(config: T5Config, mesh: Mesh, *, target: str, batch_size: int,
                    task_feature_lengths: Mapping[str, int], partition_rules=(),
                    partition_rules_name: str = "default",
                    num_microbatches: int = 1, pack: bool = True, seed: int = 0,
                    z_loss: float = 1e-4, loss_normalizing_factor=None,
                    learning_rate: float = 1e-3, lr_schedule: str = "constant",
                    warmup_steps: int = 10_000, device_memory_bytes: Optional[int] = None,
                    peak_flops_per_device: Optional[float] = None) -> Plan:
    """Compile the trainer's step on `mesh` (its devices need not be this host's) and measure
    it (see the module docstring)."""
    devices = mesh.devices.reshape(-1)
    num_partitions = mesh.shape["model"]
    model = EncoderDecoderModel(config)
    optimizer = make_optimizer(model.params_axes(), learning_rate, lr_schedule, warmup_steps)
    layout = state_layout(model, optimizer, mesh, partition_rules)
    jitted = steps.jit_train_step(layout, model=model, optimizer=optimizer, dropout_seed=seed,
                                  z_loss=z_loss, loss_normalizing_factor=loss_normalizing_factor,
                                  num_microbatches=num_microbatches)
    start = time.perf_counter()
    batch = abstract_batch(mesh, batch_size, task_feature_lengths, pack)
    params = sharding_lib.shard_bytes(layout.abstract.params, layout.shardings.params)
    opt = sharding_lib.shard_bytes(layout.abstract.opt_state, layout.shardings.opt_state)
    bytes_per_device = {"params": params, "optimizer": opt,
                        "batch": sharding_lib.shard_bytes(batch, [x.sharding for x in
                                                                  batch.values()])}
    try:
        compiled = jitted.lower(abstract_with_shardings(layout), batch).compile()
        bytes_per_device.update(compiled_memory(compiled))
        compile_error = None
    except Exception as e:  # noqa: BLE001 - XLA raises one runtime error type for everything
        if not is_out_of_memory(e):
            raise
        compile_error = _first_line(e)
        bytes_per_device.update(refused_memory(compile_error, bytes_per_device))
    seconds = time.perf_counter() - start
    lin, ltgt = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    flops = batch_size * metrics_lib.flops_per_sequence(layout.abstract.params, config, lin, ltgt)
    extra = batch_size * recompute_flops_per_sequence(layout.abstract.params, config, lin, ltgt)
    plan = Plan(
        target=target, device_kind=devices[0].device_kind, mesh_shape=dict(mesh.shape),
        model={"num_params": config.num_params(), "emb_dim": config.emb_dim,
               "num_layers": [config.num_encoder_layers, config.num_decoder_layers],
               "dtype": config.dtype},
        run={"batch_size": batch_size, "task_feature_lengths": dict(task_feature_lengths),
             "pack": pack, "num_microbatches": num_microbatches,
             "scan_layers": config.scan_layers, "remat_policy": config.remat_policy,
             "partition_rules": partition_rules_name, "num_partitions": num_partitions},
        bytes_per_device=bytes_per_device, device_memory_bytes=device_memory_bytes,
        flops_per_step=flops, executed_flops_per_step=flops + extra,
        peak_flops_per_device=peak_flops_per_device, compile_seconds=seconds,
        compile_error=compile_error)
    if plan.fits is False:
        plan.advice = memory_advice(
            config, batch_size=batch_size, num_microbatches=num_microbatches,
            num_partitions=num_partitions, partition_rules=partition_rules_name,
            num_devices=len(devices),
            state_dominates=params + opt > (bytes_per_device["temporaries"] or 0))
    return plan


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()),
                type(error).__name__)


def refused_memory(message: str, state_bytes: Mapping[str, int]) -> dict:
    """Per-device bytes when the compiler refused the program for lack of device memory: the
    temporaries and the memory it could use as the message states them (None where it does
    not), the arguments as the parameter, optimizer and batch shards (no memory analysis of a
    program that was never built)."""
    def figure(pattern):
        match = pattern.search(message)
        return None if match is None else int(float(match.group(1)) * _UNITS[match.group(2)])

    temporaries = figure(_OOM_TEMPORARIES)
    arguments = sum(state_bytes.values())
    return {"arguments": arguments, "temporaries": temporaries,
            "total": arguments + (temporaries or 0), "compiler_available": figure(_OOM_AVAILABLE)}


def compiled_memory(compiled) -> dict:
    """Per-device bytes of a compiled program: arguments, temporaries and the live total
    (arguments + outputs not aliased to donated arguments + temporaries + code)."""
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError("this backend gives no memory analysis of compiled programs")
    args, out = stats.argument_size_in_bytes, stats.output_size_in_bytes
    temp, alias = stats.temp_size_in_bytes, stats.alias_size_in_bytes
    code = stats.generated_code_size_in_bytes
    return {"arguments": int(args), "temporaries": int(temp),
            "total": int(args + out - alias + temp + code)}


def _gib(n: Optional[float]) -> str:
    if n is None:
        return "unknown"
    if n >= 2**28:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.2f} MiB" if n >= 2**17 else f"{n / 2**10:.1f} KiB"


def render(plan: Plan) -> list[str]:
    """Human-readable lines of the plan (stdout of `t0-train --dry_run`)."""
    run = plan.run
    mesh = " × ".join(f"{v} {k}" for k, v in plan.mesh_shape.items())
    lines = [
        f"plan for {plan.target}: {plan.num_devices} × {plan.device_kind}, mesh {mesh}",
        *[f"  note: {n}" for n in plan.notes],
        f"  model {plan.model['num_params'] / 1e9:.2f}B params; batch {run['batch_size']} × "
        f"{run['task_feature_lengths']['inputs']}/{run['task_feature_lengths']['targets']}"
        f"{' packed' if run['pack'] else ''}, {run['num_microbatches']} microbatch(es), "
        f"scan={run['scan_layers']}, remat={run['remat_policy']!r}, "
        f"rules={run['partition_rules']!r} (compiled in {plan.compile_seconds:.0f} s)",
        *_memory_lines(plan),
        f"  FLOPs per step      {plan.flops_per_step:.3e} (analytic, all devices); MFU bound "
        f"{plan.mfu_bound:.0%} (remat recompute)",
    ]
    if plan.min_step_seconds is not None:
        lines.append(f"  step time ≥ {plan.min_step_seconds:.2f} s at "
                     f"{plan.peak_flops_per_device / 1e12:.0f} TFLOP/s per device peak")
    if plan.advice:
        lines.append("  does not fit; try, in this order:")
        lines += [f"    {i}. {a}" for i, a in enumerate(plan.advice, 1)]
    return lines


def _memory_lines(plan: Plan) -> list[str]:
    """The per-device table; when the compiler refused the program, its own figures."""
    b = plan.bytes_per_device
    verdict = {True: "FITS", False: "DOES NOT FIT", None: "fit unknown (device memory unknown: "
               "give --device_memory_gib or DEVICE_MEMORY_BYTES)"}[plan.fits]
    source = "(XLA memory analysis)"
    if plan.compile_error is not None:
        source = (f"(the compiler's figure: it can use {_gib(b.get('compiler_available'))} "
                  "per device)")
    lines = ["  per device:",
             f"    parameters        {_gib(b['params'])}",
             f"    optimizer state   {_gib(b['optimizer'])}",
             f"    batch             {_gib(b['batch'])}",
             f"    temporaries       {_gib(b['temporaries'])}   {source}",
             f"    total             {_gib(b['total'])} of {_gib(plan.device_memory_bytes)} "
             f"(usable {USABLE_FRACTION:.0%}): {verdict}"]
    if plan.compile_error is not None:
        lines.append(f"  the compiler ran out of device memory: {plan.compile_error[:300]}")
    return lines
