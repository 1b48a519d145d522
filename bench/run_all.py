"""Run the CPU benchmark set and rewrite docs/benchmarks.md from its JSON.

    python -m bench.run_all [--out docs/benchmarks.md] [--only scoring,training]
                            [--render-only] [--quick]

Every script runs in its own interpreter (its imports, threads and memory do not leak into the
next) with the arguments below, sized so the whole set takes well under 20 minutes on a quiet
2-core CPU. `--render-only` rebuilds the page from the bench_out/*.json already there (e.g.
after rerunning one script alone when the machine is quieter); sections without JSON say so.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time
from typing import Optional, Sequence

from bench import records, report

CPU_SET = {
    # ~7-10 min: the HF peer loops on base are the bulk (one options pass each side).
    "scoring": ["--presets", "small,base", "--examples", "24", "--base-examples", "6",
                "--templates", "2", "--threads", "2"],
    "training": ["--layers", "4", "--steps", "4", "--threads", "2"],
    "pipeline": ["--batches", "30", "--batch-size", "32", "--train-batch", "2"],
    "registration": ["--repeats", "3"],
    "memory": ["--cases", "score-tiny,score-small,train-tiny,train-small"],
    # input path (issue 10): on-the-fly rendering by workers, Beam caches, resume cost
    "input_render": [],
    "input_cache": [],
    # t0-cache at 12/48/192 tasks x 1,000 examples: rate, peak RSS, counts (issue 17), ~10 min
    "cache_scale": [],
    "input_resume": ["--steps", "10,500,2000", "--repeats", "2"],
    # one whole t0-score process over 4 prompts vs the t-zero loop (issue 11)
    "scoring_process": ["--examples", "277", "--threads", "2"],  # the 1,108 examples
}
# Rendered when their JSON is there, never run by default: each plan compiles a T0-3B/T0-11B
# step for a TPU slice (10+ minutes apiece on 2 cores). `python -m bench.plans` writes it.
RENDER_ONLY = ("plans",)
QUICK = {  # a few minutes: checks the whole chain, numbers are not meaningful
    "scoring": ["--presets", "small", "--examples", "8", "--templates", "1"],
    "training": ["--layers", "1", "--steps", "2"],
    "pipeline": ["--batches", "3", "--batch-size", "8", "--train-batch", "1",
                 "--train-steps", "1"],
    "registration": ["--repeats", "1"],
    "memory": ["--cases", "score-tiny,train-tiny"],
    "input_render": ["--quick"],
    "input_cache": ["--quick"],
    "cache_scale": ["--quick"],
    "input_resume": ["--steps", "10,50", "--repeats", "1"],
    "scoring_process": ["--quick"],
}


def command(name: str, args: Sequence[str], out_dir: str) -> list[str]:
    return [sys.executable, "-m", f"bench.{name}", *args, "--out", out_dir]


def run_one(name: str, args: Sequence[str], out_dir: str) -> dict:
    """Run `bench.<name>`; returns its wall time, summary lines and return code."""
    cmd = command(name, args, out_dir)
    records.log(f"running {' '.join(cmd[1:])}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    summary = [line for line in done.stdout.splitlines() if line.strip()]
    for line in summary:
        print(f"  {name}: {line}", flush=True)
    if done.returncode:
        print(done.stderr[-4000:], file=sys.stderr)
    return {"seconds": seconds, "returncode": done.returncode, "summary": summary}


def _kept(out: str, title: str) -> Optional[list]:
    """Section `title` as the existing page at `out` has it (None: no page or no section)."""
    old = pathlib.Path(out)
    return report.section_lines(old.read_text(), title) if old.is_file() else None


def _with_gpu_section(page: str, out: str, json_dir: str) -> str:
    """The GPU section (`python -m bench.gpu`, run on another machine): from gpu.json when
    there is one, else as the existing page has it, so a CPU rerun does not erase it."""
    from bench import gpu  # noqa: PLC0415

    record = records.read_json("gpu", json_dir)
    kept = gpu.section(record) if record is not None else _kept(out, gpu.SECTION_TITLE)
    return report.with_section(page, gpu.SECTION_TITLE, kept) if kept else page


# Sections recorded by commands that are not benchmarks of this set (the miniature experiments'
# wall times come from `make demo` / `make paper` runs): kept as the page has them.
KEPT_SECTIONS = ("## Miniature experiments (`make demo`, `make paper`) and the CPU train step",)


def _with_kept_sections(page: str, out: str) -> str:
    for title in KEPT_SECTIONS:
        kept = _kept(out, title)
        if kept:
            page = report.with_section(page, title, kept)
    return page


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--json-dir", default=str(records.OUT_DIR))
    parser.add_argument("--only", default=",".join(CPU_SET))
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the chain")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else CPU_SET
    names = [n for n in args.only.split(",") if n]
    failures, runs = [], {}
    if not args.render_only:
        for name in names:
            runs[name] = run_one(name, plan[name], args.json_dir)
            if runs[name]["returncode"]:
                failures.append(name)
    if runs:  # kept for --render-only
        records.write_json("run_all", {"runs": runs, "quick": args.quick}, args.json_dir)
    results = {n: r for n in (*CPU_SET, *RENDER_ONLY)
               if (r := records.read_json(n, args.json_dir)) is not None}
    last = records.read_json("run_all", args.json_dir) or {}
    notes = [f"Last `run_all` ({last['machine']['date']}): " + ", ".join(
        f"{n} {r['seconds']:.0f} s" for n, r in last["runs"].items())
        + f" (total {sum(r['seconds'] for r in last['runs'].values()) / 60:.1f} min); "
        "scripts rerun alone since then show their own dates below."] if last else []
    if failures:
        notes.append(f"FAILED this run (older JSON shown if any): {', '.join(failures)}")
    if args.quick:
        notes.append("Quick mode (`--quick`): toy sizes, the figures are not meaningful.")
    commands = [" ".join(["python -m bench." + n, *plan[n]]) for n in CPU_SET]
    commands += ["python -m bench.plans                                   # TPU plans, ~1 h",
                 "python -m bench.scoring --device gpu --dtype bfloat16   # on a GPU",
                 "python -m bench.scoring_process --device gpu            # on a GPU",
                 "python -m bench.training --device gpu                   # on a GPU",
                 "python -m bench.gpu                                     # both, on a GPU"]
    page = report.render(results, commands, notes)
    page = _with_gpu_section(page, args.out, args.json_dir)
    page = _with_kept_sections(page, args.out)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(page)
    print(f"wrote {args.out} ({', '.join(results) or 'no results'})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
