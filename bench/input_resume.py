"""Input resume: time to the first batch after resuming at step 10 vs step 2,000.

    python -m bench.input_resume [--steps 10,500,2000] [--batch_size 8] [--repeats 2] [--out DIR]

The training input of `t0-train` (t0_jax.bin.train_data.PipelineSource: a packed mixture of
real mirror tasks, rendered on the fly) is advanced to step k and its state saved as the
trainer saves it with a checkpoint. Then a fresh source (as a restarted trainer builds it)
is resumed at k two ways, and the time to its first batch is taken:
  * restored: the saved tf.data iterator state (what t0-train does) — goal: the time at step
    2,000 within 1.5× the time at step 10;
  * replay: re-opened skipping k batches (the fallback for pipelines that cannot be
    checkpointed), for contrast: it grows with k.
Both must yield the same first batch (checked bitwise). A discarded warm-up open comes first
(one-time tracing and worker start-up). The model is not involved: its restore and compile do
not depend on k.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from typing import Sequence

import numpy as np

from bench import prompts, records

MIXTURE = "bench_input_resume_mix"
DATASETS = ("piqa", "social_i_qa", "glue/mrpc")
SPLIT = "validation"
LENGTHS = {"inputs": 256, "targets": 64}
GOAL_RATIO = 1.5


def _register(vocab_path: str) -> None:
    from t0_jax.data import mixtures, registry, sources  # noqa: PLC0415

    sources.set_data_dir(str(prompts.DATA_DIR))
    registry.set_vocab_path(vocab_path)
    mixtures.register_dataset_mixture(MIXTURE, DATASETS)


def _source(batch_size: int):
    from t0_jax.bin.train_data import PipelineSource  # noqa: PLC0415

    return PipelineSource(MIXTURE, SPLIT, LENGTHS, batch_size, pack=True, seed=0)


def _first_batch(batch_size: int, step: int, state_dir: str | None) -> tuple[float, dict, bool]:
    """(seconds to the first batch at `step`, that batch, whether the saved state was used)."""
    source = _source(batch_size)
    with records.Stopwatch() as watch:
        if state_dir is not None:
            assert source.restore_state(state_dir, step)
        batch = next(source.open(step, 0, 1))
    return watch.seconds, batch, source.opened_from_state


def measure_step(batch_size: int, step: int, repeats: int, workdir: str) -> dict:
    source = _source(batch_size)
    it = source.open(0, 0, 1)
    with records.Stopwatch() as advance:
        for _ in range(step):
            next(it)
    state_dir = f"{workdir}/state_{step}"
    os.makedirs(state_dir, exist_ok=True)
    saved = source.save_state(state_dir, step)
    if not saved:
        raise RuntimeError("the pipeline could not save its state (see the log)")
    restored, replayed = [], []
    for _ in range(repeats):
        seconds, a, used = _first_batch(batch_size, step, state_dir)
        assert used, "the saved state was not used"
        restored.append(seconds)
        seconds, b, _ = _first_batch(batch_size, step, None)
        replayed.append(seconds)
        identical = all(np.array_equal(a[k], b[k]) for k in a)
    records.log(f"step {step}: restored {min(restored):.2f}s, replay {min(replayed):.2f}s")
    return {"step": step, "advance_s": advance.seconds,
            "restored_first_batch_s": statistics.median(restored),
            "replay_first_batch_s": statistics.median(replayed),
            "restored_runs_s": restored, "replay_runs_s": replayed,
            "same_first_batch": bool(identical)}


def measure(steps: Sequence[int], batch_size: int, repeats: int) -> dict:
    vocab_path, _ = prompts.build_vocab()
    _register(vocab_path)
    warmup, _, _ = _first_batch(batch_size, 0, None)  # one-time costs (tracing, workers)
    records.log(f"warm-up first batch {warmup:.2f}s")
    with tempfile.TemporaryDirectory() as workdir:
        rows = [measure_step(batch_size, s, repeats, workdir) for s in steps]
    lo, hi = rows[0], rows[-1]
    ratio = hi["restored_first_batch_s"] / lo["restored_first_batch_s"]
    return {"mixture": list(DATASETS), "split": SPLIT, "lengths": LENGTHS,
            "batch_size": batch_size, "repeats": repeats, "rows": rows, "warmup_s": warmup,
            "restored_ratio": ratio,
            "replay_ratio": hi["replay_first_batch_s"] / lo["replay_first_batch_s"],
            # a mixture's restore also rebuilds every task iterator started so far, which should
            # level off once all have started; last / middle step shows whether it has
            "plateau_ratio": (hi["restored_first_batch_s"] / rows[-2]["restored_first_batch_s"]
                              if len(rows) > 2 else None),
            "goal_ratio": GOAL_RATIO,
            "passed": {"ratio": ratio <= GOAL_RATIO,
                       "same_batches": all(r["same_first_batch"] for r in rows)}}


def section(record: dict) -> list[str]:
    """Markdown for docs/benchmarks.md."""
    lines = ["### Input resume: time to the first batch", "",
             f"Packed mixture of {', '.join(record['mixture'])} ({record['split']}, "
             f"lengths {record['lengths']}, batch {record['batch_size']}), rendered on the fly; "
             "a fresh `PipelineSource` resumed at step k (median of "
             f"{record['repeats']}). Restored = the tf.data iterator state t0-train saves with "
             "each checkpoint; replay = the fallback that rebuilds the k batches.", "",
             "| step k | restored (s) | replay (s) | same first batch |",
             "|---:|---:|---:|:---:|"]
    for r in record["rows"]:
        lines.append(f"| {r['step']:,} | {r['restored_first_batch_s']:.2f} | "
                     f"{r['replay_first_batch_s']:.2f} | "
                     f"{'yes' if r['same_first_batch'] else 'NO'} |")
    ok = "met" if record["passed"]["ratio"] else "NOT met"
    lines += ["", f"Restored: step {record['rows'][-1]['step']:,} / step "
              f"{record['rows'][0]['step']:,} = {record['restored_ratio']:.2f}× (goal ≤ "
              f"{record['goal_ratio']}×: {ok}); replay: {record['replay_ratio']:.1f}×."]
    if record.get("plateau_ratio") is not None:
        lines.append(f"Restored, last / middle step: {record['plateau_ratio']:.2f}× (a mixture "
                     "restores every task iterator started so far, which should level off once all have "
                     "started; replay keeps growing with k).")
    lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="10,500,2000")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(records.OUT_DIR))
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    r = measure(steps, args.batch_size, args.repeats)
    for row in r["rows"]:
        print(f"step {row['step']:>6}: first batch restored {row['restored_first_batch_s']:.2f}s"
              f", replay {row['replay_first_batch_s']:.2f}s (same batch: "
              f"{row['same_first_batch']})")
    print(f"restored ratio {r['restored_ratio']:.2f}x (goal <= {GOAL_RATIO}), replay ratio "
          f"{r['replay_ratio']:.1f}x")
    print(f"wrote {records.write_json('input_resume', r, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
