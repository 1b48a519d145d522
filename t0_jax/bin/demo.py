"""`make demo`: the whole T0 pipeline on one laptop, on task families the project generates.

    python -m t0_jax.bin.demo --out_dir=demo_out                  # synthetic data, ~5 min CPU
    python -m t0_jax.bin.demo --out_dir=demo_out --checkpoint=CKPT --data_dir=MIRROR

Without --checkpoint, every stage of the real recipe runs at toy scale, nothing mocked:
  1. data        procedurally generated families (t0_jax.data.synthetic) → DATA_DIR/<family>/
  2. vocabulary  a SentencePiece model trained on the rendered prompts (T5 id layout)
  3. tasks       registry tasks per template + `_score_eval` twins; the mixture `synth_train`
                 (seen templates of the trained families, T0's cap); two families held out
                 entirely and two templates per trained family kept unseen
  4. cache       the training split of every `synth_train` task in seqio's cache format,
                 written by `t0-cache`'s Apache Beam pipeline (DirectRunner), table printed
  5. train       `t0-train` with gin/runs/train.gin + gin/experiments/demo.gin from that cache
                 (USE_CACHED_TASKS), in-process:
                 packed features, partitioned Adafactor trainer, Orbax checkpoint
  6. score       `t0-score` (rank classification) on every template of every family
  7. report      per family and kind (seen / unseen template / held-out family): median and
                 spread over prompts against chance, the robustness plot, the paths
With --checkpoint (HF, T5X or ours), training is skipped and the checkpoint is scored on
MIXTURE (default t0_eval_score_eval): the datasets of it found in DATA_DIR (the rest are named).

`run_demo(DemoConfig(...))` is the in-process entry (tests, notebooks); `main(argv)` the CLI.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from typing import Optional, Sequence

from t0_jax.bin import cli

REAL_COMMAND = ("make demo CHECKPOINT=<HF or T5X checkpoint, e.g. a bigscience/T0_3B download> "
                "DATA_DIR=<local mirror: DATA_DIR/<hf_name>[/<subset>]/<split>.jsonl>")
DEFAULT_REAL_MIXTURE = "t0_eval_score_eval"
DEMO_GIN = ("runs/train.gin", "experiments/demo.gin")
KIND_LABELS = {"seen": "trained prompts", "unseen": "unseen prompts",
               "held_out": "held-out family", "eval": "zero-shot"}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    out_dir: str = "demo_out"
    checkpoint: Optional[str] = None     # set: score this model instead of training one
    data_dir: Optional[str] = None       # real mirror (with checkpoint); default $T0_DATA_DIR
    vocab_path: Optional[str] = None     # with checkpoint: default its spiece.model / $T0_VOCAB_PATH
    mixture: str = DEFAULT_REAL_MIXTURE  # with checkpoint: what to score
    eval_mixture: Optional[str] = None   # synthetic: default synthetic.EVAL_MIXTURE
    seed: int = 0
    vocab_size: int = 800                # requested SentencePiece pieces (fewer on small text)
    max_eval_examples: Optional[int] = None  # per task (smoke runs)
    gin_bindings: tuple = ()             # extra `NAME = value` bindings for t0-train
    progress: bool = True


class DemoError(RuntimeError):
    """A demo that cannot run as asked (the message says what to change)."""


class _Stages:
    """Prints `[i/n] title` with the elapsed time of each stage (the demo's outer progress)."""

    def __init__(self, total: int):
        self.total, self.index, self.start = total, 0, time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, title: str):
        self.index += 1
        print(f"\n[{self.index}/{self.total}] {title}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[title.split(":")[0]] = round(time.perf_counter() - start, 1)
        print(f"    done in {time.perf_counter() - start:.1f}s "
              f"(total {time.perf_counter() - self.start:.0f}s)", flush=True)


# ----------------------------------------------------------------------------- synthetic run


def _synthetic_run(cfg: DemoConfig) -> dict:
    from t0_jax.data import sources, synthetic  # noqa: PLC0415 - data/ imports TensorFlow

    out = pathlib.Path(cfg.out_dir).absolute()
    stage = _Stages(7)
    data_dir, vocab_file = out / "data", out / "vocab" / "spiece.model"
    with stage(f"data: {len(synthetic.FAMILIES)} generated task families → {data_dir}"):
        written = synthetic.write_mirror(data_dir, seed=cfg.seed)
        for family, counts in written.items():
            spec = synthetic.FAMILIES[family]
            role = "held out" if spec.held_out else "trained"
            print(f"    {family:18s} {spec.cluster:20s} {role:9s} "
                  + ", ".join(f"{split} {n}" for split, n in counts.items()))
    with stage(f"vocabulary: SentencePiece on the rendered prompts → {vocab_file}"):
        synthetic.train_vocabulary(vocab_file, seed=cfg.seed, vocab_size=cfg.vocab_size)
        print(f"    {_piece_count(vocab_file)} pieces (+100 extra ids)")
    with stage("tasks: registry tasks, score-eval twins and mixtures (T0 cap)"):
        sources.set_data_dir(data_dir)
        mixtures = synthetic.register(vocab_file)
        _print_mixtures(mixtures, synthetic)
    cache_dir = out / "cache"
    with stage(f"cache: t0-cache --mixture {synthetic.TRAIN_MIXTURE} (Apache Beam) → {cache_dir}"):
        _cache(synthetic.TRAIN_MIXTURE, cache_dir, data_dir, vocab_file)
    with stage("train: t0-train " + " ".join(f"--gin_file={g}" for g in DEMO_GIN)
               + " --gin.USE_CACHED_TASKS=True"):
        result = _train(cfg, out / "model", data_dir, vocab_file, cache_dir)
    step_dir = _step_directory(result)
    eval_mixture = cfg.eval_mixture or synthetic.EVAL_MIXTURE
    with stage(f"score: t0-score on {eval_mixture} (rank classification)"):
        results = _score(step_dir, eval_mixture, out / "scores", data_dir, None,
                         cfg.max_eval_examples, cfg.progress)
    with stage("report"):
        kinds = synthetic.task_kinds()
        groups = {task: kinds[task] for task in results["tasks"]}
        summary = _report(results, out / "scores", groups, out, title="synthetic demo")
    summary |= {"train_loss": result.metrics.get("loss"), "train_steps": result.step,
                "checkpoint": str(step_dir), "stage_seconds": stage.seconds}
    return _finish(summary, out, real=False)


def _piece_count(vocab_file) -> int:
    import sentencepiece as spm  # noqa: PLC0415

    return spm.SentencePieceProcessor(model_file=str(vocab_file)).get_piece_size()


def _print_mixtures(mixtures: dict, synthetic) -> None:
    train = mixtures[synthetic.TRAIN_MIXTURE]
    total = sum(train.values())
    print(f"    {synthetic.TRAIN_MIXTURE}: {len(train)} tasks, rate sum {total}")
    for family in synthetic.trained_families():
        share = sum(r for t, r in train.items() if t.startswith(family + "_")) / total
        unseen = ", ".join(synthetic.FAMILIES[family].unseen_templates)
        print(f"      {family:18s} share {share:5.1%}   unseen templates: {unseen}")
    for name, rates in mixtures.items():
        if name != synthetic.TRAIN_MIXTURE:
            print(f"    {name}: {len(rates)} tasks")


def _cache(mixture: str, cache_dir, data_dir, vocab_file) -> None:
    """The training split of every task of `mixture` in seqio's cache format, written by the
    same Beam pipeline as `t0-cache` (in-process: the demo's tasks are registered here, not in
    the catalogue). A rerun finds the tasks COMPLETED and skips them."""
    from t0_jax.bin import cache as cache_main  # noqa: PLC0415
    from t0_jax.data import cache_build  # noqa: PLC0415 - data/ imports TensorFlow

    print(f"    t0-cache --mixture {mixture} --splits train --output_cache_dir {cache_dir} "
          f"--data_dir {data_dir} --vocab_path {vocab_file} --min_shards 2", flush=True)
    report = cache_build.cache_tasks([mixture], str(cache_dir), splits=["train"],
                                     data_dir=str(data_dir), vocab_path=str(vocab_file),
                                     min_shards=2, progress=lambda line: None)
    lines = cache_main.table(report)
    print("\n".join("    " + line for line in lines[:2] + lines[2:-1][:6]), flush=True)
    if len(lines) > 9:
        print(f"    ... {len(lines) - 9} more tasks", flush=True)
    print("    " + lines[-1], flush=True)


def _train(cfg: DemoConfig, model_dir, data_dir, vocab_file, cache_dir):
    from t0_jax.bin import train as train_main  # noqa: PLC0415

    argv = [f"--gin_file={g}" for g in DEMO_GIN] + [
        f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_DIR={data_dir}",
        f"--gin.VOCAB_PATH={vocab_file}", f"--gin.SEED={cfg.seed}",
        "--gin.USE_CACHED_TASKS=True", f"--seqio_additional_cache_dirs={cache_dir}"]
    argv += [f"--gin_bindings={b}" for b in cfg.gin_bindings]
    if not cfg.progress:
        argv.append("--gin_bindings=train.progress_bar = False")
    print("    " + " ".join(argv), flush=True)
    result = train_main.run(argv)
    if not result.metrics:  # MODEL_DIR already held the final step: t0-train resumed at the end
        print(f"    {model_dir} already holds step {result.step}; reusing it "
              "(delete that folder to train again)")
    print(f"    step {result.step}: loss {_fmt(result.metrics.get('loss'))}, "
          f"token accuracy {_fmt(result.metrics.get('accuracy'))}; checkpoints in "
          f"{result.model_dir}")
    return result


def _step_directory(result) -> pathlib.Path:
    from t0_jax.train import checkpoints  # noqa: PLC0415

    return checkpoints.step_directory(result.model_dir, result.step)


# ----------------------------------------------------------------------------- real checkpoint


def _checkpoint_run(cfg: DemoConfig) -> dict:
    from t0_jax.data import registry, score_rows, sources  # noqa: PLC0415

    out = pathlib.Path(cfg.out_dir).absolute()
    data_dir = sources.get_data_dir(cfg.data_dir)
    if not data_dir:
        raise DemoError("--checkpoint needs the data: give --data_dir (make demo DATA_DIR=...) "
                        f"or set ${sources.DATA_DIR_ENV} to a local mirror "
                        "(DATA_DIR/<hf_name>[/<subset>]/<split>.jsonl).")
    stage = _Stages(3)
    with stage(f"tasks: {cfg.mixture} datasets present in {data_dir}"):
        score_rows.ensure_registered(cfg.vocab_path)
        tasks, missing = available_tasks(cfg.mixture, data_dir)
        for dataset, path in sorted(missing.items()):
            print(f"    missing {dataset}: no {path}")
        if not tasks:
            raise DemoError(f"none of the datasets of {cfg.mixture} is in {data_dir} (missing: "
                            f"{', '.join(sorted(missing))}); write them as JSONL there.")
        present = sorted({registry.task_info(t).dataset for t in tasks})
        print(f"    scoring {len(tasks)} tasks of {len(present)} datasets: {', '.join(present)}")
    with stage(f"score: t0-score {cfg.checkpoint}"):
        results = _score(pathlib.Path(cfg.checkpoint), ",".join(tasks), out / "scores",
                         data_dir, cfg.vocab_path, cfg.max_eval_examples, cfg.progress)
    with stage("report"):
        groups = {t: (r["dataset"], "eval") for t, r in results["tasks"].items()}
        summary = _report(results, out / "scores", groups, out, title=cfg.mixture)
    summary |= {"checkpoint": str(cfg.checkpoint), "missing_datasets": sorted(missing),
                "stage_seconds": stage.seconds}
    return _finish(summary, out, real=True)


def available_tasks(mixture: str, data_dir) -> tuple[list[str], dict[str, str]]:
    """(tasks of `mixture` whose data is in `data_dir`, {missing dataset: expected file})."""
    from t0_jax.data import registry, score_rows, sources  # noqa: PLC0415

    tasks, missing = [], {}
    for task in score_rows.resolve_task_names(mixture):
        info = registry.task_info(task)
        path = sources.mirror_path(data_dir, info.dataset, info.subset,
                                   info.source_split("validation"))
        label = score_rows.task_info(task).dataset_label
        if path.is_file():
            tasks.append(task)
        else:
            missing[label] = str(path)
    return tasks, missing


# ----------------------------------------------------------------------------- scoring, report


def _score(checkpoint, mixture: str, output_dir, data_dir, vocab_path, max_examples,
           progress: bool = True) -> dict:
    from t0_jax.bin import score as score_main  # noqa: PLC0415

    argv = ["--gin_file=runs/score.gin", f"--gin.CHECKPOINT_PATH={checkpoint}",
            f"--gin.MIXTURE_OR_TASK_NAME={mixture}", f"--gin.OUTPUT_DIR={output_dir}",
            f"--gin.DATA_DIR={data_dir}"]
    if vocab_path:
        argv.append(f"--gin.VOCAB_PATH={vocab_path}")
    if max_examples:
        argv.append(f"--gin.MAX_EXAMPLES={int(max_examples)}")
    if not progress:
        argv.append("--gin_bindings=score_run.progress = False")
    shown = argv[:2] + ([argv[2]] if len(mixture) < 80 else ["--gin.MIXTURE_OR_TASK_NAME=…"])
    print("    t0-score " + " ".join(shown + argv[3:]), flush=True)
    return score_main.run_from_flags(argv)


def chance_by_task(scores_path) -> dict[str, float]:
    """Expected accuracy of a uniform random guess per task: mean of #correct / #choices."""
    examples: dict = collections.defaultdict(lambda: [0, 0])
    with open(scores_path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            counts = examples[(row["task"], row["example"])]
            counts[0] += bool(row["is_correct"])
            counts[1] += 1
    per_task: dict = collections.defaultdict(list)
    for (task, _), (correct, total) in examples.items():
        per_task[task].append(correct / total)
    return {task: sum(v) / len(v) for task, v in per_task.items()}


def summary_rows(results: dict, groups: dict, chance: dict) -> list[dict]:
    """One row per (dataset, kind): prompt count, median / min / max accuracy, chance."""
    from t0_jax.scoring import aggregate  # noqa: PLC0415

    grouped = collections.defaultdict(list)
    for task, (dataset, kind) in groups.items():
        grouped[(dataset, kind)].append(task)
    rows = []
    for (dataset, kind), tasks in sorted(grouped.items()):
        accs = [results["tasks"][t]["accuracy"] for t in tasks]
        stats = aggregate.spread(accs)
        rows.append({"dataset": dataset, "kind": kind, "prompts": len(tasks),
                     "median": stats["median"], "min": stats["min"], "max": stats["max"],
                     "q1": stats["q1"], "q3": stats["q3"],
                     "chance": sum(chance.get(t, 0.0) for t in tasks) / len(tasks),
                     "examples": max(results["tasks"][t]["num_examples"] for t in tasks),
                     "tasks": sorted(tasks)})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    header = (f"{'dataset':24s} {'prompts':>7s}  {'kind':16s} {'median':>6s} {'min':>6s} "
              f"{'max':>6s} {'chance':>6s} {'Δ median':>8s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        delta = None if r["median"] is None else r["median"] - r["chance"]
        lines.append(f"{r['dataset']:24s} {r['prompts']:7d}  {KIND_LABELS[r['kind']]:16s} "
                     f"{_fmt(r['median'])} {_fmt(r['min'])} {_fmt(r['max'])} "
                     f"{_fmt(r['chance'])} {_fmt(delta, sign=True):>8s}")
    return "\n".join(lines)


def _fmt(value, sign: bool = False) -> str:
    if value is None:
        return "     -"
    return f"{value:+6.3f}" if sign else f"{value:6.3f}"


def _report(results: dict, score_dir: pathlib.Path, groups: dict, out: pathlib.Path,
            title: str) -> dict:
    """Table rows, the per-(dataset, kind) robustness plot, and the paths of everything."""
    from t0_jax.scoring import aggregate, plots  # noqa: PLC0415

    chance = chance_by_task(score_dir / "scores.jsonl")
    rows = summary_rows(results, groups, chance)
    labels = {t: f"{d} ({KIND_LABELS[k]})" if k != "eval" else d for t, (d, k) in groups.items()}
    plot = plots.accuracy_boxplot(aggregate.dataset_summary(results["tasks"], labels),
                                  results["tasks"], out / "prompt_robustness.png",
                                  title=f"{title}: accuracy per prompt")
    return {"rows": rows, "overall": results.get("overall"),
            "results_json": str(score_dir / "results.json"),
            "results_csv": str(score_dir / "results.csv"),
            "scores_jsonl": str(score_dir / "scores.jsonl"),
            "scorer_plot": str(score_dir / plots.PLOT_FILE), "plot": str(plot)}


def _finish(summary: dict, out: pathlib.Path, real: bool) -> dict:
    path = out / "demo_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    summary["summary_json"] = str(path)
    print("\n" + format_table(summary["rows"]))
    print(f"\nresults:          {summary['results_json']}  (+ results.csv, scores.jsonl)")
    print(f"robustness plot:  {summary['plot']}")
    print(f"per-dataset plot: {summary['scorer_plot']}")
    print(f"summary:          {path}")
    if not real:
        print(f"\nThe same on real data with a real model:\n    {REAL_COMMAND}")
    return summary


# ----------------------------------------------------------------------------- entry points


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo; returns the summary (rows, paths, timings) also saved as demo_summary.json."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    pathlib.Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    if cfg.checkpoint:
        return _checkpoint_run(cfg)
    if cfg.data_dir:
        raise DemoError("--data_dir is the real-data mirror scored with --checkpoint; the "
                        "synthetic demo writes its own data under OUT_DIR/data. Give both: "
                        + REAL_COMMAND)
    return _synthetic_run(cfg)


def parse_args(argv: Sequence[str]) -> DemoConfig:
    p = argparse.ArgumentParser(prog="python -m t0_jax.bin.demo",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="demo_out")
    p.add_argument("--checkpoint", default=None, help="HF / T5X / t0_jax checkpoint to score")
    p.add_argument("--data_dir", default=None, help="real mirror (with --checkpoint)")
    p.add_argument("--vocab_path", default=None, help="SentencePiece model for --checkpoint")
    p.add_argument("--mixture", default=DEFAULT_REAL_MIXTURE, help="scored with --checkpoint")
    p.add_argument("--eval_mixture", default=None, help="synthetic: what to score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_eval_examples", type=int, default=None)
    p.add_argument("--gin_bindings", action="append", default=[],
                   help="extra t0-train gin binding, e.g. 'TRAIN_STEPS = 100' (repeatable)")
    a = p.parse_args(list(argv))
    return DemoConfig(out_dir=a.out_dir, checkpoint=a.checkpoint or None,
                      data_dir=a.data_dir or None, vocab_path=a.vocab_path, mixture=a.mixture,
                      eval_mixture=a.eval_mixture, seed=a.seed,
                      max_eval_examples=a.max_eval_examples, gin_bindings=tuple(a.gin_bindings))


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run("demo", _main, argv)


def _main(argv: list) -> int:
    """The stages print what happens; library and trainer logs only from WARNING on."""
    logging.getLogger("t0_jax").setLevel(logging.WARNING)
    run_demo(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
