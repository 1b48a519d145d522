"""Greedy decoding for tasks without answer choices (summaries, QA spans, titles …).

Inputs are batched like the scorer's (sorted by length, padded to power-of-two buckets, the
batch size fixed per length bucket) and decoded with `model.greedy_decode` (KV cache;
cross-attention keys/values projected once per input, not per step) up to a bucketed
`max_decode_len`, so one program serves a whole task. Decoded ids are cut at the first EOS;
text metrics are computed by `text_metrics` on the detokenised strings.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from t0_jax.scoring.batching import EOS_ID, BatchingOptions, bucket, truncate_input
from t0_jax.parallel.host_arrays import global_to_host
from t0_jax.parallel.mesh import batch_sharding, replicated
from t0_jax.scoring.scorer import to_global


def cut_at_eos(tokens: np.ndarray, eos_id: int = EOS_ID) -> np.ndarray:
    """Tokens before the first EOS (and without padding zeros)."""
    tokens = np.asarray(tokens)
    stop = np.flatnonzero(tokens == eos_id)
    tokens = tokens[:stop[0]] if stop.size else tokens
    return tokens[tokens != 0]


def decode_length(targets: Sequence[np.ndarray], options: BatchingOptions) -> int:
    """Bucketed max target length of a task (EOS included), capped at max_target_length."""
    longest = max((len(t) for t in targets), default=1)
    length = bucket(longest, options.min_target_length)
    return min(length, options.max_target_length) if options.max_target_length else length


@functools.lru_cache(maxsize=None)
def decoding_program(model, mesh: Optional[Mesh]):
    """The jitted greedy decoder of a model, shared by every Generator of that model and mesh
    (compiled once per input shape and decode length, across tasks and checkpoints)."""
    kwargs = {"static_argnums": (2,)}
    if mesh is not None:
        kwargs["out_shardings"] = replicated(mesh)
    return jax.jit(functools.partial(_greedy, model), **kwargs)


@dataclasses.dataclass
class Generator:
    model: object
    params: object
    mesh: Optional[Mesh] = None
    options: BatchingOptions = BatchingOptions()

    def __post_init__(self):
        self.options = self.options.resolved()  # batch sizes for this backend if left None
        if self.mesh is not None:
            self.options = dataclasses.replace(self.options,
                                               row_multiple=int(self.mesh.shape["data"]))
        self._decode = decoding_program(self.model, self.mesh)

    def generate(self, inputs: Sequence[np.ndarray], max_decode_len: int,
                 on_examples: Optional[Callable[[int], None]] = None) -> list[np.ndarray]:
        """Decoded token ids (EOS and padding removed) for each input, in input order."""
        inputs = [truncate_input(np.asarray(x, np.int32), self.options.max_input_length)
                  for x in inputs]
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        out: list[Optional[np.ndarray]] = [None] * len(inputs)
        start = 0
        while start < len(order):
            li = bucket(len(inputs[order[start]]), self.options.min_input_length)
            size = self._batch_size(li)
            # Grow the bucket to the longest input of this chunk, then re-derive its size once.
            chunk = order[start:start + size]
            li = bucket(max(len(inputs[i]) for i in chunk), self.options.min_input_length)
            chunk = chunk[:self._batch_size(li)]
            tokens = np.zeros((self._batch_size(li), li), np.int32)  # [E, Li]
            for row, i in enumerate(chunk):
                tokens[row, :len(inputs[i])] = inputs[i]
            decoded = global_to_host(  # [E, max_decode_len], replicated
                self._decode(self.params, self._place(tokens), max_decode_len))
            for row, i in enumerate(chunk):
                out[i] = cut_at_eos(decoded[row])
            if on_examples is not None:
                on_examples(len(chunk))
            start += len(chunk)
        return out

    def _batch_size(self, input_bucket: int) -> int:
        o = self.options
        e = max(1, min(o.max_examples, o.encoder_token_budget // input_bucket))
        return bucket(1 << (e.bit_length() - 1), 1, o.row_multiple)

    def _place(self, tokens: np.ndarray):
        if self.mesh is None:
            return tokens
        return to_global(tokens, batch_sharding(self.mesh, tokens.ndim))


def _greedy(model, params, encoder_input_tokens, max_decode_len):
    return model.greedy_decode(params, encoder_input_tokens, max_decode_len)  # [E, max_len]
