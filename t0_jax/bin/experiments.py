"""`t0-experiments` (`make paper`): the T0 paper's experiments, run by this code, in miniature.

    t0-experiments --out_dir=paper_out            # every condition, 3 seeds (make paper)
    t0-experiments --out_dir=paper_out --quick    # same conditions, 2 seeds, fewer steps
                                                  # (make paper QUICK=1; the CI test)

On the demo world (t0_jax.data.synthetic), with the plan fixed in tasks/experiments.yaml:
  1. world       task families, the free-text corpus (t0_jax.data.corpus) and a vocabulary;
                 the 6-word overlap check between held-out templates and everything trained on
  2. T5+LM       `t0-train` (runs/train.gin + experiments/demo_lm.gin): the demo model from
                 random weights on the prefix-LM task over the corpus, once
  3. conditions  `t0-train` (runs/finetune.gin + experiments/demo.gin) from that checkpoint on
                 each ablation mixture (built by t0_jax.data.mixtures like t0_train /
                 t0_train_one_og_prompt / t0_train_all_og_prompts), once per seed
  4. scores      `t0-score` of T5+LM and of every run on every prompt of every held-out family
  5. report      t0_jax.bin.experiment_report: report.md, report.json, the paper's figures
A rerun reuses every checkpoint and score already in OUT_DIR. The console scripts run
in-process (`t0_jax.bin.train.run`, `t0_jax.bin.score.run_from_flags`), because the demo's
tasks are registered in this process, not in the catalogue; XLA's persistent compilation cache
lets every run after the first reuse the compiled step.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from typing import Optional, Sequence

import yaml

from t0_jax import resources
from t0_jax.bin import cli

PLAN_FILE = "experiments.yaml"           # under tasks/
PRETRAIN_GIN = ("runs/train.gin", "experiments/demo_lm.gin")
FINETUNE_GIN = ("runs/finetune.gin", "experiments/demo.gin")
BASELINE = "t5_lm"


@dataclasses.dataclass(frozen=True)
class Plan:
    """tasks/experiments.yaml: what is compared, fixed before any run."""
    world_seed: int
    corpus_documents: int
    held_out_families: tuple
    seeds: tuple
    quick_seeds: tuple
    prompt_conditions: dict          # condition name -> mixtures.PROMPT_SELECTIONS key
    d_ablation: dict                 # d -> tuple of family tuples


def load_plan(path=None) -> Plan:
    from t0_jax.data import synthetic  # noqa: PLC0415 - data/ imports TensorFlow

    path = pathlib.Path(path or resources.tasks_dir() / PLAN_FILE)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    plan = Plan(world_seed=int(raw["world_seed"]), corpus_documents=int(raw["corpus_documents"]),
                held_out_families=tuple(raw["held_out_families"]), seeds=tuple(raw["seeds"]),
                quick_seeds=tuple(raw["quick_seeds"]),
                prompt_conditions=dict(raw["prompt_conditions"]),
                d_ablation={int(d): tuple(tuple(c) for c in choices)
                            for d, choices in raw["d_ablation"].items()})
    if set(plan.held_out_families) != set(synthetic.held_out_families()):
        raise ValueError(f"{path}: held_out_families {list(plan.held_out_families)} differ from "
                         f"the families t0_jax/data/synthetic.py holds out "
                         f"({synthetic.held_out_families()}); make them agree.")
    return plan


@dataclasses.dataclass(frozen=True)
class Condition:
    """One trained model per seed: a mixture, and where it sits in the paper's figures."""
    name: str
    mixture: str
    group: str                       # "prompts" (Fig. 6) or "datasets" (Fig. 7)
    prompts: str                     # mixtures.PROMPT_SELECTIONS key
    families: tuple
    d: int


def conditions(plan: Plan) -> list[Condition]:
    """p1, p_og, p_all (= T0 = d4), then d1_a, d1_b, d2_a, d2_b ... from the plan."""
    from t0_jax.data import synthetic  # noqa: PLC0415

    trained = tuple(synthetic.trained_families())
    out = [Condition(name, synthetic.PROMPT_MIXTURES[prompts], "prompts", prompts, trained,
                     len(trained)) for name, prompts in plan.prompt_conditions.items()]
    for d, choices in sorted(plan.d_ablation.items()):
        for index, families in enumerate(choices):
            letter = "abcdefgh"[index]
            out.append(Condition(f"d{d}_{letter}", f"synth_train_d{d}_{letter}", "datasets",
                                 "all", tuple(families), d))
    return out


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one invocation; None keeps the gin file's value."""
    out_dir: str = "paper_out"
    quick: bool = False
    pretrain_steps: Optional[int] = None     # None: demo_lm.gin's 600 (make paper: FULL)
    finetune_steps: Optional[int] = None     # demo.gin: 300
    max_eval_examples: Optional[int] = None  # per held-out prompt; None: all 200
    seeds: Optional[tuple] = None            # None: the plan's (quick_seeds with --quick)
    only: Optional[tuple] = None             # condition names (None: every one)
    pretrain_bindings: tuple = ()            # extra gin statements for the T5+LM run
    finetune_bindings: tuple = ()            # ... and for every prompted run
    vocab_size: int = 800
    progress: bool = False                   # t0-train's progress bar


