"""`EncoderDecoderModel`: the functional API the trainer, scorer and converters use.

Every method is a pure function of (params, arrays) and is jitted already (callers may wrap
them in their own `jax.jit` with shardings); nothing here holds state besides the config, and
two models with equal configs are equal (they share compiled code). Parameters are plain nested
dicts of arrays with T5X names (see `network.py`); their logical axes come from
`params_axes()`, not from boxes inside the tree.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from t0_jax.model import decoding, losses
from t0_jax.model.config import T5Config
from t0_jax.model.network import Transformer


def _hashable_rules(rules) -> tuple:
    """Flax's current logical-axis rules as a hashable tuple (values: str, None or tuples)."""
    as_hashable = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    return tuple((name, as_hashable(mesh)) for name, mesh in rules)


def _jit_method(*static_argnames: str):
    """jax.jit for a method, keyed by the model (hashed by its config) AND flax's axis rules.

    Eager callers get compiled code; inside a caller's jit the call is inlined. The rules are
    part of the key because `with_logical_constraint` reads them from a flax context that jax's
    trace cache does not see: without this, a trace made outside `nn.logical_axis_rules(...)`
    would be silently reused inside it, dropping every activation sharding constraint.
    """
    def decorate(fn):
        signature = inspect.signature(fn)
        names = list(signature.parameters)
        static = (0, 1) + tuple(names.index(n) + 1 for n in static_argnames)

        def with_rules(self, rules, *args, **kwargs):
            with nn.logical_axis_rules(rules):
                return fn(self, *args, **kwargs)

        jitted = jax.jit(with_rules, static_argnums=static, static_argnames=static_argnames)

        @functools.wraps(fn)
        def method(self, *args, **kwargs):
            if "batch" in names:  # drop non-model features (e.g. strings) before jit sees them
                bound = signature.bind(self, *args, **kwargs)
                bound.arguments["batch"] = _model_features(bound.arguments["batch"])
                args, kwargs = bound.args[1:], bound.kwargs
            return jitted(self, _hashable_rules(nn.get_logical_axis_rules()), *args, **kwargs)
        return method
    return decorate


Params = dict[str, Any]
Batch = Mapping[str, Any]

# No `*_positions`: the relative-position bias comes from index differences (network.py).
_OPTIONAL = ("encoder_segment_ids", "decoder_target_tokens", "decoder_segment_ids")
_REQUIRED = ("encoder_input_tokens", "decoder_input_tokens")


def _model_features(batch: Batch) -> dict[str, Any]:
    """The features the model reads (inputs, targets, weights); anything else is left out."""
    keep = _REQUIRED + _OPTIONAL + ("decoder_loss_weights",)
    return {k: batch[k] for k in keep if k in batch and batch[k] is not None}


