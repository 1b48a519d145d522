"""Group scoring rows into encode-once batches with few distinct padded shapes.

Glossary (every array is numpy int32 unless said; EOS placement as the rows carry it, see
`t0_jax.scoring.conventions` — t-zero: inputs without EOS, targets with EOS; lm-evaluation-
harness: inputs with EOS, targets without):
  encoder_input_tokens  [E, Li]  one row per distinct input (example), 0 = pad
  encoder_index         [R]      for each choice row, its encoder row in [0, E)
  decoder_target_tokens [R, Lt]  the choice's tokens, 0 = pad
  decoder_input_tokens  [R, Lt]  targets shifted right, 0 = decoder start
  decoder_loss_weights  [R, Lt]  float32, 1 on every real target token

WHY: the peer (t-zero's run_eval) copies every input once per choice and re-runs the encoder for
each; here an input is encoded once and all of its choices are scored against that encoding.
XLA compiles one program per distinct shape, so shapes come from small fixed sets: input lengths
round up to a multiple of 32 (of 128 above 512), target lengths to a multiple of 4 (coarser
when long), encoder rows to a power of two and choice rows to a power of two up to 8 and a
multiple of 8 above. A run over hundreds of templates compiles a few dozen programs, which the
persistent compilation cache then keeps across runs; the finer steps (rather than powers of two)
keep padding small: a 65-token prompt takes 96 encoder positions, not 128, and a task's last,
partial batch is sized from what it holds. Examples are sorted by length so that padding stays
small; results are mapped back to the caller's row order through `row_ids`.
"""
from __future__ import annotations

import dataclasses
from typing import Hashable, Iterator, Optional, Sequence

import numpy as np

EOS_ID = 1

# (up to this length, round up to a multiple of this step); the last entry has no bound.
INPUT_STEPS = ((512, 32), (None, 128))
TARGET_STEPS = ((64, 4), (256, 16), (None, 64))
# Batch sizes when BatchingOptions leaves them None: (max_examples, max_rows) per backend.
# CPU: small batches were faster (bench/scoring.py: less padding, cache-sized activations);
# accelerators need bigger batches to fill their matrix units.
AUTO_BATCH = {"cpu": (8, 32)}
AUTO_BATCH_ACCELERATOR = (32, 128)


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // int(multiple)) * int(multiple)


def bucket(n: int, minimum: int, multiple: int = 1) -> int:
    """Smallest power of two ≥ max(n, minimum), rounded up to a multiple of `multiple`."""
    size = 1 << max(int(max(n, minimum, 1)) - 1, 0).bit_length()
    return round_up(size, multiple)


def step_bucket(n: int, minimum: int, steps: Sequence[tuple[Optional[int], int]]) -> int:
    """max(n, minimum) rounded up to the step of the first range that holds it (`INPUT_STEPS`,
    `TARGET_STEPS`): finer than powers of two, still few distinct lengths."""
    n = max(int(n), int(minimum), 1)
    for limit, step in steps:
        if limit is None or n <= limit:
            return round_up(n, step)
    raise ValueError(f"steps {steps} must end with an unbounded (None, step) entry")


def input_bucket(n: int, minimum: int) -> int:
    return step_bucket(n, minimum, INPUT_STEPS)


def target_bucket(n: int, minimum: int) -> int:
    return step_bucket(n, minimum, TARGET_STEPS)


def row_bucket(n: int, multiple: int = 1) -> int:
    """Choice rows: a power of two up to 8, then a multiple of 8; a multiple of `multiple`."""
    size = bucket(n, 1) if n <= 8 else round_up(n, 8)
    return round_up(size, multiple)


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Shape policy. `row_multiple` is the data-parallel size: every batch dim divides by it.

    `max_examples` / `max_rows` None: chosen by the JAX backend (`AUTO_BATCH`) when batches
    are made — small on CPU, larger on accelerators; `resolved()` fills them in.
    """

    max_examples: Optional[int] = None  # encoder rows per batch (fewer for long inputs)
    max_rows: Optional[int] = None  # choice rows per batch (more only if one example has more)
    encoder_token_budget: int = 16384  # E × Li ≤ budget picks E for long inputs
    min_input_length: int = 32
    min_target_length: int = 4
    max_input_length: Optional[int] = 1024  # t-zero truncates inputs to 1024 tokens
    max_target_length: Optional[int] = 256
    row_multiple: int = 1

    def resolved(self, backend: Optional[str] = None) -> "BatchingOptions":
        """These options with None batch sizes replaced by the backend's (`AUTO_BATCH`)."""
        if self.max_examples is not None and self.max_rows is not None:
            return self
        if backend is None:
            import jax  # noqa: PLC0415  (only when needed: choosing a backend starts it)
            backend = jax.default_backend()
        examples, rows = AUTO_BATCH.get(backend, AUTO_BATCH_ACCELERATOR)
        return dataclasses.replace(
            self, max_examples=examples if self.max_examples is None else self.max_examples,
            max_rows=rows if self.max_rows is None else self.max_rows)


