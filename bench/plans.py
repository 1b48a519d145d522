"""T0-3B and T0-11B plans on common TPU slices, produced by `t0-train --dry_run` itself.

For each (model, slice) this runs the command a user would run,

    python -m t0_jax.bin.train --gin_file=runs/finetune.gin --gin_file=experiments/<exp>.gin \\
        --gin.MODEL_DIR=/tmp/plan --gin.INITIAL_CHECKPOINT_PATH=/tmp/none \\
        --dry_run --topology=<slice> --json

with the shipped defaults (the paper's batch 1024 × 1024/256 packed, Adafactor, bf16), reads
the JSON plan from its last stdout line and writes bench_out/plans.json. The train step is
compiled ahead of time for the slice through libtpu (REFERENCE.md §9) on this CPU host; each
compile takes minutes, so cases run one at a time.

    python -m bench.plans --out bench_out            # xl, xxl × v4-128, v3-256, v5e-256
    python -m bench.plans --out bench_out --quick    # T5 small on v4-32 (a few minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from typing import Sequence

from bench import records

# model → (its label, the model file given after experiments/t0_train.gin; None: its own xxl)
MODELS = {"xl": ("T0-3B (xl)", "models/t5_1_1_lm100k_xl.gin"), "xxl": ("T0-11B (xxl)", None),
          "small": ("T5 small", "models/t5_1_1_lm100k_small.gin")}
SLICES = ("v4-128", "v3-256", "v5e-256")
QUICK = [("small", "v4-32")]  # 32 devices: the T0 files' 16-way model axis × 2


def command(model: str, topology: str) -> list[str]:
    size = MODELS[model][1]
    argv = [sys.executable, "-m", "t0_jax.bin.train", "--gin_file=runs/finetune.gin",
            "--gin_file=experiments/t0_train.gin"]
    if size:
        argv.append(f"--gin_file={size}")
    return argv + ["--gin.MODEL_DIR=/tmp/plan", "--gin.INITIAL_CHECKPOINT_PATH=/tmp/none",
                   "--dry_run", f"--topology={topology}", "--json"]


def run_case(model: str, topology: str) -> dict:
    """One plan: the command's JSON line, exit status and the command itself (for the docs)."""
    argv = command(model, topology)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                          preexec_fn=_big_stack)
    lines = proc.stdout.strip().splitlines()
    case = {"model": MODELS[model][0], "topology": topology, "exit_status": proc.returncode,
            "command": " ".join(["t0-train"] + argv[3:])}
    if proc.returncode not in (0, 2) or not lines or not lines[-1].startswith("{"):
        tail = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith("    @")]
        return {**case, "plan": None, "error": "\n".join(tail[-5:])}
    return {**case, "plan": json.loads(lines[-1])}


def _big_stack() -> None:
    """XLA's TPU compiler recurses deeply on the 11B step: give the child's threads 1 GiB
    stacks (the default 8 MiB overflowed in one run)."""
    try:
        resource.setrlimit(resource.RLIMIT_STACK, (2**30, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def _gib(n) -> str:
    return "?" if n is None else f"{n / 2**30:.2f}"


def _row(case: dict) -> str:
    p = case["plan"]
    if p is None:
        error = case["error"].splitlines()[-1] if case.get("error") else "failed"
        return (f"| {case['model']} | {case['topology']} | — | — | — | — | — | — | "
                f"compile failed (exit {case['exit_status']}: {error[:80]}) | — | — | — |")
    b, run = p["bytes_per_device"], p["run"]
    mesh = "×".join(str(v) for v in p["mesh_shape"].values())
    knobs = (f"{run['num_microbatches']} µb, remat {run['remat_policy']}, "
             f"{'scan' if run['scan_layers'] else 'unrolled'}, {run['partition_rules']}")
    verdict = {True: "fits", False: "**does not fit**", None: "unknown"}[p["fits"]]
    return (f"| {case['model']} | {case['topology']} | {p['num_devices']} × {p['device_kind']} | "
            f"{mesh} | {knobs} | {_gib(b['params'] + b['optimizer'])} | "
            f"{_gib(b['temporaries'])} | {_gib(b['total'])} / {_gib(p['device_memory_bytes'])} | "
            f"{verdict} | {p['flops_per_step']:.2e} | {p['mfu_bound']:.0%} | "
            f"{p['compile_seconds']:.0f} |")


def section(record: dict) -> list[str]:
    """Markdown for docs/benchmarks.md: one row per (model, slice) plan."""
    cases = record.get("cases", [])
    lines = ["## Plans before launch (`t0-train --dry_run --topology`)", "",
             "The real train step compiled ahead of time for each TPU slice on this CPU host "
             "(libtpu topology descriptions; no data, no checkpoint), with the shipped T0 "
             "defaults: batch 1024 × 1024/256 packed, Adafactor, bf16. Memory is per device "
             "(GiB; v3 and v4 list one device per TensorCore), XLA's memory analysis of the "
             "compiled step; the verdict compares the total with "
             "95% of the device's HBM. FLOPs per step "
             "are analytic (all devices); the MFU bound is model FLOPs over executed FLOPs "
             "(remat recompute)." if cases else "No plans recorded.", "",
             "| model | slice | devices | mesh (data×model) | knobs | params+opt | "
             "temporaries | total / HBM | verdict | FLOPs/step | MFU bound | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(c) for c in cases]
    commands = {}
    for c in cases:  # one command per model, the slice left as a placeholder
        commands.setdefault(c["model"], c["command"].replace(f"--topology={c['topology']}",
                                                              "--topology=SLICE"))
    lines += [""] + [f"{model}: `{command}`" for model, command in commands.items()]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(records.OUT_DIR))
    parser.add_argument("--quick", action="store_true", help="T5 small on v4-32 only")
    parser.add_argument("--models", default="xxl,xl", help=f"of {sorted(MODELS)}")
    parser.add_argument("--slices", default=",".join(SLICES))
    args = parser.parse_args(argv)
    todo = QUICK if args.quick else [(m, t) for t in args.slices.split(",")
                                     for m in args.models.split(",")]
    cases = []
    for model, topology in todo:
        records.log(f"plan {model} on {topology}")
        cases.append(run_case(model, topology))
        p = cases[-1]["plan"]
        path = records.write_json("plans", {"cases": cases}, args.out)  # after each: minutes
        if p is None:
            print(f"{model} on {topology}: FAILED ({cases[-1]['error'][-200:]})")
            continue
        print(f"{model} on {topology}: {p['bytes_per_device']['total'] / 2**30:.2f} GiB of "
              f"{p['device_memory_bytes'] / 2**30:.2f} GiB per device, "
              f"{'fits' if p['fits'] else 'DOES NOT FIT'} ({p['compile_seconds']:.0f} s compile)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