def _model_inputs(batch: Batch) -> dict[str, jax.Array]:
    """The features the network reads, as jnp arrays; a missing required one is named."""
    missing = [k for k in _REQUIRED if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; it has {sorted(batch)} (seqio "
                       "EncDecFeatureConverter feature names, docs/internals.md)")
    return {k: jnp.asarray(batch[k]) for k in _REQUIRED + _OPTIONAL if batch.get(k) is not None}


class EncoderDecoderModel:
    """T5 v1.1 encoder-decoder: init, logits, losses, scores and greedy decoding."""

    def __init__(self, config: T5Config):
        self.config = config
        self._eval = Transformer(config, deterministic=True)
        self._train = Transformer(config, deterministic=config.dropout_rate == 0)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.config == self.config

    def __hash__(self) -> int:
        return hash((type(self), self.config))

    def __repr__(self) -> str:
        return f"EncoderDecoderModel({self.config})"

    # ---- parameters -------------------------------------------------------------------
    def _init_variables(self, rng: jax.Array):
        tokens = jnp.ones((1, 1), jnp.int32)
        batch = {"encoder_input_tokens": tokens, "decoder_input_tokens": tokens,
                 "decoder_target_tokens": tokens}
        return self._eval.init({"params": rng}, batch)

    @_jit_method()
    def init_params(self, rng: jax.Array) -> Params:
        """Random T5X-style init -> plain nested dict of `param_dtype` arrays.

        Jitted (op-by-op init of a large tree is slow); for a sharded init wrap it again:
        `jax.jit(model.init_params, out_shardings=...)` under the mesh and axis rules.
        """
        return nn.unbox(self._init_variables(rng)["params"])

    def abstract_params(self) -> Params:
        """Tree of jax.ShapeDtypeStruct for the params; allocates nothing."""
        return jax.eval_shape(self.init_params, jax.random.PRNGKey(0))

    def params_axes(self) -> dict[str, Any]:
        """Same tree as the params, each leaf a tuple of logical axis names (axes.AXES)."""
        boxed = jax.eval_shape(self._init_variables, jax.random.PRNGKey(0))["params"]
        is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
        return jax.tree_util.tree_map(lambda b: tuple(b.names), boxed, is_leaf=is_box)

    # ---- forward passes ---------------------------------------------------------------
    @_jit_method()
    def logits(self, params: Params, batch: Batch, dropout_rng=None) -> jax.Array:
        """[b, Lt, vocab] fp32 logits; dropout only when `dropout_rng` is given."""
        inputs = _model_inputs(batch)
        if dropout_rng is None or self.config.dropout_rate == 0:
            return self._eval.apply({"params": params}, inputs)
        return self._train.apply({"params": params}, inputs, rngs={"dropout": dropout_rng})

    @_jit_method()
    def loss_fn(self, params: Params, batch: Batch, dropout_rng=None, z_loss: float = 1e-4,
                loss_normalizing_factor: float | None = None):
        """Summed weighted token cross entropy + z-loss (divided by the factor when given).

        aux: `cross_entropy` (Σ w·CE without z-loss), `z_loss` (Σ w·z), `weight_sum`, `correct`
        — raw sums, so they add across micro-batches and hosts.
        """
        logits = self.logits(params, batch, dropout_rng)
        targets = jnp.asarray(batch["decoder_target_tokens"])
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0) if weights is None else jnp.asarray(weights)
        total, total_z, weight_sum, correct = losses.cross_entropy_with_z_loss(
            logits, targets, weights, z_loss)
        aux = {"cross_entropy": total - total_z, "z_loss": total_z, "weight_sum": weight_sum,
               "correct": correct}
        loss = total if loss_normalizing_factor is None else total / loss_normalizing_factor
        return loss, aux

    @_jit_method()
    def score_batch(self, params: Params, batch: Batch) -> jax.Array:
        """[b] Σ_t log p(target_t) × decoder_loss_weights (EOS included, no z-loss).

        Without `decoder_loss_weights` every non-pad target counts (weight = target > 0).
        """
        logits = self.logits(params, batch)
        targets = jnp.asarray(batch["decoder_target_tokens"])
        weights = batch.get("decoder_loss_weights")
        weights = jnp.asarray(targets > 0 if weights is None else weights, jnp.float32)
        return jnp.sum(losses.token_log_probs(logits, targets) * weights, axis=-1)

    @_jit_method()
    def encode(self, params: Params, encoder_input_tokens, encoder_segment_ids=None) -> jax.Array:
        """Encoder output [b, Li, emb] as fp32 (after the final norm)."""
        encoded = self._eval.apply({"params": params}, jnp.asarray(encoder_input_tokens),
                                   encoder_segment_ids, method=Transformer.encode)
        return encoded.astype(jnp.float32)

    @_jit_method()
    def score_encoded(self, params: Params, encoded, encoder_input_tokens, encoder_index,
                      decoder_input_tokens, decoder_target_tokens,
                      decoder_loss_weights) -> jax.Array:
        """[n] log-likelihoods; row j is scored against encoded[encoder_index[j]].

        The scorer encodes each input once and scores all of its answer choices here;
        `encoded` [E, Li, emb] stays per input down to the cross-attention, which projects its
        keys/values once per input and gathers them per choice row (not a copy per choice).
        """
        index = jnp.asarray(encoder_index, jnp.int32)  # [n]
        targets = jnp.asarray(decoder_target_tokens)
        logits = self._eval.apply({"params": params}, jnp.asarray(encoded),
                                  jnp.asarray(encoder_input_tokens),
                                  jnp.asarray(decoder_input_tokens), targets,
                                  encoder_index=index, method=Transformer.decode_logits)
        weights = jnp.asarray(decoder_loss_weights, jnp.float32)
        return jnp.sum(losses.token_log_probs(logits, targets) * weights, axis=-1)

    @_jit_method("max_decode_len", "eos_id")
    def greedy_decode(self, params: Params, encoder_input_tokens, max_decode_len: int,
                      eos_id: int = 1) -> jax.Array:
        """[b, max_decode_len] argmax tokens (no start token), 0 after each row's EOS."""
        tokens = jnp.asarray(encoder_input_tokens)
        encoded = self.encode(params, tokens)
        module = Transformer(self.config, deterministic=True, decode=True,
                             max_decode_length=int(max_decode_len))
        return decoding.greedy_decode(module, params, encoded, tokens, eos_id)
