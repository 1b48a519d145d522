"""Scoring as a user runs it: one whole `t0-score` process over several prompts vs the t-zero loop.

    python -m bench.scoring_process [--dataset social_i_qa] [--templates 4] [--examples 250]
                                    [--preset small] [--no-separate] [--quick] [--out bench_out]

The work (issue 11 item 4): `--templates` prompts of one dataset of the real mirror (RTE is not
in it; social_i_qa has 3 choices per example), `--examples` examples each, a random T5 v1.1
model of the preset's shape (`small` = T5 v1.1-small, saved as a Hugging Face directory with the
bench SentencePiece model as its spiece.model).
  * ours, whole process: `python -m t0_jax.bin.score` with MIXTURE_OR_TASK_NAME as a gin list,
    timed from launch to exit: interpreter start-up, task registration, rendering and
    tokenisation, checkpoint load, XLA compilation (no persistent compilation cache) and scoring;
  * ours, separate processes (unless --no-separate): one `t0-score` per prompt, as before the
    list form existed; the sum of their wall times;
  * the peer: bench/hf_peers.tzero_loop (t-zero's run_eval loop: 8 examples per batch, input
    copied per choice) on the same weights and the same tokens; model load, rendering and
    tokenisation excluded (the peer gets pre-tokenised examples).
Predictions must agree on ≥ 99% of examples. Goal: peer / ours-whole-process ≥ 2.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Sequence

from bench import hf_peers, prompts, records

TARGET = 2.0
MIN_AGREEMENT = 0.99
NAME = "scoring_process"


def score_process(hf_dir: str, names: Sequence[str], examples: int, out_dir: str,
                  device: str) -> float:
    """Wall seconds of one `t0-score` process scoring `names` (gin list form) into out_dir."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compilation is part of what a user waits for
    task_list = "[" + ", ".join(f"'{n}'" for n in names) + "]"
    argv = [sys.executable, "-m", "t0_jax.bin.score", "--gin_file=gin/runs/score.gin",
            f"--gin.CHECKPOINT_PATH={hf_dir}", f"--gin.MIXTURE_OR_TASK_NAME={task_list}",
            f"--gin.OUTPUT_DIR={out_dir}", f"--gin.DATA_DIR={prompts.DATA_DIR}",
            f"--gin.MAX_EXAMPLES={examples}", "--gin_bindings=score_run.progress = False",
            "--gin_bindings=score_run.compilation_cache_dir = None"]
    repo = pathlib.Path(__file__).resolve().parents[1]
    with records.Stopwatch() as watch:
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"t0-score failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return watch.seconds


def read_scores(out_dir: str) -> dict[str, list[list[float]]]:
    """{task: per example (sorted), its choices' log-likelihoods} from scores.jsonl."""
    by_task: dict[str, dict[int, dict[int, float]]] = {}
    for line in (pathlib.Path(out_dir) / "scores.jsonl").read_text().splitlines():
        r = json.loads(line)
        by_task.setdefault(r["task"], {}).setdefault(r["example"], {})[r["choice"]] = \
            r["log_likelihood"]
    return {t: [[c[k] for k in sorted(c)] for _, c in sorted(ex.items())]
            for t, ex in by_task.items()}


