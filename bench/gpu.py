"""One command for the GPU figures: train-step MFU and bf16 scoring vs the t-zero loop.

    python -m bench.gpu                      # on a machine with one GPU (make bench-gpu)
    python -m bench.gpu --device cpu --quick # the same chain at toy sizes (CI, ~30 s)

Wraps the two benchmarks that already measure these, each in its own interpreter (a fresh GPU:
JAX's preallocation and torch's cache do not meet):
  * `bench.training --device gpu`: T5 v1.1 small, base and xl, 1024/256 packed synthetic
    batches, bf16 activations, Adafactor, one device; the batch is fixed per preset
    (`bench.training.GPU_BATCH`) and halved once on out-of-memory; tokens/s, TFLOP/s, MFU;
  * `bench.scoring --device gpu --dtype bfloat16 --synthetic`: base, our scorer vs the t-zero
    PyTorch loop (and the length-sorted loop) on the same GPU, same random weights and tokens.
Both run on synthetic token ids, through the layers that import no TensorFlow: the command
needs JAX for CUDA, flax, optax, orbax, torch, transformers and sentencepiece (and tensorboard,
a pure-Python wheel `t0_jax.train.metrics` writes its event files with), run from the
repository root without installing it, and neither TensorFlow, seqio nor gin (each part reports
which of those its interpreter loaded; none may).
Sized for ≤ 8 minutes on one H100-class GPU. The dated GPU section of docs/benchmarks.md is
rewritten in place (`bench.report.replace_section`), the rest of the page is kept; the JSON
lands in bench_out/gpu.json, which `make bench` renders too.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Sequence

from bench import records, report

HEAVY = ("tensorflow", "seqio", "gin")
PARTS = {
    "gpu": {
        "training": ["--device", "gpu", "--presets", "small,base,xl", "--steps", "10"],
        "scoring": ["--device", "gpu", "--dtype", "bfloat16", "--presets", "base",
                    "--synthetic", "--templates", "4", "--examples", "128"],
    },
    "quick": {  # toy sizes on the CPU: the chain, not the figures
        "training": ["--device", "cpu", "--mfu", "--presets", "tiny", "--lengths", "64,16",
                     "--batch-size", "4", "--steps", "2"],
        "scoring": ["--device", "cpu", "--dtype", "float32", "--presets", "tiny",
                    "--synthetic", "--templates", "2", "--examples", "6", "--threads", "1"],
    },
}
TIMEOUT_S = {"training": 330, "scoring": 150}  # within the 8 minutes of one GPU
SECTION_TITLE = "## GPU (`python -m bench.gpu`)"


def _probe_gpu() -> tuple[str | None, str | None]:
    """(device kind, None) when JAX in a fresh interpreter sees a GPU, else (None, why)."""
    code = "import jax; d = jax.devices()[0]; print(d.platform, '|', d.device_kind)"
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=False, timeout=300)
    if done.returncode:
        return None, f"JAX failed to start: {done.stderr.strip().splitlines()[-1:]}"
    platform, kind = (x.strip() for x in done.stdout.strip().splitlines()[-1].split("|", 1))
    if platform != "gpu":
        return None, f"JAX sees no GPU on this machine (devices: {platform}, {kind})"
    return kind, None


def run_part(name: str, args: Sequence[str], parts_dir: pathlib.Path, gpu: bool) -> dict:
    """`bench.<name>` in its own interpreter (`--part`); its JSON, the heavy modules it
    loaded, its wall time, or why it failed."""
    cmd = [sys.executable, "-m", "bench.gpu", "--part", name, "--json-dir", str(parts_dir),
           "--", *args, "--out", str(parts_dir)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if gpu and name == "scoring":  # torch shares the GPU with JAX in this part
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    records.log(f"running bench.{name} {' '.join(args)}")
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                              timeout=TIMEOUT_S[name] * (1 if gpu else 2))
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = "timeout", str(e.stdout or ""), f"timed out after {e.timeout} s"
    seconds = time.perf_counter() - start
    for line in stdout.splitlines():
        print(f"  {name}: {line}", flush=True)
    out = {"seconds": round(seconds, 1), "returncode": code,
           "result": records.read_json(name, parts_dir),
           "heavy_modules": _read_modules(parts_dir, name)}
    if code != 0:
        out["error"] = (stderr.strip().splitlines() or [f"exit {code}"])[-1][:500]
        print(stderr[-3000:], file=sys.stderr)
    return out


def _read_modules(parts_dir: pathlib.Path, name: str):
    path = parts_dir / f"{name}.modules.json"
    return json.loads(path.read_text()) if path.is_file() else None


def loaded_heavy_modules() -> list[str]:
    """Which of TensorFlow, seqio and gin this interpreter has imported."""
    return sorted(m for m in HEAVY if m in sys.modules)


def part_main(name: str, args: Sequence[str], parts_dir: pathlib.Path) -> int:
    """Child side: run `bench.<name>.main(args)`, then record the heavy modules it loaded."""
    code = importlib.import_module(f"bench.{name}").main(list(args))
    (parts_dir / f"{name}.modules.json").write_text(json.dumps(loaded_heavy_modules()))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes (with --device cpu)")
    parser.add_argument("--out", default="docs/benchmarks.md", help="page whose GPU section "
                        "is rewritten ('' to skip)")
    parser.add_argument("--json-dir", default=str(records.OUT_DIR))
    parser.add_argument("--part", help=argparse.SUPPRESS)  # child mode, see run_part
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # child: its benchmark's own args
    args, rest = parser.parse_args(argv[:cut]), argv[cut + 1:]
    json_dir = pathlib.Path(args.json_dir)
    if args.part:
        return part_main(args.part, rest, json_dir)
    gpu = args.device == "gpu"
    plan = PARTS["quick" if args.quick or not gpu else "gpu"]
    parts_dir = json_dir / "gpu_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    record = {"device": args.device, "quick": not gpu or args.quick,
              "commands": {n: " ".join(["python -m bench." + n, *a]) for n, a in plan.items()}}
    kind, why = _probe_gpu() if gpu else (None, "CPU quick mode (--device cpu)")
    record |= {"device_kind": kind, "no_gpu_reason": why, "parts": {}}
    if not gpu or kind is not None:
        for name, part_args in plan.items():
            record["parts"][name] = run_part(name, part_args, parts_dir, gpu)
    record["heavy_modules"] = {"bench.gpu": loaded_heavy_modules(), **{
        n: p["heavy_modules"] for n, p in record["parts"].items()}}
    path = records.write_json("gpu", record, json_dir)
    print(f"wrote {path}")
    if args.out:
        report.replace_section(args.out, SECTION_TITLE,
                               section(records.read_json("gpu", json_dir)))
        print(f"rewrote the GPU section of {args.out}")
    failed = [n for n, p in record["parts"].items() if p["returncode"] != 0]
    leaked = sorted({m for mods in record["heavy_modules"].values() for m in (mods or ())})
    if leaked:
        print(f"bench.gpu: {leaked} were imported; this command must run without them",
              file=sys.stderr)
    return 1 if failed or leaked else 0


# ----------------------------------------------------------------------------- report


def _training_rows(result: dict | None) -> list[list[str]]:
    rows = []
    for preset, g in ((result or {}).get("gpu") or {}).items():
        if "error" in g:
            rows.append([preset, "—", f"{g['requested_batch']} → none", g["error"], "—", "—",
                         "—", "—"])
            continue
        ran = (f"{g['requested_batch']} → {g['batch']} (halved: out of memory)" if g["halved"]
               else f"{g['batch']}")
        rows.append([preset, f"{g['num_params'] / 1e6:,.0f} M", ran, f"{g['tokens_per_s']:,.0f}",
                     f"{g['tflops_per_s']:.1f}", "—" if g["mfu"] is None else f"{g['mfu']:.1%}",
                     f"{g['step_s']:.3f}", f"{g['compile_s']:.0f}"])
    return rows


def _scoring_rows(result: dict | None) -> list[list[str]]:
    rows = []
    for preset, p in ((result or {}).get("presets") or {}).items():
        rows.append([preset, f"{p['examples']} ({p['rows']} choices)",
                     f"{p['ours_examples_per_s']:.1f}", f"{p['tzero_examples_per_s']:.1f}",
                     f"{p['vs_tzero']:.2f}×", f"{p['sorted_examples_per_s']:.1f}",
                     f"{p['vs_sorted']:.2f}×", f"{p['agreement']:.2%}",
                     f"{p['compile_s']:.0f}"])
    return rows


def section(record: dict) -> list[str]:
    """The dated GPU section: MFU per preset and scoring vs the t-zero loop, or why empty."""
    m = record["machine"]
    out = [SECTION_TITLE, ""]
    if record.get("no_gpu_reason") and record["device"] == "gpu":
        return out + [f"_Not measured ({m['date']}): {record['no_gpu_reason']}. Run `make "
                      "bench-gpu` (`python -m bench.gpu`) on a machine with one GPU; it fills "
                      "this section._", ""]
    where = record.get("device_kind") or f"CPU ({m['cpu']})"
    parts = record.get("parts", {})
    out += [f"_{m['date']}, {where}; jax {m['versions']['jax']}, torch "
            f"{m['versions']['torch']}, transformers {m['versions']['transformers']}; "
            "imported by the run: " + (", ".join(
                f"{n} {mods}" for n, mods in record["heavy_modules"].items() if mods)
                or "no TensorFlow, seqio or gin") + "._", ""]
    if record.get("quick"):
        out += ["**Quick mode on the CPU** (`--device cpu --quick`): toy sizes that check the "
                "chain; the figures are not the GPU's. GPU rows: none in this run.", ""]
    train = parts.get("training", {})
    out += [f"Train step (`{record['commands']['training']}`): packed synthetic batches, bf16 "
            "activations, fp32 parameters, T5X Adafactor, one device; MFU = model FLOPs "
            "(REFERENCE.md §7) / (step time × the device's bf16 peak)."
            + (f" **Failed**: {train['error']}" if train.get("error") else ""), ""]
    out += report.markdown_table(["model", "params", "batch (fixed → ran)", "tokens/s", "TFLOP/s",
                         "MFU", "step s", "compile s"], _training_rows(train.get("result")))
    score = parts.get("scoring", {})
    out += [f"Scoring (`{record['commands']['scoring']}`): random weights and random token ids "
            "shaped like prompts (same on both sides), our scorer vs the t-zero loop "
            "(`bench/hf_peers.py`) on the same device."
            + (f" **Failed**: {score['error']}" if score.get("error") else ""), ""]
    out += report.markdown_table(["model", "examples", "ours ex/s", "t-zero loop ex/s", "vs t-zero",
                         "sorted HF ex/s", "vs sorted", "same prediction", "compile s"],
                        _scoring_rows(score.get("result")))
    return out


if __name__ == "__main__":
    sys.exit(main())