# --quick: 14 prompted trainings and 15 scorings in one process (imports, the seqio registry and
# the compiled steps are paid once; held-out rows rendered once). What is left is bounded by the
# CPU train step (~0.27 CPU-s for a batch of 32, ~0.38 for a prefix-LM batch, 2-core host,
# 2026-12-06) plus ~8 s per t0-train call (tracing the mixture's tf.data functions, about 0.3 s
# per task, the input pipeline's first batches, checkpoints), so steps are cut: 80 prefix-LM
# steps (~2.6k documents), 20 prompted steps (~2k prompts) and 32 examples per held-out prompt
# (accuracies to +-0.09). That shows every condition trained, scored and reported, not the
# paper's effects: those need the full sizes (make paper). With 120/30/40 the run took 253 s
# in pytest on a quiet host (2026-12-06), over the 4 minutes CI allows it.
QUICK = dict(pretrain_steps=80, finetune_steps=20, max_eval_examples=32)


# make paper (full sizes): the prompted runs as in demo.gin (300 steps, all 200 examples per
# prompt), but a longer T5+LM than make demo's 600 steps, paid once for all 21 prompted runs. A
# probe of the trained side only (does T5+LM continue a corpus sentence in the mood of its
# made-up adjective? bench/world_probe.py, 12 corpus frames) gave 0.56 at 600 steps and 0.85 at
# 1500 (2026-12-06); 1500 steps cost ~6 min of the hour make paper may take on 2 cores.
FULL = dict(pretrain_steps=1500)


def quick_settings(**overrides) -> Settings:
    return Settings(**{"quick": True, **QUICK, **overrides})


def full_settings(**overrides) -> Settings:
    return Settings(**{**FULL, **overrides})


# ----------------------------------------------------------------------------- the stages


@dataclasses.dataclass(frozen=True)
class World:
    data_dir: pathlib.Path
    vocab_file: pathlib.Path
    mixtures: dict


def prepare_world(out: pathlib.Path, plan: Plan, vocab_size: int = 800,
                  conds: Sequence[Condition] = ()) -> World:
    """Families, corpus, vocabulary; tasks and mixtures registered; the overlap check."""
    from t0_jax.data import corpus, prefix_lm, sources, synthetic  # noqa: PLC0415

    data_dir, vocab_file = out / "data", out / "vocab" / "spiece.model"
    synthetic.write_mirror(data_dir, seed=plan.world_seed)
    corpus.write_corpus(data_dir, plan.world_seed, plan.corpus_documents)
    check_no_overlap(plan)
    if not vocab_file.is_file():
        synthetic.train_vocabulary(vocab_file, seed=plan.world_seed, vocab_size=vocab_size,
                                   corpus_documents=plan.corpus_documents)
    sources.set_data_dir(data_dir)
    mixtures = synthetic.register(vocab_file)
    prefix_lm.register_corpus_task(plan.corpus_documents)
    for c in conds:
        if c.group == "datasets":
            mixtures[c.mixture] = synthetic.register_family_mixture(c.mixture, c.families,
                                                                    c.prompts)
    return World(data_dir, vocab_file, mixtures)


def check_no_overlap(plan: Plan) -> None:
    """No run of 6+ words of a held-out template in a trained template or the corpus."""
    from t0_jax.data import corpus, synthetic  # noqa: PLC0415

    held = corpus.family_template_segments(plan.held_out_families)
    trained = corpus.family_template_segments(synthetic.trained_families())
    documents = [corpus.text_words(d) for d in corpus.documents(plan.world_seed,
                                                                plan.corpus_documents)]
    runs = corpus.overlapping_runs(held, trained + documents)
    if runs:
        raise ValueError(f"held-out template wording appears in trained text: {runs[:5]}; "
                         "reword the corpus (t0_jax/data/corpus.py) or the trained templates.")


def _gin_argv(files, model_dir, world: World, bindings: dict, seed: int = 0,
              extra: Sequence[str] = ()) -> list:
    argv = [f"--gin_file={g}" for g in files] + [
        f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_DIR={world.data_dir}",
        f"--gin.VOCAB_PATH={world.vocab_file}", f"--gin.SEED={seed}"]
    argv += [f"--gin.{k}={v}" for k, v in bindings.items() if v is not None]
    return argv + [f"--gin_bindings={b}" for b in extra]


