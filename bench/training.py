"""Train-step throughput: ours vs a PyTorch `transformers` T5 step, and MFU on a GPU.

    python -m bench.training                          # CPU: ours vs HF + Adafactor, same batches
    python -m bench.training --device gpu [--presets small,base,large,xl] [--batch-size N]
    python -m bench.training --device cpu --mfu --presets tiny --lengths 64,16   # the GPU path

CPU: a reduced T5 v1.1 (the small preset with --layers layers per stack, 32,128 vocabulary) at
256/64 tokens, batch 8, fp32, unpacked batches (HF T5 cannot pack). Both sides start from the
same random weights (HF → `t0_jax.convert.hf`) and take the same batches. Ours is the trainer's
step (`t0_jax.train.steps.jit_train_step` on a `state_layout` over a 1×1 mesh, T5X Adafactor);
the peer is `T5ForConditionalGeneration` + `transformers.optimization.Adafactor(lr=1e-3,
scale_parameter=True, relative_step=False, warmup_init=False, clip_threshold=1.0,
decay_rate=-0.8)`. Both minimise mean token cross-entropy (ours: summed loss / real target
tokens, z-loss 0 so the losses are comparable), so their first-step losses must match.
Besides wall time, each side's process CPU time per step is recorded: on a shared machine it
tracks the work done, where wall time tracks the neighbours (torch's OpenMP threads also spin
while they wait, which CPU time counts: on a loaded machine that inflates the peer's CPU time).
`--single-core` pins the process to one core before JAX and torch start (XLA sizes its thread
pool from the affinity; torch gets 1 thread): no thread waits for another, so CPU time is each
side's single-threaded work, whatever the neighbours do.

Step memory (CPU, compiled ahead of time, never run): XLA's memory analysis of the real train
step for the small preset at 1024/256 packed, bf16 activations, batch `--memory-batch`. The
"before" figure is what the same function gave with the per-row relative-position bias
(commit 4f699d1, jax 0.10.2), kept as a constant because that code is gone.

GPU: the presets at 1024/256 with packed synthetic batches (bf16 activations, fp32 parameters),
tokens/s and MFU with the trainer's FLOP count (`t0_jax.train.metrics.flops_per_sequence`,
REFERENCE.md §7); the batch is fixed per preset and halved once on out-of-memory (the row says
which ran; a preset that fits neither is recorded as such and the others still run). `--mfu`
runs this path on the CPU at toy sizes (`python -m bench.gpu --device cpu --quick`).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

from bench import records

CPU_LENGTHS = (256, 64)
GPU_LENGTHS = (1024, 256)
# Temporaries of the compiled small step (1024/256 packed, bf16, batch 8) with the old per-row
# [b, h, q, k] relative-position bias, measured by `step_memory` at commit 4f699d1 (jax 0.10.2).
BEFORE_BIAS_CHANGE = {"batch": 8, "temp_bytes": 10_926_851_536, "commit": "4f699d1"}
GPU_BATCH = {"tiny": 64, "small": 128, "base": 64, "large": 32, "xl": 16}
HF_ADAFACTOR = dict(lr=1e-3, scale_parameter=True, relative_step=False, warmup_init=False,
                    clip_threshold=1.0, decay_rate=-0.8)


# ----------------------------------------------------------------------------- batches


def unpacked_batch(rng: np.random.Generator, batch: int, li: int, lt: int,
                   vocab: int) -> dict[str, np.ndarray]:
    """Random tokens, one example per row, lengths uniform in [li/4, li] and [2, lt]."""
    enc = np.zeros((batch, li), np.int32)  # [b, Li]
    tgt = np.zeros((batch, lt), np.int32)  # [b, Lt]
    for r in range(batch):
        n_in, n_t = rng.integers(li // 4, li + 1), rng.integers(2, lt + 1)
        enc[r, :n_in] = rng.integers(3, vocab, n_in)
        tgt[r, :n_t - 1] = rng.integers(3, vocab, n_t - 1)
        tgt[r, n_t - 1] = 1  # EOS
    dec_in = np.zeros_like(tgt)
    dec_in[:, 1:] = tgt[:, :-1]
    return {"encoder_input_tokens": enc, "decoder_target_tokens": tgt,
            "decoder_input_tokens": dec_in, "decoder_loss_weights": (tgt > 0).astype(np.int32)}


def packed_batch(rng: np.random.Generator, batch: int, li: int, lt: int,
                 vocab: int) -> dict[str, np.ndarray]:
    """Packed features (seqio EncDecFeatureConverter layout) with ~full rows of random tokens:
    each row holds k examples, encoder segments share li, decoder segments share lt."""
    feats = {k: np.zeros((batch, n), np.int32) for k, n in (
        ("encoder_input_tokens", li), ("encoder_segment_ids", li), ("encoder_positions", li),
        ("decoder_target_tokens", lt), ("decoder_input_tokens", lt),
        ("decoder_segment_ids", lt), ("decoder_positions", lt), ("decoder_loss_weights", lt))}
    for r in range(batch):
        k = int(rng.integers(3, 9))
        for side, length in (("encoder", li), ("decoder", lt)):
            cuts = np.sort(rng.choice(np.arange(2, length - 1), k - 1, replace=False))
            bounds = np.concatenate([[0], cuts, [length]])
            for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
                feats[f"{side}_segment_ids"][r, a:b] = s
                feats[f"{side}_positions"][r, a:b] = np.arange(b - a)
                if side == "encoder":
                    feats["encoder_input_tokens"][r, a:b] = rng.integers(3, vocab, b - a)
                else:
                    tokens = np.append(rng.integers(3, vocab, b - a - 1), 1)  # ... EOS
                    feats["decoder_target_tokens"][r, a:b] = tokens
                    feats["decoder_input_tokens"][r, a + 1:b] = tokens[:-1]
                    feats["decoder_loss_weights"][r, a:b] = 1
    return feats


def _hf_inputs(batch: dict[str, np.ndarray], device: str = "cpu") -> dict:
    import torch  # noqa: PLC0415

    enc = torch.from_numpy(batch["encoder_input_tokens"].astype(np.int64)).to(device)
    labels = torch.from_numpy(batch["decoder_target_tokens"].astype(np.int64)).to(device)
    return {"input_ids": enc, "attention_mask": (enc != 0).long(),
            "labels": labels.masked_fill(labels == 0, -100)}  # -100: ignored by HF's loss


# ----------------------------------------------------------------------------- our step


def our_trainer(model, params=None, *, learning_rate: float = 1e-3, z_loss: float = 0.0,
                normalizer="NUM_REAL_TARGET_TOKENS"):
    """(state, jitted step, layout): the trainer's own pieces on a 1×1 (data × model) mesh."""
    import jax  # noqa: PLC0415

    from t0_jax.model.axes import DEFAULT_RULES  # noqa: PLC0415
    from t0_jax.parallel import mesh as mesh_lib  # noqa: PLC0415
    from t0_jax.train import state as state_lib, steps  # noqa: PLC0415

    mesh = mesh_lib.make_mesh(1, devices=jax.devices()[:1])  # one device: no fake-device split
    optimizer = state_lib.make_optimizer(model.params_axes(), learning_rate)
    layout = state_lib.state_layout(model, optimizer, mesh, DEFAULT_RULES)
    if params is None:
        state = state_lib.init_state(model, optimizer, layout, seed=0)
    else:
        state = state_lib.state_from_params(params, optimizer, layout)
    step = steps.jit_train_step(layout, model=model, optimizer=optimizer, dropout_seed=0,
                                z_loss=z_loss, loss_normalizing_factor=normalizer,
                                num_microbatches=1)
    return state, step, layout


