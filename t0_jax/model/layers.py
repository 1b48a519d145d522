"""The building blocks of T5 v1.1: dense, RMS norm, gated-GELU MLP, attention, relative bias.

Numerics follow T5X (`t5x/examples/t5/layers.py`), written afresh:
- Kernels are created in `param_dtype` (fp32) and cast to the activation dtype at use.
- No 1/sqrt(head_dim) at run time: T5X folds it into the query kernel's initial scale.
- Attention logits, softmax and the additive mask/bias are computed in fp32 (bf16 softmax
  loses the small probabilities that log-likelihood scoring depends on).
- RMS norm (T5 "LayerNorm"): no mean subtraction and no bias, statistics in fp32.
Every parameter is boxed with its logical axis names (flax `with_logical_partitioning`).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t0_jax.model.axes import check_axes

Initializer = Callable[..., jax.Array]

# Large negative bias for masked attention entries (finite, so fully masked rows stay NaN-free).
MASK_VALUE = -1e10


def param(module: nn.Module, name: str, init: Initializer, shape: tuple[int, ...], dtype: Any,
          axes: tuple[str, ...]) -> jax.Array:
    """A parameter annotated with logical axis names (the partitioning metadata)."""
    boxed_init = nn.with_logical_partitioning(init, check_axes(axes))
    return module.param(name, boxed_init, shape, dtype)


def constrain(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """Shard an activation by logical names; a no-op outside a mesh + axis-rules context."""
    return nn.with_logical_constraint(x, check_axes(axes))


def default_kernel_init(scale: float = 1.0, distribution: str = "truncated_normal"):
    """T5X dense init: variance `scale / fan_in` (fan_in = the first kernel dim)."""
    return nn.initializers.variance_scaling(scale, "fan_in", distribution)


class Dense(nn.Module):
    """y = x @ kernel, kernel [in, out] without bias (T5 has no biases anywhere)."""

    features: int
    kernel_axes: tuple[str, str]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = default_kernel_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = param(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                       self.param_dtype, self.kernel_axes)
        x = jnp.asarray(x, self.dtype)
        return jnp.einsum("...i,io->...o", x, jnp.asarray(kernel, self.dtype))


class RMSNorm(nn.Module):
    """T5 layer norm: x / sqrt(mean(x^2) + eps) * scale, statistics in fp32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype,
                      ("embed",))
        mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = jnp.asarray(x * jax.lax.rsqrt(mean2 + self.epsilon), self.dtype)
        return y * jnp.asarray(scale, self.dtype)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU with the tanh approximation (HF "gelu_new", flax `nn.gelu(approximate=True)`)."""
    return nn.gelu(x, approximate=True)


class GatedGeluMlp(nn.Module):
    """wo(gelu(wi_0 x) * wi_1 x), with dropout on the hidden units (T5X: broadcast over length)."""

    mlp_dim: int
    dropout_rate: float = 0.0
    deterministic: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [b, l, e] -> [b, l, e]
        dense = lambda feats, axes, name: Dense(  # noqa: E731
            feats, axes, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        gate = gelu_tanh(dense(self.mlp_dim, ("embed", "mlp"), "wi_0")(x))  # [b, l, m]
        linear = dense(self.mlp_dim, ("embed", "mlp"), "wi_1")(x)  # [b, l, m]
        h = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
            gate * linear, deterministic=self.deterministic)
        h = constrain(h, ("batch", "length", "mlp"))
        return dense(x.shape[-1], ("mlp", "embed"), "wo")(h)


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> jax.Array:
    """T5's bucketing of (key_pos - query_pos): exact for small distances, log-spaced after.

    Bidirectional (encoder) buckets split in half by sign; causal (decoder) buckets see only
    keys at or before the query, so positive offsets collapse to 0.
    """
    n = -relative_position
    bucket = jnp.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    safe_n = jnp.maximum(n, 1).astype(jnp.float32)  # log(0) never reaches the chosen branch
    large = max_exact + (jnp.log(safe_n / max_exact + np.finfo(np.float32).eps)
                         / np.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """Per-head scalar bias by relative-position bucket; one table per stack, shared by layers.

    The bias depends only on (key index - query index), so it is built ONCE per stack as
    [1, heads, q, k] for the whole batch, as T5X does. Packed rows need nothing more: seqio
    positions restart at 0 in every segment and run contiguously, so inside a segment the
    index difference IS the position difference, and pairs across segments are masked.
    """

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query_index: jax.Array, key_index: jax.Array) -> jax.Array:
        """Indices [q] and [k] (int, shared by every row) -> fp32 bias [1, heads, q, k]."""
        table = param(self, "rel_embedding",
                      nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                      (self.num_heads, self.num_buckets), self.param_dtype,
                      ("heads", "relpos_buckets"))
        relative = key_index[None, :] - query_index[:, None]  # [q, k]
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets,
                                           self.max_distance)
        bias = jnp.take(jnp.asarray(table, jnp.float32), buckets, axis=1)  # [h, q, k]
        return bias[None]


class Attention(nn.Module):
    """Multi-head dot-product attention without output scaling (T5).

    `bias` [1, heads, q, k] (fp32) is the relative position bias and `mask` [b|1, 1, q, k]
    (bool) says which keys each query may see; they stay separate so that the stack keeps one
    [1, h, q, k] bias plus a [b, 1, q, k] bool mask alive, not a [b, h, q, k] fp32 array. When
    `decode` is set, this is one step of autoregressive decoding: keys/values of the new
    position are written into the "cache" collection at `decode_index`, and the query attends
    to the whole cache (the caller's bias masks the not-yet-written slots).

    `kv_index` [b] (cross-attention of encode-once scoring): `inputs_kv` holds E distinct
    sequences [E, k, e] and query row i attends to sequence kv_index[i]. Keys/values are
    projected once per sequence and then gathered per row, instead of projecting a copy of
    the sequence for every row (the choices of one example share their input).

    `cache_kv` (cross-attention of greedy decoding): the first call stores the projected
    keys/values [b, k, h, d] in the "cache" collection as `cross_key`/`cross_value`; later
    calls read them instead of projecting the unchanged encoder output again at every step.
    """

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    deterministic: bool = True
    decode: bool = False
    cache_kv: bool = False  # cross-attention while decoding: project inputs_kv once
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, bias: jax.Array | None,
                 mask: jax.Array | None, decode_index: jax.Array | None = None,
                 kv_index: jax.Array | None = None) -> jax.Array:
        h, d = self.num_heads, self.head_dim
        base = default_kernel_init(1.0, "normal")
        # T5X folds 1/sqrt(head_dim) into the query init instead of scaling logits at run
        # time (equivalent under Adafactor); a Python float keeps the param dtype.
        query_init = lambda *a: base(*a) / float(np.sqrt(d))  # noqa: E731
        proj = lambda name, init: Dense(  # noqa: E731
            h * d, ("embed", "joined_kv"), dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=init, name=name)
        split = lambda x: x.reshape(x.shape[:-1] + (h, d))  # noqa: E731  [.., h*d] -> [.., h, d]
        heads_axes = ("batch", "length", "heads", "kv")
        query = constrain(split(proj("query", query_init)(inputs_q)), heads_axes)
        if self.cache_kv and self.has_variable("cache", "cross_key"):
            key = self.get_variable("cache", "cross_key")  # projected at the first step
            value = self.get_variable("cache", "cross_value")
        else:
            key = constrain(split(proj("key", base)(inputs_kv)), heads_axes)
            value = constrain(split(proj("value", base)(inputs_kv)), heads_axes)
            if kv_index is not None:  # [E, k, h, d] -> [b, k, h, d]
                key = constrain(jnp.take(key, kv_index, axis=0), heads_axes)
                value = constrain(jnp.take(value, kv_index, axis=0), heads_axes)
            if self.cache_kv and self.is_mutable_collection("cache"):
                self.put_variable("cache", "cross_key", key)
                self.put_variable("cache", "cross_value", value)
        if self.decode:
            key, value = self._update_cache(key, value, decode_index)

        # [b, h, q, k] in fp32: logits, bias and softmax.
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias
        if mask is not None:
            logits = jnp.where(mask, logits, MASK_VALUE)
        weights = jax.nn.softmax(logits, axis=-1)
        if not self.deterministic and self.dropout_rate > 0:
            # T5X drops whole (head, key) columns shared over queries.
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout_rate,
                                        weights.shape[:-2] + (1,) + weights.shape[-1:])
            weights = weights * keep / (1.0 - self.dropout_rate)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), value)
        out = out.reshape(out.shape[:-2] + (h * d,))  # [b, q, h*d]
        return Dense(inputs_q.shape[-1], ("joined_kv", "embed"), dtype=self.dtype,
                     param_dtype=self.param_dtype, kernel_init=base, name="out")(out)

    def _update_cache(self, key, value, decode_index):
        """Write this step's key/value [b, 1, h, d] at `decode_index`; return the full cache.

        The cache is created (zeros) with the shape of the first call's key/value, which is
        how the caller sizes it: one call with a [b, max_len] input under `jax.eval_shape`.
        """
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape,
                                     value.dtype)
        if not initialized:
            return key, value
        if key.shape[1] != 1:
            raise ValueError(f"decoding feeds one position at a time; got query length "
                             f"{key.shape[1]} (cache {cached_key.value.shape})")
        start = (0, decode_index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        return cached_key.value, cached_value.value