def train(files, model_dir: pathlib.Path, world: World, bindings: dict, seed: int = 0,
          log=print, extra: Sequence[str] = ()) -> pathlib.Path:
    """`t0-train` in-process; returns the final step directory (reused when already there).
    `extra`: further gin statements, e.g. 'BATCH_SIZE = 8'."""
    from t0_jax.bin import train as train_main  # noqa: PLC0415
    from t0_jax.train import checkpoints  # noqa: PLC0415

    argv = _gin_argv(files, model_dir, world, bindings, seed, extra)
    log("    t0-train " + " ".join(a for a in argv if "DATA_DIR" not in a
                                   and "VOCAB_PATH" not in a and "progress_bar" not in a))
    result = train_main.run(argv)
    loss = result.metrics.get("loss")
    log(f"    step {result.step}" + (f", loss {loss:.3f}" if loss is not None else
                                     " (already trained; reused)"))
    return pathlib.Path(checkpoints.step_directory(result.model_dir, result.step))


def score(checkpoint: pathlib.Path, output_dir: pathlib.Path, world: World,
          max_examples: Optional[int], mixture: Optional[str] = None, log=print) -> dict:
    """`t0-score` in-process on every prompt of the held-out families (reused when done)."""
    from t0_jax.bin import score as score_main  # noqa: PLC0415
    from t0_jax.data import synthetic  # noqa: PLC0415

    done, config = output_dir / "results.json", output_dir / "config.gin"
    if done.is_file() and config.is_file() and f"'{checkpoint}'" in config.read_text(
            encoding="utf-8"):  # this checkpoint's scores are there already
        return json.loads(done.read_text(encoding="utf-8"))
    mixture = mixture or synthetic.KIND_MIXTURES["held_out"]
    argv = ["--gin_file=runs/score.gin", f"--gin.CHECKPOINT_PATH={checkpoint}",
            f"--gin.MIXTURE_OR_TASK_NAME={mixture}", f"--gin.OUTPUT_DIR={output_dir}",
            f"--gin.DATA_DIR={world.data_dir}", f"--gin.VOCAB_PATH={world.vocab_file}",
            "--gin_bindings=score_run.progress = False",
            "--gin_bindings=score_run.select_checkpoints = False"]
    if max_examples:
        argv.append(f"--gin.MAX_EXAMPLES={int(max_examples)}")
    log(f"    t0-score --gin.CHECKPOINT_PATH={checkpoint} --gin.MIXTURE_OR_TASK_NAME={mixture}"
        f" --gin.OUTPUT_DIR={output_dir}" + (f" --gin.MAX_EXAMPLES={max_examples}"
                                              if max_examples else ""))
    return score_main.run_from_flags(argv)


def enable_compilation_cache() -> None:
    """Persist every compiled program (training steps too) so later runs load instead of
    compiling: the many same-shaped trainings of an experiment compile once."""
    import jax  # noqa: PLC0415

    from t0_jax.scoring import runner  # noqa: PLC0415

    if not jax.config.jax_compilation_cache_dir:
        path = runner.DEFAULT_CACHE_DIR.expanduser()
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pretrain(out: pathlib.Path, world: World, settings: Settings, log=print) -> pathlib.Path:
    """T5+LM: the demo model on the prefix-LM task, from random weights (seed 0)."""
    return train(PRETRAIN_GIN, out / "models" / BASELINE, world,
                 {"TRAIN_STEPS": settings.pretrain_steps}, seed=0, log=log,
                 extra=_progress(settings) + tuple(settings.pretrain_bindings))


def finetune(out: pathlib.Path, world: World, settings: Settings, cond_name: str, mixture: str,
             seed: int, initial: pathlib.Path, log=print, extra: Sequence[str] = ()
             ) -> pathlib.Path:
    """Multitask prompted training on `mixture` from the T5+LM checkpoint `initial`."""
    return train(FINETUNE_GIN, out / "models" / cond_name / f"seed_{seed}", world,
                 {"TRAIN_STEPS": settings.finetune_steps, "MIXTURE_OR_TASK_NAME": mixture,
                  "INITIAL_CHECKPOINT_PATH": initial}, seed=seed, log=log,
                 extra=_progress(settings) + tuple(settings.finetune_bindings) + tuple(extra))


def _progress(settings: Settings) -> tuple:
    return () if settings.progress else ("train.progress_bar = False",)


def score_dir(out: pathlib.Path, cond_name: str, seed: Optional[int] = None) -> pathlib.Path:
    base = out / "scores" / cond_name
    return base if seed is None else base / f"seed_{seed}"


# ----------------------------------------------------------------------------- entry points