def measure(dataset: str, templates: int, examples: int, preset: str, device: str,
            separate: bool) -> dict:
    import torch  # noqa: PLC0415

    from bench.scoring import agreement, random_hf_model, score_peer  # noqa: PLC0415

    subset = next((s for d, s, _ in prompts.DATASETS if d == dataset), None)
    split = next(sp for d, _, sp in prompts.DATASETS if d == dataset)
    names = [n for n, _ in prompts.score_tasks(templates, ((dataset, subset, split),))]
    vocab_path, _ = prompts.build_vocab()
    tasks = {n: prompts.task_examples(n, split, examples, vocab_path) for n in names}
    hf_model = random_hf_model(preset)
    with tempfile.TemporaryDirectory(prefix="bench_process_") as work:
        hf_model.save_pretrained(work)
        pathlib.Path(work, "spiece.model").write_bytes(pathlib.Path(vocab_path).read_bytes())
        records.log(f"t0-score, one process, {len(names)} prompts × {examples} examples")
        ours_s = score_process(work, names, examples, f"{work}/out", device)
        ours = read_scores(f"{work}/out")
        separate_s = None
        if separate:
            separate_s = sum(score_process(work, [n], examples, f"{work}/out_{i}", device)
                             for i, n in enumerate(names))
            records.log(f"t0-score, one process per prompt: {separate_s:.1f}s")
    hf_model = hf_model.to("cuda" if device == "gpu" else "cpu")
    hf_peers.score_examples(hf_model, next(iter(tasks.values()))[:8])  # warm-up
    peer, peer_s = hf_peers.timed(score_peer, hf_peers.tzero_loop, hf_model, tasks, 8)
    records.log(f"ours {ours_s:.1f}s (whole process), t-zero loop {peer_s:.1f}s")
    agree, delta = agreement(ours, peer)
    n = sum(len(v) for v in tasks.values())
    return {"dataset": dataset, "tasks": names, "examples": n, "preset": preset,
            "device": device, "torch_threads": torch.get_num_threads(),
            "ours_process_s": ours_s, "ours_separate_processes_s": separate_s,
            "tzero_loop_s": peer_s, "vs_tzero": peer_s / ours_s,
            "separate_vs_tzero": peer_s / separate_s if separate_s else None,
            "agreement": agree, "max_abs_delta_loglik": delta, "target": TARGET,
            "passed": peer_s / ours_s >= TARGET and agree >= MIN_AGREEMENT}


def section(record: dict) -> list[str]:
    """Markdown for docs/benchmarks.md."""
    r = record
    sep = r.get("ours_separate_processes_s")
    lines = [
        "### Scoring as a user runs it: one `t0-score` process vs the t-zero loop",
        "",
        f"{len(r['tasks'])} prompts of {r['dataset']} ({r['examples']} examples in all), "
        f"random T5 v1.1-{r['preset']} weights, {r['device']}. Ours is the whole process "
        "(start-up, registration, rendering, checkpoint load, compilation without a persistent "
        "cache, scoring); the t-zero loop excludes model load and tokenisation "
        "(`python -m bench.scoring_process`).",
        "",
        "| run | seconds | t-zero loop / run |",
        "|---|---:|---:|",
        f"| t0-score, one process, list form | {r['ours_process_s']:.1f} | "
        f"{r['vs_tzero']:.2f}× |",
    ]
    if sep:
        lines.append(f"| t0-score, one process per prompt | {sep:.1f} | "
                     f"{r['separate_vs_tzero']:.2f}× |")
    lines += [f"| t-zero loop (PyTorch, {r['torch_threads']} threads) | "
              f"{r['tzero_loop_s']:.1f} | 1.00× |", "",
              f"Goal ≥ {r['target']:.0f}×: {'met' if r['passed'] else 'not met'}; predictions "
              f"agree on {100 * r['agreement']:.1f}% of examples (max |Δ log-likelihood| "
              f"{r['max_abs_delta_loglik']:.1e})."]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="social_i_qa")
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--examples", type=int, default=250, help="examples per prompt")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-separate", action="store_true",
                        help="skip the one-process-per-prompt run")
    parser.add_argument("--quick", action="store_true",
                        help="16 examples per prompt, no one-process-per-prompt run")
    parser.add_argument("--out", default=str(records.OUT_DIR))
    args = parser.parse_args(argv)
    if args.quick:
        args.examples, args.no_separate = 16, True
    import torch  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    record = measure(args.dataset, args.templates, args.examples, args.preset, args.device,
                     not args.no_separate)
    path = records.write_json(NAME, record | {"argv": list(argv or sys.argv[1:])}, args.out)
    print("\n".join(section(record)))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
