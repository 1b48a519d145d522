"""`t0-train`: train or fine-tune with gin files, T5X-style flags.

    t0-train --gin_file=runs/finetune.gin --gin_file=experiments/t0_train.gin \\
        --gin.MODEL_DIR=/runs/t0 --gin.INITIAL_CHECKPOINT_PATH=/ckpt/t5_xxl_lm100k \\
        [--gin.DATA_DIR=/data] [--gin.VOCAB_PATH=/spiece.model] [--gin.NUM_PARTITIONS=8] \\
        [--gin_bindings='train.checkpoint_period = 500'] [--gin_search_paths=DIR,...] \\
        [--multihost]

Flags: `--gin_file` (repeatable; resolved against --gin_search_paths, then the shipped gin/
directory), `--gin_bindings` (repeatable gin statements), `--gin.NAME=value` (shorthand for the
binding `NAME = value`; a value that is not a gin literal is taken as a string, so paths need
no quotes), `--multihost` (call jax.distributed.initialize(); also when $T0_MULTIHOST=1 or
$JAX_COORDINATOR_ADDRESS is set), `--dry_run` (compile the step ahead of time and print its
memory per device, reading no data and no checkpoint; `--topology=v4-128` plans for a TPU slice,
`--device_memory_gib=N`, `--json`: see t0_jax/bin/train_plan.py).

Rerunning the same command resumes from the newest complete checkpoint in MODEL_DIR. SIGTERM
(how schedulers and preemptible VMs stop a job) finishes the current step, saves it and exits
with 143; a second trainer on the same MODEL_DIR refuses to start. Exit codes: 0 done, 2 an
error you can fix (one line; `--verbose` or T0_DEBUG=1 adds the traceback), 3 a non-finite
loss, 143 stopped by SIGTERM (rerun to resume). The operative gin config is written to
MODEL_DIR/config.gin and into every checkpoint. MODEL_DIR, INITIAL_CHECKPOINT_PATH, VOCAB_PATH,
DATA_DIR and CACHE_DIRS may be local or `gs://` paths (t0_jax/storage; on a pod every host
must see the same MODEL_DIR, so use a bucket there).
Also runs as `python -m t0_jax.bin.train`; `main(argv)` is callable in-process.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Optional, Sequence, Union

import gin

from t0_jax.bin import cli, gin_configurables, gin_flags, initial_checkpoint, train_plan
from t0_jax.train import preemption, trainer

USAGE = __doc__.split("\n\n")[1]
_REQUIRED_LINE = re.compile(r"^([\w./]+) = %gin\.REQUIRED\s*$", re.MULTILINE)


UsageError = gin_flags.UsageError


def parse_flags(argv: Sequence[str]) -> gin_flags.GinFlags:
    return gin_flags.parse_flags(argv, USAGE, "runs/finetune.gin",
                                 switches=("multihost", "dry_run") + train_plan.SWITCHES,
                                 options=train_plan.OPTIONS)


def parse_gin(flags: gin_flags.GinFlags) -> None:
    """Fresh gin state from the files and bindings, then fail early on anything left unset."""
    gin_flags.parse_gin(flags)
    check_required()


def check_required() -> None:
    """Every `%gin.REQUIRED` left unset and every core macro left undefined, named at once.

    Gin itself would pass its REQUIRED sentinel through a macro into `train` silently.
    """
    missing = _REQUIRED_LINE.findall(gin.config_str())
    for macro in gin_configurables.REQUIRED_MACROS + ("MODEL_CONFIG",):
        try:
            gin.query_parameter(f"%{macro}")
        except ValueError:
            missing.append(macro)
    if missing:
        hint = ("; MODEL_CONFIG comes from a models/*.gin file (experiment files include one)"
                if "MODEL_CONFIG" in missing else "")
        raise UsageError(f"required gin values not set: {sorted(set(missing))}. Set each with "
                         f"--gin.NAME=value (e.g. --gin.MODEL_DIR=/tmp/run){hint}.")


def maybe_initialize_distributed(flags: gin_flags.GinFlags) -> None:
    """Multi-host: one process per host, coordinates from the environment (SLURM, TPU, or
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)."""
    if flags.multihost or os.environ.get("T0_MULTIHOST") == "1" or os.environ.get(
            "JAX_COORDINATOR_ADDRESS"):
        import jax  # noqa: PLC0415

        env = {k: int(os.environ[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"),
                                                  ("process_id", "JAX_PROCESS_ID"))
               if os.environ.get(v)}  # jax reads only the address from the environment
        jax.distributed.initialize(**env)


def run(argv: Sequence[str]) -> Union[trainer.TrainResult, int, None]:
    flags = parse_flags(argv)
    maybe_initialize_distributed(flags)
    parse_gin(flags)
    if flags.dry_run:  # the plan: the step compiled ahead of time (exit status)
        return train_plan.run(flags)
    train = gin.get_configurable("t0_jax.train.train")
    args = train_plan.train_arguments()  # the initial checkpoint first: it may carry the vocab
    initial_checkpoint.check(args.get("initial_checkpoint_path"), args.get("model_dir"))
    vocab = initial_checkpoint.vocabulary(args.get("initial_checkpoint_path"),
                                          args.get("vocab_path"))
    return train(config_text=gin.config_str(), dry_run=flags.dry_run, vocab_path=vocab)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run("t0-train", _main, argv, doc=__doc__,
                   exit_codes={trainer.NonFiniteLossError: 3,
                               preemption.Preempted: preemption.EXIT_PREEMPTED})


def _main(argv: list) -> int:
    result = run(argv)
    if isinstance(result, int):  # --dry_run: the plan was printed
        return result
    if result is None:
        print("t0-train: configuration OK (dry run, nothing computed)")
    else:
        print(f"t0-train: done at step {result.step} ({result.batches_consumed} batches); "
              f"checkpoints in {result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