def run_experiments(settings: Settings, plan: Optional[Plan] = None) -> dict:
    """Every condition × seed, scored; returns the report (also OUT_DIR/report.json)."""
    from t0_jax.bin import experiment_report  # noqa: PLC0415

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    plan = plan or load_plan()
    out = pathlib.Path(settings.out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    seeds = settings.seeds or (plan.quick_seeds if settings.quick else plan.seeds)
    conds = [c for c in conditions(plan) if not settings.only or c.name in settings.only]
    enable_compilation_cache()
    _stage(start, f"world: families, corpus ({plan.corpus_documents} documents), vocabulary")
    world = prepare_world(out, plan, settings.vocab_size, conds)
    from t0_jax.data import score_rows  # noqa: PLC0415 - TensorFlow lives behind this import

    with score_rows.rows_reused():  # every model is scored on the same held-out rows
        t5_lm, runs = _train_and_score(out, world, settings, conds, seeds, start)
    _stage(start, "report")
    meta = {"command": command_line(settings),
            "settings": dataclasses.asdict(settings), "plan": dataclasses.asdict(plan),
            "seeds": list(seeds), "t5_lm_checkpoint": str(t5_lm), "runs": runs,
            "mixtures": {c.name: sorted(world.mixtures[c.mixture]) for c in conds},
            "wall_seconds": round(time.perf_counter() - start, 1),
            "process_cpu_seconds": round(time.process_time(), 1)}
    report = experiment_report.write_report(out, [dataclasses.asdict(c) for c in conds],
                                            list(seeds), meta)
    print(experiment_report.summary_text(report), flush=True)
    print(f"\nreport: {out / 'report.md'}\nnumbers: {out / 'report.json'}", flush=True)
    return report


def _train_and_score(out: pathlib.Path, world: World, settings: Settings,
                     conds: Sequence[Condition], seeds: Sequence[int], start: float):
    """T5+LM, then every condition x seed from it, each model scored: (T5+LM, runs)."""
    _stage(start, "T5+LM: prefix-LM pretraining on the corpus")
    t5_lm = pretrain(out, world, settings)
    score(t5_lm, score_dir(out, BASELINE), world, settings.max_eval_examples)
    runs = []
    for cond in conds:
        for seed in seeds:
            _stage(start, f"{cond.name} ({cond.mixture}, {len(world.mixtures[cond.mixture])} "
                          f"tasks), seed {seed}")
            step_dir = finetune(out, world, settings, cond.name, cond.mixture, seed, t5_lm)
            score(step_dir, score_dir(out, cond.name, seed), world, settings.max_eval_examples)
            runs.append({"condition": cond.name, "seed": seed, "checkpoint": str(step_dir)})
    return t5_lm, runs


def command_line(settings: Settings) -> str:
    """The t0-experiments command that `settings` stands for (recorded in the report)."""
    words = ["t0-experiments", f"--out_dir={settings.out_dir}"] + (
        ["--quick"] if settings.quick else [])
    defaults = quick_settings() if settings.quick else full_settings()
    for field in ("pretrain_steps", "finetune_steps", "max_eval_examples", "seeds", "only"):
        value = getattr(settings, field)
        if value != getattr(defaults, field):
            words.append(f"--{field}=" + (",".join(map(str, value))
                                          if isinstance(value, tuple) else str(value)))
    return " ".join(words)


def _stage(start: float, title: str) -> None:
    """`[wall s | process CPU s] title`: on a shared machine the CPU time is the steadier one."""
    print(f"[{time.perf_counter() - start:6.0f}s | cpu {time.process_time():6.0f}s] {title}",
          flush=True)


def parse_args(argv: Sequence[str]) -> Settings:
    p = argparse.ArgumentParser(prog="t0-experiments", description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="paper_out")
    p.add_argument("--quick", action="store_true",
                   help="2 seeds, fewer steps and examples (the CI test; <= 4 min on 2 cores)")
    p.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2")
    p.add_argument("--only", default=None, help="comma-separated condition names")
    p.add_argument("--pretrain_steps", type=int, default=None)
    p.add_argument("--finetune_steps", type=int, default=None)
    p.add_argument("--max_eval_examples", type=int, default=None)
    a = p.parse_args(list(argv))
    given = {k: v for k, v in dict(pretrain_steps=a.pretrain_steps,
                                    finetune_steps=a.finetune_steps,
                                    max_eval_examples=a.max_eval_examples).items()
             if v is not None}
    common = dict(out_dir=a.out_dir,
                  seeds=tuple(int(s) for s in a.seeds.split(",")) if a.seeds else None,
                  only=tuple(a.only.split(",")) if a.only else None, **given)
    return quick_settings(**common) if a.quick else full_settings(**common)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run("t0-experiments", _main, argv)


def _main(argv: list) -> int:
    logging.getLogger("t0_jax").setLevel(logging.WARNING)
    run_experiments(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
