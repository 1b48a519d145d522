"""Per-choice log-likelihoods: encode every input once, score all its choices against it.

`Scorer.score(keys, inputs, targets)` returns, for each row, Σ_t log p(target_t | input,
target_<t) over the row's target tokens — the rank-classification score of REFERENCE.md §5.
Which tokens those are (EOS on the choice or on the input) is decided when rows are made
(`t0_jax.scoring.conventions`); the scorer sums whatever the rows hold. One jitted program per padded shape runs `model.encode` on the distinct inputs
and `model.score_encoded` on the choice rows (`encoder_index` row → encoder row), so the
encoder runs once per example instead of once per choice as in the peer.

Sharding: batches are global arrays split over the mesh's `data` axis (every batch dim is a
multiple of its size, see `BatchingOptions.row_multiple`); parameters keep whatever sharding
they were placed with (model-parallel over `model` via `t0_jax.parallel`). Every process builds
the same batches from the same rows (evaluation sets are small next to the model), contributes
the shards its devices own, and receives the replicated scores, so idx values stay global and
process 0 can write everything. The program is traced and run inside `mesh_context(mesh, rules)`
(`t0_jax.parallel.mesh`; rules default to `DEFAULT_RULES`), so the model's activation sharding
constraints (batch over `data`, heads/mlp/vocab over `model`) are part of it.

`naive_scores` is the peer's layout (input repeated per choice, `model.score_batch`) for tests
and benchmarks.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Hashable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from t0_jax.model.axes import DEFAULT_RULES
from t0_jax.parallel.host_arrays import global_to_host
from t0_jax.parallel.mesh import InMeshContext, batch_sharding, replicated
from t0_jax.scoring.batching import BatchingOptions, ScoreBatch, make_batches


def _encode_and_score(model, params, encoder_input_tokens, encoder_index, decoder_input_tokens,
                      decoder_target_tokens, decoder_loss_weights):
    """[E, Li] inputs + [R, Lt] choice rows → [R] summed log-probabilities."""
    encoded = model.encode(params, encoder_input_tokens)  # [E, Li, emb]
    return model.score_encoded(params, encoded, encoder_input_tokens, encoder_index,
                               decoder_input_tokens, decoder_target_tokens, decoder_loss_weights)


def _score_repeated(model, params, encoder_input_tokens, encoder_index, decoder_input_tokens,
                    decoder_target_tokens, decoder_loss_weights):
    """The peer's layout: every choice row carries (and re-encodes) its own copy of the input."""
    batch = {"encoder_input_tokens": encoder_input_tokens[encoder_index],  # [R, Li]
             "decoder_input_tokens": decoder_input_tokens,
             "decoder_target_tokens": decoder_target_tokens,
             "decoder_loss_weights": decoder_loss_weights}
    return model.score_batch(params, batch)


def to_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds in full → a global array with `sharding`."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


@functools.lru_cache(maxsize=None)
def scoring_program(model, encode_once: bool, mesh: Optional[Mesh], rules) -> InMeshContext:
    """The jitted scoring function of a model, one per (model, layout, mesh, rules).

    WHY module level: a Scorer is made per checkpoint; sharing the jitted function keeps the
    compiled programs (one per padded shape) across tasks and checkpoint steps of a process,
    since parameters of equal shape and sharding are just new arguments to the same program.
    """
    fn = _encode_and_score if encode_once else _score_repeated
    kwargs = {}
    if mesh is not None:
        kwargs["out_shardings"] = replicated(mesh)
    return InMeshContext(jax.jit(functools.partial(fn, model), **kwargs), mesh, rules)


@dataclasses.dataclass
class Scorer:
    """Jitted encode-once scoring of rows with a fixed model and parameters."""

    model: object
    params: object
    mesh: Optional[Mesh] = None
    options: BatchingOptions = BatchingOptions()
    encode_once: bool = True  # False: the peer's re-encode-per-choice layout (benchmarks)
    pipeline_depth: int = 2  # batches in flight: overlap host batching with device compute
    rules: Optional[Sequence[tuple[str, Any]]] = None  # logical-axis rules; None: DEFAULT_RULES

    def __post_init__(self):
        self.options = self.options.resolved()  # batch sizes for this backend if left None
        if self.mesh is not None:
            self.options = dataclasses.replace(self.options,
                                               row_multiple=int(self.mesh.shape["data"]))
        rules = DEFAULT_RULES if self.rules is None else self.rules
        self._step = scoring_program(self.model, self.encode_once, self.mesh,
                                     tuple(map(tuple, rules)))
        self.shapes_seen: set[tuple[int, ...]] = set()

    def num_compiled(self) -> int:
        """Programs compiled so far for this model (shared by every Scorer of the same model,
        mesh and rules: one per padded shape, across tasks and checkpoints)."""
        return self._step.jitted._cache_size()

    def _device_batch(self, batch: ScoreBatch) -> dict:
        arrays = batch.arrays()
        if self.mesh is None:
            return arrays
        return {k: to_global(v, batch_sharding(self.mesh, v.ndim)) for k, v in arrays.items()}

    def lower(self, batch: ScoreBatch) -> jax.stages.Lowered:
        """The program one batch runs (its HLO shows the sharding constraints; `.compile()`
        it ahead of time to check memory before a long run)."""
        return self._step.lower(self.params, **self._device_batch(batch))

    def score(self, keys: Sequence[Hashable], inputs: Sequence[np.ndarray],
              targets: Sequence[np.ndarray],
              on_examples: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """[n] float64 log-likelihood of each row's targets given its inputs.

        `keys[i]` names row i's example (rows with equal key and equal input tokens share one
        encoder row). `on_examples(k)` is called as each batch of k examples finishes.
        """
        out = np.full((len(keys),), np.nan, np.float64)
        pending: collections.deque = collections.deque()
        for batch in make_batches(keys, inputs, targets, self.options):
            self.shapes_seen.add(batch.shape_key)
            pending.append((batch, self._step(self.params, **self._device_batch(batch))))
            if len(pending) >= self.pipeline_depth:
                self._collect(*pending.popleft(), out, on_examples)
        while pending:
            self._collect(*pending.popleft(), out, on_examples)
        return out

    @staticmethod
    def _collect(batch: ScoreBatch, result, out: np.ndarray, on_examples) -> None:
        values = global_to_host(result).astype(np.float64)  # [R], replicated
        out[batch.row_ids] = values[:len(batch.row_ids)]
        if on_examples is not None:
            on_examples(batch.num_examples)


def naive_scores(model, params, keys, inputs, targets,
                 options: BatchingOptions = BatchingOptions()) -> np.ndarray:
    """Same contract as `Scorer.score`, re-encoding the input for every choice (the peer's way)."""
    return Scorer(model, params, options=options, encode_once=False).score(keys, inputs, targets)