@dataclasses.dataclass
class ScoreBatch:
    encoder_input_tokens: np.ndarray  # [E, Li]
    encoder_index: np.ndarray  # [R]
    decoder_input_tokens: np.ndarray  # [R, Lt]
    decoder_target_tokens: np.ndarray  # [R, Lt]
    decoder_loss_weights: np.ndarray  # [R, Lt] float32
    row_ids: np.ndarray  # [n] caller's row positions of the first n (real) rows
    num_examples: int  # real encoder rows (the rest is padding)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in (
            "encoder_input_tokens", "encoder_index", "decoder_input_tokens",
            "decoder_target_tokens", "decoder_loss_weights")}

    @property
    def shape_key(self) -> tuple[int, ...]:
        return self.encoder_input_tokens.shape + self.decoder_target_tokens.shape


def truncate_input(tokens: np.ndarray, limit: Optional[int]) -> np.ndarray:
    """Keep the first `limit` tokens (right truncation, as the HF tokenizer does)."""
    return tokens if limit is None or len(tokens) <= limit else tokens[:limit]


def truncate_target(tokens: np.ndarray, limit: Optional[int]) -> np.ndarray:
    """Keep the first `limit - 1` tokens and the final EOS, as the HF tokenizer does."""
    if limit is None or len(tokens) <= limit:
        return tokens
    if len(tokens) and tokens[-1] == EOS_ID:
        return np.concatenate([tokens[:limit - 1], tokens[-1:]])
    return tokens[:limit]


@dataclasses.dataclass
class _Example:
    inputs: np.ndarray
    rows: list[int]  # caller row positions
    targets: list[np.ndarray]


def group_examples(keys: Sequence[Hashable], inputs: Sequence[np.ndarray],
                   targets: Sequence[np.ndarray], options: BatchingOptions) -> list[_Example]:
    """Rows sharing (key, input tokens) become one example with one encoder row."""
    groups: dict[tuple, _Example] = {}
    for i, (key, inp, tgt) in enumerate(zip(keys, inputs, targets)):
        inp = truncate_input(np.asarray(inp, np.int32), options.max_input_length)
        tgt = truncate_target(np.asarray(tgt, np.int32), options.max_target_length)
        if len(tgt) == 0:
            raise ValueError(f"row {i} (example {key!r}) has an empty target; a scored choice "
                             "needs at least its EOS token.")
        example = groups.setdefault((key, inp.tobytes()), _Example(inp, [], []))
        example.rows.append(i)
        example.targets.append(tgt)
    return list(groups.values())


def make_batches(keys: Sequence[Hashable], inputs: Sequence[np.ndarray],
                 targets: Sequence[np.ndarray],
                 options: BatchingOptions = BatchingOptions()) -> Iterator[ScoreBatch]:
    """Encode-once batches covering every row exactly once (see the module docstring)."""
    options = options.resolved()
    examples = group_examples(keys, inputs, targets, options)
    examples.sort(key=lambda e: (len(e.inputs), max(len(t) for t in e.targets)))
    chunk: list[_Example] = []
    for example in examples:
        if chunk and not _fits(chunk + [example], options):
            yield _pack(chunk, options)
            chunk = []
        chunk.append(example)
    if chunk:
        yield _pack(chunk, options)


def _examples_per_batch(input_length: int, options: BatchingOptions) -> int:
    """Most encoder rows for a padded input length: a power of two within the token budget
    and `max_examples`, rounded up to a multiple of row_multiple."""
    e = max(1, min(options.max_examples, options.encoder_token_budget // input_length))
    e = 1 << (e.bit_length() - 1)  # round down to a power of two
    return round_up(e, options.row_multiple)


def _fits(chunk: list[_Example], options: BatchingOptions) -> bool:
    li = input_bucket(max(len(e.inputs) for e in chunk), options.min_input_length)
    rows = sum(len(e.targets) for e in chunk)
    return len(chunk) <= _examples_per_batch(li, options) and rows <= options.max_rows


def _pack(chunk: list[_Example], options: BatchingOptions) -> ScoreBatch:
    """Pad a chunk to its shape: E and R are sized from what the chunk holds (a task's last,
    partial batch does not pay for full-batch padding)."""
    li = input_bucket(max(len(e.inputs) for e in chunk), options.min_input_length)
    lt = target_bucket(max(len(t) for e in chunk for t in e.targets), options.min_target_length)
    n_rows = sum(len(e.targets) for e in chunk)
    num_enc = min(bucket(len(chunk), 1, options.row_multiple), _examples_per_batch(li, options))
    num_rows = row_bucket(n_rows, options.row_multiple)
    enc = np.zeros((num_enc, li), np.int32)  # [E, Li]
    index = np.zeros((num_rows,), np.int32)  # [R]
    dec_in = np.zeros((num_rows, lt), np.int32)  # [R, Lt]
    dec_tgt = np.zeros((num_rows, lt), np.int32)  # [R, Lt]
    weights = np.zeros((num_rows, lt), np.float32)  # [R, Lt]
    row_ids = []
    r = 0
    for e_i, example in enumerate(chunk):
        enc[e_i, :len(example.inputs)] = example.inputs
        for row, tgt in zip(example.rows, example.targets):
            index[r] = e_i
            dec_tgt[r, :len(tgt)] = tgt
            dec_in[r, 1:len(tgt)] = tgt[:-1]
            weights[r, :len(tgt)] = 1.0
            row_ids.append(row)
            r += 1
    return ScoreBatch(enc, index, dec_in, dec_tgt, weights,
                      np.asarray(row_ids, np.int64), len(chunk))
