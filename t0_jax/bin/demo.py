"""`make demo`: the whole T0 pipeline on one laptop, on task families the project generates.

    python -m t0_jax.bin.demo --out_dir=demo_out                  # synthetic, <10 min CPU
    python -m t0_jax.bin.demo --out_dir=demo_out --checkpoint=CKPT --data_dir=MIRROR

Without --checkpoint, T0's recipe runs at toy scale on a world the project generates, nothing
mocked (the same stages as `t0-experiments`, t0_jax/bin/experiments.py, for one condition):
  1. world       procedurally generated task families (t0_jax.data.synthetic) and a free-text
                 corpus stating the world's facts (t0_jax.data.corpus) → OUT_DIR/data; a
                 SentencePiece vocabulary (T5 id layout); the 6-word overlap check
  2. tasks       registry tasks per template + `_score_eval` twins; the mixture `synth_train`
                 (trained templates of the trained families, T0's cap); two families held out
                 entirely and two templates per trained family kept unseen; the prefix-LM task
  3. T5+LM       `t0-train` runs/train.gin + experiments/demo_lm.gin: prefix LM on the corpus
  4. T0          `t0-train` runs/finetune.gin + experiments/demo.gin from the T5+LM checkpoint
  5. score       `t0-score` (rank classification) of both on every prompt of the held-out families
  6. report      per held-out family: T5+LM vs T0 median accuracy over prompts, min-max, chance
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
    seed: int = 0                        # synthetic: the T0 run's data order
    vocab_size: int = 800                # requested SentencePiece pieces (fewer on small text)
    max_eval_examples: Optional[int] = None  # per task (smoke runs)
    pretrain_steps: Optional[int] = None # synthetic: None keeps demo_lm.gin's TRAIN_STEPS
    finetune_steps: Optional[int] = None # synthetic: None keeps demo.gin's TRAIN_STEPS
    gin_bindings: tuple = ()             # extra `NAME = value` bindings for the T0 t0-train
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
    from t0_jax.bin import experiment_report, experiments  # noqa: PLC0415
    from t0_jax.data import synthetic  # noqa: PLC0415 - data/ imports TensorFlow

    out = pathlib.Path(cfg.out_dir).absolute()
    plan = experiments.load_plan()
    settings = experiments.Settings(out_dir=str(out), pretrain_steps=cfg.pretrain_steps,
                                    finetune_steps=cfg.finetune_steps,
                                    max_eval_examples=cfg.max_eval_examples,
                                    vocab_size=cfg.vocab_size, progress=cfg.progress)
    stage = _Stages(6)
    experiments.enable_compilation_cache()
    with stage(f"world: {len(synthetic.FAMILIES)} task families, a {plan.corpus_documents}-"
               f"document corpus, a vocabulary → {out / 'data'}"):
        world = experiments.prepare_world(out, plan, cfg.vocab_size)
        for family, spec in synthetic.FAMILIES.items():
            role = "held out" if spec.held_out else "trained"
            print(f"    {family:18s} {spec.cluster:20s} {role}")
        print(f"    {_piece_count(world.vocab_file)} SentencePiece pieces (+100 extra ids); no "
              "6-word run of a held-out template in the corpus or a trained template")
    with stage("tasks: registry tasks, score-eval twins, mixtures (T0 cap), prefix-LM task"):
        _print_mixtures(world.mixtures, synthetic)
    with stage("T5+LM: t0-train " + " ".join(f"--gin_file={g}" for g in experiments.PRETRAIN_GIN)
               + " (prefix LM on the corpus, from random weights)"):
        t5_lm = experiments.pretrain(out, world, settings, log=_indented)
    with stage("T0: t0-train " + " ".join(f"--gin_file={g}" for g in experiments.FINETUNE_GIN)
               + f" from T5+LM on {synthetic.TRAIN_MIXTURE}"):
        t0 = experiments.finetune(out, world, settings, experiment_report.T0,
                                  synthetic.TRAIN_MIXTURE, cfg.seed, t5_lm, log=_indented,
                                  extra=cfg.gin_bindings)
    held_out = synthetic.KIND_MIXTURES["held_out"]
    with stage(f"score: t0-score on {held_out} (every prompt of the held-out families)"):
        experiments.score(t5_lm, experiments.score_dir(out, experiments.BASELINE), world,
                          cfg.max_eval_examples, log=_indented)
        experiments.score(t0, experiments.score_dir(out, experiment_report.T0, cfg.seed), world,
                          cfg.max_eval_examples, log=_indented)
    with stage("report"):
        summary = _held_out_report(out, plan, cfg.seed)
    summary |= {"t5_lm_checkpoint": str(t5_lm), "checkpoint": str(t0),
                "stage_seconds": stage.seconds}
    return _finish_synthetic(summary, out)


def _indented(line: str) -> None:
    print(line, flush=True)


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


def _held_out_report(out: pathlib.Path, plan, seed: int) -> dict:
    """T5+LM vs T0 per held-out family (median over prompts, its spread, chance) + figure."""
    from t0_jax.bin import experiment_report as er  # noqa: PLC0415

    t0 = {"name": er.T0, "group": "prompts", "d": 4}
    report = er.build_report(out, [t0], [seed], list(plan.held_out_families))
    figure = er.draw_figures(report, out)
    rows = []
    for family, info in report["families"].items():
        base = report["baseline"]["families"][family]
        trained = report["runs"][er.T0][str(seed)]["families"][family]
        rows.append({"dataset": family, "chance": info["chance"], "prompts": base["prompts"],
                     "t5_lm": base, "t0": trained, "tasks": info["prompts"]})
    return {"rows": rows, "figure": next(iter(figure.values())),
            "scores_jsonl": {"t5_lm": str(out / "scores" / er.BASELINE / "scores.jsonl"),
                             "t0": str(out / "scores" / er.T0 / f"seed_{seed}" /
                                       "scores.jsonl")}}


def format_held_out_table(rows: Sequence[dict]) -> str:
    header = (f"{'held-out family':18s} {'prompts':>7s} {'chance':>6s}   "
              f"{'T5+LM median [min-max]':24s} {'T0 median [min-max]':24s} {'Δ T0-T5+LM':>10s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        base, t0 = r["t5_lm"], r["t0"]
        lines.append(f"{r['dataset']:18s} {r['prompts']:7d} {_fmt(r['chance'])}   "
                     f"{_fmt(base['median'])} [{base['min']:.2f}-{base['max']:.2f}]{'':5s} "
                     f"{_fmt(t0['median'])} [{t0['min']:.2f}-{t0['max']:.2f}]{'':5s} "
                     f"{_fmt(t0['median'] - base['median'], sign=True):>10s}")
    return "\n".join(lines)


def _finish_synthetic(summary: dict, out: pathlib.Path) -> dict:
    path = out / "demo_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    summary["summary_json"] = str(path)
    print("\nZero-shot accuracy on the held-out families (rank classification, every prompt):")
    print(format_held_out_table(summary["rows"]))
    print(f"\nfigure:  {summary['figure']}")
    print(f"scores:  {summary['scores_jsonl']['t5_lm']}\n         "
          f"{summary['scores_jsonl']['t0']}")
    print(f"summary: {path}")
    print("\nThe ablations (prompts per dataset, number of datasets), with seeds: make paper "
          "(or make paper QUICK=1)")
    print(f"The same on real data with a real model:\n    {REAL_COMMAND}")
    return summary


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
    p.add_argument("--pretrain_steps", type=int, default=None, help="synthetic: T5+LM steps")
    p.add_argument("--finetune_steps", type=int, default=None, help="synthetic: T0 steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_eval_examples", type=int, default=None)
    p.add_argument("--gin_bindings", action="append", default=[],
                   help="extra t0-train gin binding, e.g. 'TRAIN_STEPS = 100' (repeatable)")
    a = p.parse_args(list(argv))
    return DemoConfig(out_dir=a.out_dir, checkpoint=a.checkpoint or None,
                      data_dir=a.data_dir or None, vocab_path=a.vocab_path, mixture=a.mixture,
                      pretrain_steps=a.pretrain_steps, finetune_steps=a.finetune_steps,
                      seed=a.seed,
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
