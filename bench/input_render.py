"""On-the-fly input: rendering throughput with 1..N worker processes, and memory vs data size.

    python -m bench.input_render --out bench_out            # full: 1, 2 and N = cores workers
    python -m bench.input_render --out bench_out --quick    # small counts, 1x/10x only

Throughput, every template of the real mirror's ag_news (test), glue/mrpc (train), piqa and
social_i_qa (validation), each task shuffled with its own seed and sampled uniformly:
  render   the registry sources (`PromptedSource.get_dataset`: read, render, into tf.data);
           examples/s after a warm-up (worker start-up is reported apart).
  packed   the same tasks through seqio (tokenize with the bench SentencePiece model, the T0
           preprocessors) and `EncDecFeatureConverter(pack=True)` at 1024/256, batch 32:
           packed rows/s and examples/s. seqio's in-memory cache is off, so every example is
           rendered (the mirror's splits are under its 10,000-example threshold).
"1 worker" renders in the tf.data thread (`set_render_workers(1)`: in-process), as before
worker processes existed; goal (issue 10): >= 1.6x from 1 to 2 workers on a 2-core machine.

Memory, piqa/validation rows repeated 1x, 10x, 100x into a temporary mirror; each case in its
own interpreter (peak RSS = VmHWM):
  reader   growth of RSS while opening the split and reading `--rss-examples` rows spread over
           it (line index built or loaded, one `pread` + `json.loads` each).
  list     growth while parsing the whole file into a list of dicts (what `load_examples` did
           before streaming), for contrast.
  pipeline peak RSS of the rendering pipeline (TensorFlow, seqio and the registry loaded) and of
           its largest worker, streaming the same number of shuffled examples.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

from bench import prompts, records

DATASETS = (("ag_news", None, "test"), ("glue", "mrpc", "train"), ("piqa", None, "validation"),
            ("social_i_qa", None, "validation"))
LENGTHS = {"inputs": 1024, "targets": 256}
BATCH = 32
SEED = 0
GOAL_SCALING = 1.6
RSS_DATASET = ("piqa", None, "validation")
RSS_TASK = "piqa_what_is_the_correct_ending"


def _tasks() -> list[tuple[str, str]]:
    from t0_jax.data import registry  # noqa: PLC0415 - imports TensorFlow

    return [(info.name, split) for name, subset, split in DATASETS
            for info in registry.dataset_tasks(name, subset)]


def _rendered(tasks, workers: int):
    import seqio  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from t0_jax.data import render_pool  # noqa: PLC0415

    render_pool.set_render_workers(workers)
    streams = []
    for name, split in tasks:
        ds = seqio.get_mixture_or_task(name).source.get_dataset(split, shuffle=True, seed=SEED)
        streams.append(ds.map(lambda ex: {k: ex[k] for k in ("inputs", "targets", "idx")})
                       .repeat())
    return tf.data.Dataset.sample_from_datasets(streams, seed=SEED).batch(256)


def _packed(tasks, workers: int):
    import seqio  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from t0_jax.data import render_pool  # noqa: PLC0415

    render_pool.set_render_workers(workers)
    streams = []
    for name, split in tasks:
        ds = seqio.get_mixture_or_task(name).get_dataset(
            LENGTHS, split=split, shuffle=True, seed=SEED, num_epochs=None,
            try_in_mem_cache=False)
        streams.append(ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]}))
    mixed = tf.data.Dataset.sample_from_datasets(streams, seed=SEED)
    packed = seqio.EncDecFeatureConverter(pack=True)(mixed, LENGTHS)
    return packed.batch(BATCH, drop_remainder=True).prefetch(2)


class _RenderCounter:
    """Counts examples as they are rendered (in-process `render_chunk`, or a worker's reply),
    so throughput is measured where it is produced, not read out of buffers."""

    def __init__(self):
        from t0_jax.data import render_pool  # noqa: PLC0415

        self.module, self.examples = render_pool, 0
        self.originals = (render_pool.render_chunk, render_pool._Pool.call)
        self.lock = threading.Lock()

    def _count(self, indices) -> None:
        with self.lock:
            self.examples += len(indices)

    def __enter__(self):
        render_chunk, pool_call = self.originals

        def counted_render(job, indices):
            out = render_chunk(job, indices)
            self._count(indices)
            return out

        def counted_call(pool, request):
            out = pool_call(pool, request)
            self._count(request[1])
            return out

        self.module.render_chunk, self.module._Pool.call = counted_render, counted_call
        return self

    def __exit__(self, *exc):
        self.module.render_chunk, self.module._Pool.call = self.originals
        return False


def _cpu_s() -> tuple[float, float]:
    """(CPU seconds of this process, of the render workers alive now): where the work goes."""
    from t0_jax.data import render_pool  # noqa: PLC0415

    own = os.times()
    workers = 0.0
    for pid in render_pool.worker_pids():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            workers += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return own.user + own.system, workers


def _time(dataset, count_of, warmup: int, measured: int) -> dict:
    """Start-up (first `warmup` batches: worker start, seqio's shuffle buffers), then rendered
    examples/s (produced), consumed examples and rows/s over the next `measured` batches, and
    the CPU time per rendered example of this process (tf.data, seqio) and of the workers."""
    with _RenderCounter() as rendered:
        with records.Stopwatch() as startup:
            iterator = dataset.as_numpy_iterator()
            for _ in range(warmup):
                next(iterator)
        counts = {"batches": 0, "examples": 0, "rows": 0}
        start, rendered_before, cpu_before = time.perf_counter(), rendered.examples, _cpu_s()
        for _ in range(measured):
            for key, value in count_of(next(iterator)).items():
                counts[key] += value
            counts["batches"] += 1
        seconds = time.perf_counter() - start
        produced, cpu_after = rendered.examples - rendered_before, _cpu_s()
    per_example = [1e6 * (b - a) / max(produced, 1) for a, b in zip(cpu_before, cpu_after)]
    return counts | {"startup_s": startup.seconds, "seconds": seconds, "rendered": produced,
                     "rendered_per_s": produced / seconds,
                     "examples_per_s": counts["examples"] / seconds,
                     "rows_per_s": counts["rows"] / seconds,
                     "main_cpu_us_per_example": per_example[0],
                     "worker_cpu_us_per_example": per_example[1]}


def throughput(workers: int, render_batches: int, packed_batches: int) -> dict:
    from bench.pipeline import packed_examples  # noqa: PLC0415
    from t0_jax.data import render_pool  # noqa: PLC0415

    tasks = _tasks()
    records.log(f"{workers} worker(s): rendering {len(tasks)} tasks")
    render = _time(_rendered(tasks, workers), lambda b: {"examples": len(b["idx"])},
                   warmup=1, measured=render_batches)
    records.log(f"{workers} worker(s): packing")
    packed = _time(_packed(tasks, workers),
                   lambda b: {"examples": packed_examples(b),
                              "rows": len(b["encoder_input_tokens"])},
                   warmup=1, measured=packed_batches)
    render_pool.shutdown_render_workers()
    return {"workers": workers, "tasks": len(tasks), "render": render, "packed": packed}


# ----------------------------------------------------------------------------- memory


def _status_kib(field: str, pid="self") -> int:
    """A /proc/<pid>/status memory field: VmRSS now, VmHWM the peak since exec (ru_maxrss
    would carry the peak of the forking parent over exec)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _rss_kib() -> int:
    return _status_kib("VmRSS")


def _child(mode: str, data_dir: str, examples: int) -> dict:
    """One memory case, in this (fresh) interpreter; see the module docstring."""
    name, subset, split = RSS_DATASET
    if mode == "list":
        from t0_jax.data import sources  # noqa: PLC0415

        before = _rss_kib()
        with open(sources.mirror_path(data_dir, name, subset, split), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return {"rows": len(rows), "growth_mib": (_rss_kib() - before) / 1024}
    if mode == "reader":
        from t0_jax.data import sources  # noqa: PLC0415

        before = _rss_kib()
        reader = sources.open_split(name, subset, split, data_dir=data_dir)
        stride = max(1, len(reader) // examples)
        read = sum(1 for _ in reader.read(range(0, len(reader), stride)))
        return {"rows": len(reader), "read": read, "growth_mib": (_rss_kib() - before) / 1024}
    import seqio  # noqa: PLC0415

    from t0_jax.data import registry, render_pool, sources  # noqa: PLC0415, F401 - registers

    sources.set_data_dir(data_dir)
    before = _rss_kib()
    source = seqio.get_mixture_or_task(RSS_TASK).source
    iterator = source.get_dataset(split, shuffle=True, seed=SEED).as_numpy_iterator()
    read = sum(1 for _, _ in zip(range(examples), iterator))
    workers = [_status_kib("VmHWM", pid) for pid in render_pool.worker_pids()]
    return {"read": read, "after_imports_mib": before / 1024,
            "peak_mib": _status_kib("VmHWM") / 1024,
            "worker_peak_mib": max(workers, default=0) / 1024}


def _write_scaled_mirror(root: str, scale: int) -> tuple[int, float]:
    """piqa/validation repeated `scale` times under `root`; (rows, MiB)."""
    from t0_jax.data import sources  # noqa: PLC0415

    name, subset, split = RSS_DATASET
    with open(sources.mirror_path(prompts.DATA_DIR, name, subset, split), "rb") as f:
        lines = [line if line.endswith(b"\n") else line + b"\n" for line in f if line.strip()]
    path = sources.mirror_path(root, name, subset, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(scale):
            out.writelines(lines)
    return len(lines) * scale, path.stat().st_size / 2**20


def memory(scales: Sequence[int], examples: int, workers: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, T0_INDEX_CACHE_DIR=os.path.join(tmp, "index"),
                   T0_RENDER_WORKERS=str(workers), TF_CPP_MIN_LOG_LEVEL="3")
        for scale in scales:
            root = os.path.join(tmp, f"x{scale}")
            rows, mib = _write_scaled_mirror(root, scale)
            case = {"scale": scale, "rows": rows, "file_mib": mib}
            for mode in ("reader", "list", "pipeline"):
                records.log(f"memory {scale}x ({rows:,} rows): {mode}")
                done = subprocess.run(
                    [sys.executable, "-m", "bench.input_render", "--child", mode, root,
                     str(examples)], env=env, capture_output=True, text=True, check=True)
                case[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            out.append(case)
    return out


# ----------------------------------------------------------------------------- report


def _cpu_cell(part: dict) -> str:
    return (f"{part.get('main_cpu_us_per_example', float('nan')):.0f} / "
            f"{part.get('worker_cpu_us_per_example', float('nan')):.0f}")


def section(record: dict) -> list[str]:
    """Markdown for docs/benchmarks.md: throughput by worker count, then memory by data size."""
    runs = record["throughput"]
    lines = ["## On-the-fly input: rendering in worker processes", "",
             f"Every template of {', '.join(f'`{d}`' for d in record['datasets'])} "
             f"({runs[0]['tasks']} tasks), shuffled per task, sampled uniformly. *render*: the "
             "registry sources (read + render into tf.data); *packed*: through seqio "
             f"(tokenize) and the packing feature converter at {LENGTHS['inputs']}/"
             f"{LENGTHS['targets']}, batch {BATCH}. 1 worker = rendering in the tf.data thread.",
             "", "CPU µs per rendered example, main process / workers, says where the work "
             "goes (with workers, the main process keeps tf.data and seqio's per-example work).",
             "", "| workers | render examples/s | × vs 1 | CPU µs main / workers | packed rows/s "
             "| packed examples/s | × vs 1 | CPU µs main / workers | start-up s |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = runs[0]
    for run in runs:
        r, p = run["render"], run["packed"]
        lines.append(f"| {run['workers']} | {r['rendered_per_s']:,.0f} | "
                     f"{r['rendered_per_s'] / base['render']['rendered_per_s']:.2f} | "
                     f"{_cpu_cell(r)} | {p['rows_per_s']:,.1f} | {p['examples_per_s']:,.0f} | "
                     f"{p['examples_per_s'] / base['packed']['examples_per_s']:.2f} | "
                     f"{_cpu_cell(p)} | {r['startup_s']:.1f} |")
    scaling = record.get("scaling_1_to_2")
    if scaling is not None:
        verdict = "**pass**" if scaling["render"] >= GOAL_SCALING else "**FAIL**"
        lines += ["", f"1 → 2 workers: render {scaling['render']:.2f}×, packed "
                  f"{scaling['packed']:.2f}× (goal ≥ {GOAL_SCALING}× on 2 cores: {verdict})."]
    lines += ["", "Memory vs data size (piqa/validation repeated; MiB; growth = RSS after − "
              "before opening and reading):", "",
              "| rows | file | reader growth | list-of-dicts growth | pipeline peak (after "
              "imports) | largest worker peak |", "|---|---|---|---|---|---|"]
    for case in record["memory"]:
        lines.append(f"| {case['rows']:,} | {case['file_mib']:.1f} | "
                     f"{case['reader']['growth_mib']:.1f} | {case['list']['growth_mib']:.1f} | "
                     f"{case['pipeline']['peak_mib']:.0f} "
                     f"({case['pipeline']['after_imports_mib']:.0f}) | "
                     f"{case['pipeline']['worker_peak_mib']:.0f} |")
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(records.OUT_DIR))
    parser.add_argument("--quick", action="store_true", help="few batches; memory at 1x, 10x")
    parser.add_argument("--workers", default=None, help="comma list (default 1,2,cores)")
    parser.add_argument("--rss-examples", type=int, default=2000)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DATA_DIR", "EXAMPLES"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], int(args.child[2]))))
        return 0
    cores = os.cpu_count() or 1
    counts = (sorted({1, 2, cores}) if args.workers is None
              else [int(w) for w in args.workers.split(",")])
    # Long runs: each task's pipeline buffers a few chunks ahead (31 tasks x ~2-3 x 128 rows),
    # which a short window would read at memory speed.
    render_batches, packed_batches = (48, 12) if args.quick else (400, 60)
    vocab_path, _ = prompts.build_vocab()
    from t0_jax.data import registry, sources  # noqa: PLC0415

    registry.set_vocab_path(vocab_path)
    sources.set_data_dir(str(prompts.DATA_DIR))
    runs = [throughput(w, render_batches, packed_batches) for w in counts]
    by_workers = {run["workers"]: run for run in runs}
    result = {"datasets": ["/".join(p for p in d[:2] if p) + f":{d[2]}" for d in DATASETS],
              "lengths": LENGTHS, "batch": BATCH, "throughput": runs,
              "memory": memory((1, 10) if args.quick else (1, 10, 100), args.rss_examples,
                               min(cores, 2))}
    if 1 in by_workers and 2 in by_workers:
        result["scaling_1_to_2"] = {
            "render": by_workers[2]["render"]["rendered_per_s"]
            / by_workers[1]["render"]["rendered_per_s"],
            "packed": by_workers[2]["packed"]["examples_per_s"]
            / by_workers[1]["packed"]["examples_per_s"]}
    for run in runs:
        print(f"{run['workers']} worker(s): render {run['render']['rendered_per_s']:,.0f} "
              f"examples/s; packed {run['packed']['rows_per_s']:,.1f} rows/s "
              f"({run['packed']['examples_per_s']:,.0f} examples/s)")
    for case in result["memory"]:
        print(f"{case['rows']:>9,} rows ({case['file_mib']:.0f} MiB): reader +"
              f"{case['reader']['growth_mib']:.1f} MiB, list of dicts +"
              f"{case['list']['growth_mib']:.1f} MiB, pipeline peak "
              f"{case['pipeline']['peak_mib']:.0f} MiB")
    print(f"wrote {records.write_json('input_render', result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
