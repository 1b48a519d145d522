"""`t0-train … --dry_run`: the plan of a run before launch (t0_jax.train.plan).

    t0-train --gin_file=runs/finetune.gin --gin_file=experiments/t0_train.gin \\
        --gin.MODEL_DIR=/runs/t0 --gin.INITIAL_CHECKPOINT_PATH=/ckpt --dry_run \\
        [--topology=v4-128] [--device_memory_gib=16] [--json]

Compiles the configured train step ahead of time, reading no data and no checkpoint: for this
host's devices, or with `--topology` for a TPU slice this host does not have (Cloud TPU names
such as v3-256, v4-128, v5e-256, or libtpu's v4:4x4x4; needs libtpu). Prints memory per device
against the device's memory, FLOPs per step and the MFU bound; `--json` adds one JSON object as
the last line of stdout. A model axis (NUM_PARTITIONS) wider than the slice is planned at the
widest the slice allows, and the plan says so; a compile that runs out of device memory is
reported as "does not fit" with the compiler's figures. Exit status 0 when it fits (or the
device memory is unknown), 2 when it does not fit or the configuration is wrong.
"""
from __future__ import annotations

import inspect
import json
import sys
from typing import Optional

import gin

from t0_jax.bin import gin_flags, train_data
from t0_jax.model.config import T5Config
from t0_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from t0_jax.train import metrics as metrics_lib, plan as plan_lib, topologies, trainer

SWITCHES = ("json",)
OPTIONS = ("topology", "device_memory_gib")


def train_arguments() -> dict:
    """`t0_jax.train.train`'s arguments as gin binds them, defaults filled in."""
    defaults = {}
    for fn in (trainer.train, train_data.train):
        defaults.update({name: p.default for name, p in inspect.signature(fn).parameters.items()
                         if p.default is not inspect.Parameter.empty})
    return {**defaults, **gin.get_bindings("t0_jax.train.train")}


def _device_memory(flags, args, topology, devices) -> Optional[int]:
    """--device_memory_gib, else train.device_memory_bytes, else the slice's HBM per device,
    else what the local backend reports (None on CPU)."""
    value = flags.options.get("device_memory_gib")
    if value is not None:
        try:
            gib = float(value)
        except ValueError:
            gib = -1.0
        if gib <= 0:
            raise gin_flags.UsageError(f"--device_memory_gib={value!r} must be a positive "
                                       "number of GiB, e.g. --device_memory_gib=16.")
        return int(gib * 2**30)
    if args.get("device_memory_bytes"):
        return int(args["device_memory_bytes"])
    if topology is not None:
        return topology.device_memory_bytes(len(devices))
    return sharding_lib.device_memory_bytes(devices[0])


def _peak_flops(args, topology, devices) -> Optional[float]:
    if args.get("peak_flops_per_device"):
        return float(args["peak_flops_per_device"])
    if topology is not None:
        return topology.peak_flops_per_device(len(devices))
    return metrics_lib.peak_flops_per_device(devices[0].device_kind)


def make_plan(flags: gin_flags.GinFlags) -> plan_lib.Plan:
    """The plan of the parsed gin configuration (see the module docstring)."""
    import jax  # noqa: PLC0415 - after gin parsing, as the trainer does

    args = train_arguments()
    trainer.check_arguments(**{k: args[k] for k in inspect.signature(
        trainer.check_arguments).parameters})
    name = flags.options.get("topology")
    topology = topologies.parse(name) if name else None
    try:
        devices = topologies.slice_devices(topology) if topology else jax.devices()
    except topologies.TopologyUnavailableError as e:  # libtpu absent: a setup the user fixes
        raise trainer.ConfigError(str(e)) from e
    target = f"{name} ({topology.libtpu_name})" if topology else f"this host ({len(devices)} × " \
        f"{devices[0].platform})"
    num_partitions, notes = plan_lib.model_axis_for(args["num_partitions"], len(devices),
                                                    target)
    try:
        mesh = mesh_lib.make_mesh(num_partitions, devices)
    except ValueError as e:
        raise trainer.ConfigError(f"{e} ({target})") from e
    trainer.check_mesh(mesh, args["batch_size"], args["num_microbatches"])
    config = T5Config.from_dict(args["model_config"].to_dict())
    plan = _compile_plan(flags, args, config, mesh, target, topology, devices)
    plan.notes = notes + plan.notes
    if notes:
        plan.run["requested_num_partitions"] = args["num_partitions"]
    return plan


def _compile_plan(flags, args, config, mesh, target, topology, devices) -> plan_lib.Plan:
    return plan_lib.plan_train_step(
        config, mesh, target=target, batch_size=args["batch_size"],
        task_feature_lengths=args["task_feature_lengths"],
        partition_rules=trainer.PARTITION_RULES[args["partition_rules"]],
        partition_rules_name=args["partition_rules"],
        num_microbatches=args["num_microbatches"], pack=args["pack"], seed=args["seed"],
        z_loss=args["z_loss"], loss_normalizing_factor=args["loss_normalizing_factor"],
        learning_rate=args["learning_rate"], lr_schedule=args["lr_schedule"],
        warmup_steps=args["warmup_steps"],
        device_memory_bytes=_device_memory(flags, args, topology, devices),
        peak_flops_per_device=_peak_flops(args, topology, devices))


def run(flags: gin_flags.GinFlags) -> int:
    """Print the plan (and its JSON line with --json); 2 when it does not fit."""
    plan = make_plan(flags)
    print("\n".join(plan_lib.render(plan)))
    if flags.json:
        print(json.dumps(plan.to_json(), sort_keys=True))
    sys.stdout.flush()
    if plan.fits is False:
        print(f"t0-train: the train step needs {plan.bytes_per_device['total'] / 2**30:.2f} GiB "
              f"per device but {plan.target} has {plan.device_memory_bytes / 2**30:.2f} GiB; see "
              "the advice above.", file=sys.stderr)
        return 2
    return 0