def time_ours(state, step, layout, batches: Sequence[dict], warmup: int = 1):
    """(compile+first steps s, [seconds per timed step], [loss per step], state); blocks every
    step on the metrics, as the trainer's loop does."""
    return time_ours_with_cpu(state, step, layout, batches, warmup)[:4]


def time_ours_with_cpu(state, step, layout, batches: Sequence[dict], warmup: int = 1):
    """`time_ours` and, last, [process CPU seconds per timed step]."""
    import jax  # noqa: PLC0415

    from t0_jax.parallel import host_arrays  # noqa: PLC0415

    device_batches = [host_arrays.host_to_global(b, layout.mesh) for b in batches]
    losses, times, cpu = [], [], []
    with records.Stopwatch() as first:
        for b in device_batches[:warmup]:
            state, metrics = step(state, b)
            losses.append(float(jax.device_get(metrics["loss"])))
    for b in device_batches[warmup:]:
        start, start_cpu = time.perf_counter(), time.process_time()
        state, metrics = step(state, b)
        losses.append(float(jax.device_get(metrics["loss"])))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return first.seconds, times, losses, state, cpu


def time_hf(hf_model, batches: Sequence[dict], warmup: int = 1, device: str = "cpu"):
    """Same protocol for the PyTorch peer: forward, backward, Adafactor step, loss.item().
    Returns ([wall s per timed step], [loss per step], [process CPU s per timed step])."""
    from transformers.optimization import Adafactor  # noqa: PLC0415

    hf_model.train()
    optimizer = Adafactor(hf_model.parameters(), **HF_ADAFACTOR)
    losses, times, cpu = [], [], []
    for i, b in enumerate(batches):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = hf_model(**_hf_inputs(b, device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return times, losses, cpu


def tokens(batch: dict[str, np.ndarray]) -> int:
    return int(np.count_nonzero(batch["encoder_input_tokens"])
               + np.count_nonzero(batch["decoder_target_tokens"]))


def compare_cpu(preset: str = "small", layers: int | None = 4, lengths=CPU_LENGTHS,
                batch: int = 8, steps: int = 5, warmup: int = 1, seed: int = 0) -> dict:
    """Ours vs HF on identical unpacked batches from identical weights (see module doc)."""
    from bench.scoring import random_hf_model  # noqa: PLC0415
    from t0_jax.convert import hf  # noqa: PLC0415
    from t0_jax.model.model import EncoderDecoderModel  # noqa: PLC0415

    overrides = {} if layers is None else dict(num_encoder_layers=layers,
                                               num_decoder_layers=layers)
    hf_model = random_hf_model(preset, seed, **overrides)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
        hf_model.save_pretrained(workdir)
        loaded = hf.hf_to_t0(workdir)
    config = loaded.config.replace(dtype="float32", dropout_rate=0.0)
    model = EncoderDecoderModel(config)
    rng = np.random.default_rng(seed)
    batches = [unpacked_batch(rng, batch, *lengths, min(config.vocab_size, 32000))
               for _ in range(warmup + steps)]
    state, step, layout = our_trainer(model, loaded.params)
    first_s, ours_t, ours_loss, _, ours_cpu = time_ours_with_cpu(state, step, layout, batches,
                                                                 warmup)
    hf_t, hf_loss, hf_cpu = time_hf(hf_model, batches, warmup)
    n_tok = sum(tokens(b) for b in batches[warmup:])
    ours_s, hf_s = float(np.sum(ours_t)), float(np.sum(hf_t))
    ours_c, hf_c = float(np.sum(ours_cpu)), float(np.sum(hf_cpu))
    return {"preset": preset, "layers": config.num_encoder_layers, "lengths": list(lengths),
            "batch": batch, "steps": steps, "num_params": config.num_params(),
            "ours_step_s": ours_s / steps, "hf_step_s": hf_s / steps,
            "ours_tokens_per_s": n_tok / ours_s, "hf_tokens_per_s": n_tok / hf_s,
            "speedup": hf_s / ours_s, "ours_compile_s": first_s - ours_s / steps,
            "ours_cpu_s": ours_c / steps, "hf_cpu_s": hf_c / steps, "cpu_speedup": hf_c / ours_c,
            "load_avg_1m": records.machine()["load_avg_1m"],
            "ours_losses": ours_loss, "hf_losses": hf_loss,
            "first_loss_rel_diff": abs(ours_loss[0] - hf_loss[0]) / abs(hf_loss[0]),
            "max_loss_rel_diff": max(abs(a - b) / abs(b) for a, b in zip(ours_loss, hf_loss))}


# ----------------------------------------------------------------------------- step memory


def abstract_batch(batch: int, li: int, lt: int, packed: bool = True) -> dict:
    """ShapeDtypeStructs of a (packed) seqio batch: all features int32 [b, L]."""
    import jax  # noqa: PLC0415

    names = [("encoder_input_tokens", li), ("decoder_target_tokens", lt),
             ("decoder_input_tokens", lt), ("decoder_loss_weights", lt)]
    if packed:
        names += [("encoder_segment_ids", li), ("encoder_positions", li),
                  ("decoder_segment_ids", lt), ("decoder_positions", lt)]
    return {k: jax.ShapeDtypeStruct((batch, n), np.int32) for k, n in names}


def step_memory(preset: str = "small", batch: int = 8, lengths=GPU_LENGTHS,
                dtype: str = "bfloat16", cpu_options: bool = True) -> dict:
    """XLA's memory analysis of the compiled train step (compiled ahead of time, never run):
    the temporaries are the activations kept for backward plus scratch. `cpu_options=False`
    compiles without `t0_jax.model.cpu_compile`'s options (XLA:CPU defaults, as "before")."""
    from t0_jax.model import cpu_compile  # noqa: PLC0415
    from t0_jax.model.config import get_config  # noqa: PLC0415

    saved = dict(cpu_compile.CPU_COMPILER_OPTIONS)
    if not cpu_options:
        cpu_compile.CPU_COMPILER_OPTIONS.clear()
    try:
        return _compiled_memory(get_config(preset, dtype=dtype), batch, lengths, cpu_options)
    finally:
        cpu_compile.CPU_COMPILER_OPTIONS.update(saved)


def _compiled_memory(config, batch: int, lengths, cpu_options: bool) -> dict:
    """Compile the step for `config` and read XLA's memory analysis."""
    import jax  # noqa: PLC0415

    from t0_jax.model.axes import DEFAULT_RULES  # noqa: PLC0415
    from t0_jax.model.model import EncoderDecoderModel  # noqa: PLC0415
    from t0_jax.parallel import mesh as mesh_lib  # noqa: PLC0415
    from t0_jax.train import state as state_lib, steps  # noqa: PLC0415

    model = EncoderDecoderModel(config)
    mesh = mesh_lib.make_mesh(1, devices=jax.devices()[:1])
    optimizer = state_lib.make_optimizer(model.params_axes())
    layout = state_lib.state_layout(model, optimizer, mesh, DEFAULT_RULES)
    step = steps.jit_train_step(layout, model=model, optimizer=optimizer, dropout_seed=0,
                                z_loss=1e-4, loss_normalizing_factor=None, num_microbatches=1)
    with records.Stopwatch() as clock:
        compiled = step.lower(layout.abstract, abstract_batch(batch, *lengths)).compile()
    mem = compiled.memory_analysis()
    return {"batch": batch, "lengths": list(lengths), "dtype": str(config.dtype),
            "packed": True, "cpu_options": cpu_options, "compile_s": clock.seconds,
            "temp_bytes": int(mem.temp_size_in_bytes),
            "argument_bytes": int(mem.argument_size_in_bytes),
            "output_bytes": int(mem.output_size_in_bytes)}


# ----------------------------------------------------------------------------- GPU / MFU


def _is_oom(error: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


class DoesNotFitError(RuntimeError):
    """The preset's step ran out of device memory at the fixed batch and at half of it."""


def mfu_run(preset: str, batch: int, lengths=GPU_LENGTHS, steps: int = 10, warmup: int = 2,
            dtype: str = "bfloat16", remat: str = "none", seed: int = 0,
            halvings: int = 1) -> dict:
    """Tokens/s and MFU of our step on packed batches; halves `batch` on out-of-memory, at most
    `halvings` times (DoesNotFitError after that)."""
    import jax  # noqa: PLC0415

    from t0_jax.model.config import get_config  # noqa: PLC0415
    from t0_jax.model.model import EncoderDecoderModel  # noqa: PLC0415
    from t0_jax.train import metrics  # noqa: PLC0415

    config = get_config(preset, dtype=dtype, remat_policy=remat)
    model = EncoderDecoderModel(config)
    rng = np.random.default_rng(seed)
    requested = batch
    while batch >= 1:
        try:
            batches = [packed_batch(rng, batch, *lengths, 32000) for _ in range(warmup + steps)]
            state, step, layout = our_trainer(model, normalizer=None, z_loss=1e-4)
            first_s, times, losses, state = time_ours(state, step, layout, batches, warmup)
            break
        except Exception as error:  # noqa: BLE001 - XLA raises a generic runtime error on OOM
            if not _is_oom(error):
                raise
            if batch == 1 or requested // batch >= 2**halvings:
                raise DoesNotFitError(f"{preset}: out of device memory at batch {requested}"
                                      f"{f' and {batch}' if batch != requested else ''}") from error
            records.log(f"{preset}: batch {batch} does not fit; trying {batch // 2}")
            batch //= 2
            state = step = layout = batches = None  # free the failed attempt's device buffers
            jax.clear_caches()
    seconds = float(np.sum(times))
    flops = batch * metrics.flops_per_sequence(model.abstract_params(), config, *lengths)
    peak = metrics.peak_flops_per_device()
    stats = jax.devices()[0].memory_stats() or {}
    return {"preset": preset, "batch": batch, "requested_batch": requested,
            "halved": batch != requested, "lengths": list(lengths), "dtype": dtype,
            "remat": remat, "num_params": config.num_params(),
            "step_s": seconds / steps, "compile_s": first_s,
            "tokens_per_s": sum(tokens(b) for b in batches[warmup:]) / seconds,
            "padded_tokens_per_s": batch * sum(lengths) * steps / seconds,
            "tflops_per_s": flops * steps / seconds / 1e12,
            "mfu": (flops * steps / seconds / peak) if peak else None,
            "peak_device_bytes": stats.get("peak_bytes_in_use"), "final_loss": losses[-1]}


def _cpu_lines(r: dict, c: dict) -> list[str]:
    rows = [("step wall time (s)", f"{c['ours_step_s']:.2f}", f"{c['hf_step_s']:.2f}"),
            ("step CPU time (s)", f"{c['ours_cpu_s']:.2f}", f"{c['hf_cpu_s']:.2f}"),
            ("real tokens/s", f"{c['ours_tokens_per_s']:.0f}", f"{c['hf_tokens_per_s']:.0f}"),
            ("speed-up, wall (CPU time)", f"{c['speedup']:.2f}× ({c['cpu_speedup']:.2f}×)", "1×"),
            ("step-1 loss", f"{c['ours_losses'][0]:.4f}", f"{c['hf_losses'][0]:.4f}")]
    return [f"CPU (`{r.get('jax_device', 'cpu')}`), identical random weights and unpacked "
            f"batches: T5 v1.1 small shape with {c['layers']}+{c['layers']} layers "
            f"({c['num_params'] / 1e6:.0f} M params), {c['lengths'][0]}/{c['lengths'][1]} tokens, "
            f"batch {c['batch']}, fp32, {c['steps']} timed steps after 1 warm-up, both sides in "
            f"one run; PyTorch peer: `T5ForConditionalGeneration` + `transformers` Adafactor "
            f"(torch threads {r['torch_threads']}"
            f"{'; both sides pinned to one core' if r.get('single_core') else ''}). "
            "Load average while measuring: "
            f"{c.get('load_avg_1m', 'n/a')} (wall time follows the neighbours on a shared "
            "machine; process CPU time follows the work).", "",
            "|  | ours (JAX, T5X Adafactor) | HF PyTorch + Adafactor |", "|---|---|---|",
            *[f"| {a} | {b} | {h} |" for a, b, h in rows],
            "", f"First-step losses differ by {c['first_loss_rel_diff']:.1e} (relative); our "
            f"compile time {c['ours_compile_s']:.1f} s.", ""]


def _memory_lines(m: dict, with_options: dict | None) -> list[str]:
    before = BEFORE_BIAS_CHANGE
    same_batch = m["batch"] == before["batch"]
    rows = [f"| per-row [b, h, q, k] bias (commit {before['commit']}) | {before['batch']} | "
            f"{before['temp_bytes'] / 2**30:.2f} |",
            f"| bias once per stack [1, h, q, k] | {m['batch']} | {m['temp_bytes'] / 2**30:.2f} |"]
    if with_options:
        rows.append(f"| same, with the train step's XLA:CPU options (YNNPACK for matmuls only) | "
                    f"{with_options['batch']} | {with_options['temp_bytes'] / 2**30:.2f} |")
    change = (f" Change: {(m['temp_bytes'] - before['temp_bytes']) / 2**20:+.0f} MiB."
              if same_batch else "")
    return ["Temporaries (activations kept for backward and scratch) of the compiled train step, "
            "XLA memory analysis on CPU: small preset, 1024/256 packed, bf16 activations, "
            "Adafactor, one device." + change, "",
            "| relative-position bias | batch | temporaries (GiB) |", "|---|---|---|", *rows, ""]


def section(record: dict) -> list[str]:
    """Markdown for docs/benchmarks.md: CPU step vs PyTorch, step memory, GPU MFU rows."""
    out = ["## Training step", ""]
    if "cpu" in record:
        out += _cpu_lines(record, record["cpu"])
    if "memory" in record:
        out += _memory_lines(record["memory"], record.get("memory_cpu_options"))
    for preset, g in (record.get("gpu") or {}).items():
        if "error" in g:
            out += [f"- {record.get('jax_device')} {preset}: {g['error']}"]
            continue
        mfu = "n/a" if g["mfu"] is None else f"{g['mfu']:.3f}"
        halved = f" (halved: out of memory at {g['requested_batch']})" if g.get("halved") else ""
        out += [f"- {record.get('jax_device')} {preset}: batch {g['batch']}{halved}, "
                f"{g['tokens_per_s']:.0f} tokens/s, {g['tflops_per_s']:.1f} TFLOP/s, MFU {mfu}"]
    if not record.get("gpu"):
        out += ["GPU (bf16, 1024/256 packed, MFU): none in this run; "
                "`python -m bench.training --device gpu` on one."]
    return out + [""]


def _torch_threads(args) -> int:
    import torch  # noqa: PLC0415 - the PyTorch peer of the CPU comparison only

    torch.set_num_threads(args.threads)
    return torch.get_num_threads()


def mfu_presets(args) -> dict:
    """{preset: mfu_run row, or {"error": why} when it fits at neither batch}."""
    import jax  # noqa: PLC0415

    lengths = tuple(int(n) for n in args.lengths.split(","))
    rows = {}
    for preset in args.presets.split(","):
        batch = args.batch_size or GPU_BATCH[preset]
        try:
            r = mfu_run(preset, batch, lengths, steps=args.steps, remat=args.remat)
        except DoesNotFitError as e:
            rows[preset] = {"preset": preset, "requested_batch": batch, "error": str(e)}
            print(f"{args.device.upper()} {preset}: {e}")
            jax.clear_caches()
            continue
        rows[preset] = r
        print(f"{args.device.upper()} {preset} batch {r['batch']} (asked {batch}): "
              f"{r['tokens_per_s']:.0f} tok/s, MFU "
              f"{r['mfu'] if r['mfu'] is None else round(r['mfu'], 3)}")
        jax.clear_caches()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--presets", default="small,base,large,xl", help="GPU presets")
    parser.add_argument("--batch-size", type=int, default=None, help="GPU batch (per preset "
                        f"default {GPU_BATCH})")
    parser.add_argument("--remat", default="none", help="GPU remat policy")
    parser.add_argument("--mfu", action="store_true", help="the GPU path (packed, bf16, MFU) "
                        "on --device; implied by --device gpu")
    parser.add_argument("--lengths", default=",".join(map(str, GPU_LENGTHS)),
                        help="MFU path: input,target lengths")
    parser.add_argument("--layers", type=int, default=4, help="CPU: layers per stack")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--single-core", action="store_true", help="CPU: pin to one core, one "
                        "thread each side (CPU time = single-threaded work; see the docstring)")
    parser.add_argument("--memory-batch", type=int, default=8, help="CPU: batch of the "
                        "compiled small 1024/256 step whose memory is analysed (0: skip)")
    parser.add_argument("--out", default=str(records.OUT_DIR))
    args = parser.parse_args(argv)
    if args.single_core:  # before jax and torch create their thread pools
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        args.threads = 1
    import jax  # noqa: PLC0415

    mfu = args.mfu or args.device == "gpu"
    out: dict = {"device": args.device, "torch_threads": None if mfu else _torch_threads(args),
                 "single_core": args.single_core}
    if args.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    elif jax.default_backend() != "gpu":
        print(f"bench.training: --device gpu, but JAX sees no GPU (backend "
              f"{jax.default_backend()!r}); install jax[cuda] on a machine with one.",
              file=sys.stderr)
        return 3
    if not mfu:
        r = compare_cpu(layers=args.layers, steps=args.steps)
        out["cpu"] = r
        print(f"CPU small({args.layers}+{args.layers} layers) {r['lengths']} batch {r['batch']}: "
              f"ours {r['ours_tokens_per_s']:.0f} tok/s, HF {r['hf_tokens_per_s']:.0f} tok/s "
              f"({r['speedup']:.2f}x wall, {r['cpu_speedup']:.2f}x CPU time), first-step loss "
              f"rel diff {r['first_loss_rel_diff']:.1e}")
        if args.memory_batch:
            m = out["memory"] = step_memory("small", args.memory_batch, cpu_options=False)
            o = out["memory_cpu_options"] = step_memory("small", args.memory_batch)
            print(f"compiled small step 1024/256 packed batch {m['batch']}: temporaries "
                  f"{m['temp_bytes'] / 2**30:.2f} GiB, {o['temp_bytes'] / 2**30:.2f} GiB with "
                  f"the CPU options (per-row bias before: "
                  f"{BEFORE_BIAS_CHANGE['temp_bytes'] / 2**30:.2f} GiB at batch 8)")
    else:
        out["gpu"] = mfu_presets(args)
    out["jax_device"] = records.accelerator()
    out["machine"] = records.machine()
    print(f"wrote {records.write_json('training', out, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
