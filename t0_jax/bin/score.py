"""`t0-score`: rank classification (and greedy generation) of a checkpoint on tasks or mixtures.

    t0-score --gin_file=gin/runs/score.gin \\
        --gin.CHECKPOINT_PATH=/ckpt --gin.MIXTURE_OR_TASK_NAME=t0_eval_score_eval \\
        --gin.OUTPUT_DIR=/out [--gin.DATA_DIR=/data] [--gin.SPLIT='validation'] \\
        [--gin.VOCAB_PATH=/spiece.model] [--gin_bindings='score_run.max_examples = 50']

CHECKPOINT_PATH: our Orbax checkpoint or trainer step directory, a Hugging Face T5 directory, a
T5X checkpoint — or a folder of step checkpoints, which selects the best step.
MIXTURE_OR_TASK_NAME: one name, a gin list ['a', 'b'], a comma-separated string, or a glob such
as 'super_glue_rte_*_score_eval'; all are scored in one process (one compile per shape).
Values given with `--gin.NAME=` that are not gin literals are taken as strings, so paths need
no quotes.
SCORING_CONVENTION: 't_zero' (default: inputs without EOS, choices with EOS, as T0 was scored) or
'lm_eval_harness' (lm-evaluation-harness's seq2seq tokens); results.json records which ran.
PUBLISHED_MODEL: whose published figures sit beside yours for T0's held-out datasets ('auto':
the model the checkpoint folder is named for, else all; 'T0_3B', 'T0', a list, or 'none').
Writes OUTPUT_DIR/{scores.jsonl, results.json, results.csv, accuracy_boxplot.png, config.gin};
re-running with the same OUTPUT_DIR skips tasks that already finished (t0_jax.scoring.report).
Also runs as `python -m t0_jax.bin.score`; `main(argv)` is callable in-process.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence, Union

import gin

from t0_jax import storage
from t0_jax.bin import cli, gin_flags, score_data
from t0_jax.scoring import conventions, published, runner
from t0_jax.scoring.batching import BatchingOptions

USAGE = __doc__.split("\n\n")[1]


UsageError = gin_flags.UsageError


@gin.configurable
def score_run(checkpoint_path: str = gin.REQUIRED,
              mixture_or_task_name: Union[str, Sequence[str]] = gin.REQUIRED,
              output_dir: str = gin.REQUIRED, split: str = "validation",
              data_dir: Optional[str] = None, vocab_path: Optional[str] = None,
              activation_dtype: Optional[str] = None, param_dtype: Optional[str] = None,
              num_partitions: int = 1, length_normalized: bool = False,
              max_examples: Optional[int] = None, examples_per_batch: Optional[int] = None,
              max_rows_per_batch: Optional[int] = None, encoder_token_budget: int = 16384,
              max_input_length: Optional[int] = 1024, max_target_length: Optional[int] = 256,
              select_checkpoints: bool = True, selection_metric: str = "median_of_medians",
              compilation_cache_dir: Optional[str] = str(runner.DEFAULT_CACHE_DIR),
              progress: bool = True, use_cached_tasks: bool = False,
              cache_dirs: Sequence[str] = (), convention: str = conventions.T_ZERO,
              published_model: Union[str, Sequence[str], None] = published.AUTO
              ) -> runner.ScoreRun:
    """The gin-bound arguments of a run, as a plain `ScoreRun` (library code sees no gin)."""
    required = {"CHECKPOINT_PATH": checkpoint_path, "MIXTURE_OR_TASK_NAME": mixture_or_task_name,
                "OUTPUT_DIR": output_dir}
    missing = [name for name, value in required.items() if value is gin.REQUIRED]
    if missing:  # a macro bound to %gin.REQUIRED reaches us as the sentinel itself
        raise UsageError(f"required setting(s) {', '.join(missing)} not given; add "
                         + " ".join(f"--gin.{m}=..." for m in missing)
                         + " (see gin/runs/score.gin).")
    batching = BatchingOptions(max_examples=examples_per_batch, max_rows=max_rows_per_batch,
                               encoder_token_budget=encoder_token_budget,
                               max_input_length=max_input_length,
                               max_target_length=max_target_length)
    names = (str(mixture_or_task_name) if isinstance(mixture_or_task_name, str)
             else tuple(map(str, mixture_or_task_name)))
    try:  # both checked before any scoring work, not after it
        conventions.check(str(convention))
        if published_model is not None and not isinstance(published_model, str):
            published_model = tuple(map(str, published_model))
        published.choose_models(published.load(), published_model, str(checkpoint_path))
    except ValueError as error:
        raise UsageError(str(error)) from error
    return runner.ScoreRun(
        checkpoint_path=str(checkpoint_path), mixture_or_task_name=names,
        output_dir=str(output_dir), split=split, data_dir=data_dir, vocab_path=vocab_path,
        activation_dtype=activation_dtype, param_dtype=param_dtype,
        num_partitions=num_partitions, length_normalized=length_normalized,
        max_examples=max_examples, batching=batching, select_checkpoints=select_checkpoints,
        selection_metric=selection_metric,
        compilation_cache_dir=compilation_cache_dir, progress=progress,
        use_cached_tasks=bool(use_cached_tasks), cache_dirs=tuple(map(str, cache_dirs or ())),
        convention=str(convention), published_model=published_model)


def parse_config(argv: Sequence[str]) -> runner.ScoreRun:
    gin_flags.parse_gin(gin_flags.parse_flags(argv, USAGE, "gin/runs/score.gin"))
    return score_run()


def run_from_flags(argv: Sequence[str]) -> dict:
    """Parse flags and gin, run, save the operative config; returns the results dict."""
    gin.clear_config()
    cfg = parse_config(argv)
    if _is_main_process():
        cli.check_writable_dir(cfg.output_dir, "OUTPUT_DIR")  # before any scoring work
    results = runner.run(cfg, score_data.ScoreData(cfg))
    if _is_main_process():
        storage.write_text(storage.join(cfg.output_dir, "config.gin"), gin.operative_config_str())
    return results


def _is_main_process() -> bool:
    import jax  # noqa: PLC0415

    return jax.process_index() == 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run("t0-score", _main, argv, doc=__doc__)


def _main(argv: list) -> int:
    results = run_from_flags(argv)
    overall = results.get("overall") or {}
    if "best_step" in results:
        print(f"best step {results['best_step']}: {results['metric']} = {results['best_value']}")
    elif overall:
        print(f"{overall['num_tasks']} tasks, {overall['num_datasets']} datasets: "
              f"median of medians {overall['median_of_medians']}, "
              f"mean accuracy {overall['mean_accuracy']} ({results['convention']['name']} "
              "convention)")
        if results.get("published"):
            print(published.format_table(results["published"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
