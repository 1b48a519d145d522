"""The T5 v1.1 encoder-decoder as flax modules, with T5X parameter names.

Parameter tree (unscanned), exactly T5X's:

    token_embedder/embedding                                   [vocab, embed]
    encoder/relpos_bias/rel_embedding                          [heads, relpos_buckets]
    encoder/layers_{i}/pre_attention_layer_norm/scale          [embed]
    encoder/layers_{i}/attention/{query,key,value}/kernel      [embed, joined_kv]
    encoder/layers_{i}/attention/out/kernel                    [joined_kv, embed]
    encoder/layers_{i}/pre_mlp_layer_norm/scale                [embed]
    encoder/layers_{i}/mlp/{wi_0,wi_1}/kernel                  [embed, mlp]
    encoder/layers_{i}/mlp/wo/kernel                           [mlp, embed]
    encoder/encoder_norm/scale                                 [embed]
    decoder/relpos_bias/rel_embedding
    decoder/layers_{i}/{pre_self_attention_layer_norm, self_attention,
        pre_cross_attention_layer_norm, encoder_decoder_attention, pre_mlp_layer_norm, mlp}
    decoder/decoder_norm/scale
    decoder/logits_dense/kernel                                [embed, vocab]

Scanned form (`config.scan_layers=True`): the per-layer subtrees `encoder/layers_{i}/...` are
replaced by ONE subtree `encoder/layers/...` whose arrays carry a leading layer dimension
(logical axis "layers"), e.g. `encoder/layers/attention/query/kernel` [layers, embed,
joined_kv]; likewise `decoder/layers/...`. `t0_jax.model.stacking.scan_params/unscan_params`
convert between the forms.

Masks: encoder self-attention allows same segment & both tokens non-pad; decoder
self-attention is causal & same segment & non-pad targets; cross-attention same segment &
non-pad. Masks (bool [b, 1, q, k]) and the relative-position bias (fp32 [1, h, q, k]) are
built once per stack and shared by its layers (and by every scan/remat iteration). The bias
comes from index differences (k - q), never from the `*_positions` features: seqio positions
restart at 0 in every packed segment and run contiguously, so inside a segment the index
difference equals the position difference, and cross-segment pairs are masked (T5X does the
same). Packed and unpacked batches therefore share one [1, h, q, k] bias, never [b, h, q, k].
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t0_jax.model.config import T5Config
from t0_jax.model.layers import (Attention, Dense, GatedGeluMlp, RelativePositionBias, RMSNorm,
                                 constrain, param)

ACT = ("batch", "length", "embed")


def _remat_policy(name: str):
    return {
        "full": jax.checkpoint_policies.nothing_saveable,
        "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
        "dots_saveable": jax.checkpoint_policies.dots_saveable,
        "dots_with_no_batch_dims_saveable":
            jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[name]


def _layer_stack(layer_cls, cfg: T5Config, num_layers: int, num_inputs: int,
                 collections: tuple[str, ...]):
    """Wrap a layer class for remat and/or scan; returns a class to instantiate per layer."""
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=_remat_policy(cfg.remat_policy),
                             prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
        layer_cls = nn.scan(layer_cls,
                            variable_axes={c: 0 for c in collections},
                            split_rngs={"params": True, "dropout": True},
                            in_axes=(nn.broadcast,) * num_inputs,
                            length=num_layers,
                            metadata_params={nn.PARTITION_NAME: "layers"})
    return layer_cls


class Embed(nn.Module):
    """Token embedding [vocab, embed], N(0, 1) init as in T5X; a gather, not a one-hot matmul."""

    vocab_size: int
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = param(self, "embedding", nn.initializers.normal(stddev=1.0),
                               (self.vocab_size, self.features), self.param_dtype,
                               ("vocab", "embed"))

    def __call__(self, tokens: jax.Array) -> jax.Array:  # [b, l] -> [b, l, e]
        out = jnp.take(jnp.asarray(self.embedding, self.dtype), tokens.astype(jnp.int32), axis=0)
        return constrain(out, ACT)


class EncoderLayer(nn.Module):
    config: T5Config
    deterministic: bool = True
    scanned: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array):
        """x [b, l, e]; relpos bias [1, h, l, l] fp32; mask [b, 1, l, l] bool."""
        cfg = self.config
        kw = dict(dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype)
        drop = lambda y: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(  # noqa: E731
            y, deterministic=self.deterministic)
        y = RMSNorm(cfg.layer_norm_epsilon, name="pre_attention_layer_norm", **kw)(x)
        y = Attention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, self.deterministic,
                      name="attention", **kw)(y, y, bias, mask)
        x = constrain(x + drop(y), ACT)
        y = RMSNorm(cfg.layer_norm_epsilon, name="pre_mlp_layer_norm", **kw)(x)
        y = GatedGeluMlp(cfg.mlp_dim, cfg.dropout_rate, self.deterministic, name="mlp", **kw)(y)
        x = constrain(x + drop(y), ACT)
        return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
    config: T5Config
    deterministic: bool = True
    decode: bool = False
    scanned: bool = False

    @nn.compact
    def __call__(self, x, encoded, self_bias, self_mask, cross_mask, decode_index,
                 encoder_index=None):
        """x [b, q, e], encoded [b, k, e] (or [E, k, e] with encoder_index [b] naming each
        row's encoder row), self_bias [1, h, q, q|L] fp32, self_mask [b|1, 1, q, q|L] and
        cross_mask [b, 1, q, k] bool."""
        cfg = self.config
        kw = dict(dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype)
        drop = lambda y: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(  # noqa: E731
            y, deterministic=self.deterministic)
        y = RMSNorm(cfg.layer_norm_epsilon, name="pre_self_attention_layer_norm", **kw)(x)
        y = Attention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, self.deterministic,
                      decode=self.decode, name="self_attention", **kw)(y, y, self_bias,
                                                                       self_mask, decode_index)
        x = constrain(x + drop(y), ACT)
        y = RMSNorm(cfg.layer_norm_epsilon, name="pre_cross_attention_layer_norm", **kw)(x)
        y = Attention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, self.deterministic,
                      cache_kv=self.decode, name="encoder_decoder_attention", **kw)(
            y, encoded, None, cross_mask, kv_index=encoder_index)
        x = constrain(x + drop(y), ACT)
        y = RMSNorm(cfg.layer_norm_epsilon, name="pre_mlp_layer_norm", **kw)(x)
        y = GatedGeluMlp(cfg.mlp_dim, cfg.dropout_rate, self.deterministic, name="mlp", **kw)(y)
        x = constrain(x + drop(y), ACT)
        return (x, None) if self.scanned else x


def _same_segment(q_segments, k_segments):
    """[b, q], [b, k] -> [b, 1, q, k] bool, or None when unpacked."""
    if q_segments is None or k_segments is None:
        return None
    return (q_segments[:, :, None] == k_segments[:, None, :])[:, None]


def _pair_mask(q_valid, k_valid, *more):
    """AND of [b, 1, q, k] masks built from per-token validity and optional extra masks."""
    mask = (q_valid[:, :, None] & k_valid[:, None, :])[:, None]
    for m in more:
        if m is not None:
            mask = mask & m
    return mask


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module
    deterministic: bool = True

    @nn.compact
    def __call__(self, tokens, segment_ids=None):  # [b, l] -> [b, l, e]
        cfg = self.config
        relpos = RelativePositionBias(cfg.num_heads, cfg.relative_attention_num_buckets,
                                      cfg.relative_attention_max_distance, bidirectional=True,
                                      param_dtype=cfg.parameter_dtype, name="relpos_bias")
        valid = tokens > 0
        mask = _pair_mask(valid, valid, _same_segment(segment_ids, segment_ids))
        index = jnp.arange(tokens.shape[1], dtype=jnp.int32)  # [l]
        bias = relpos(index, index)  # [1, h, l, l] fp32, once per stack

        x = self.shared_embedding(tokens)
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, self.deterministic)
        x = x.astype(cfg.activation_dtype)
        layer = _layer_stack(EncoderLayer, cfg, cfg.num_encoder_layers, 2, ("params",))
        if cfg.scan_layers:
            x, _ = layer(cfg, self.deterministic, scanned=True, name="layers")(x, bias, mask)
        else:
            for i in range(cfg.num_encoder_layers):
                x = layer(cfg, self.deterministic, name=f"layers_{i}")(x, bias, mask)
        x = RMSNorm(cfg.layer_norm_epsilon, dtype=cfg.activation_dtype,
                    param_dtype=cfg.parameter_dtype, name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, self.deterministic)


class Decoder(nn.Module):
    """Decoder stack and logits. With `decode`, one step against the "cache" collection."""

    config: T5Config
    shared_embedding: nn.Module
    deterministic: bool = True
    decode: bool = False
    max_decode_length: int = 0

    @nn.compact
    def __call__(self, encoded, encoder_tokens, input_tokens, target_tokens=None,
                 encoder_segment_ids=None, segment_ids=None, decode_index=None,
                 encoder_index=None):
        """encoded [b, k, e], input_tokens [b, q] -> fp32 logits [b, q, vocab].

        With `encoder_index` [b], `encoded` [E, k, e] and `encoder_tokens` [E, k] hold E
        distinct inputs and row i decodes against input encoder_index[i]: cross-attention
        keys/values are projected once per input (encode-once scoring), not once per row.
        """
        cfg = self.config
        relpos = RelativePositionBias(cfg.num_heads, cfg.relative_attention_num_buckets,
                                      cfg.relative_attention_max_distance, bidirectional=False,
                                      param_dtype=cfg.parameter_dtype, name="relpos_bias")
        b, q = input_tokens.shape
        if self.decode and q == 1:
            self_bias, self_mask = self._step_bias(relpos, decode_index)
            q_valid = jnp.ones((b, 1), bool)
        else:
            q_valid = target_tokens > 0 if target_tokens is not None else jnp.ones((b, q), bool)
            causal = (jnp.arange(q)[:, None] >= jnp.arange(q)[None, :])[None, None]
            self_mask = _pair_mask(q_valid, q_valid, causal,
                                   _same_segment(segment_ids, segment_ids))  # [b, 1, q, q]
            index = jnp.arange(q, dtype=jnp.int32)  # [q]
            self_bias = relpos(index, index)  # [1, h, q, q]
        if encoder_index is not None:
            encoder_index = encoder_index.astype(jnp.int32)
            encoder_tokens = jnp.take(encoder_tokens, encoder_index, axis=0)  # [b, k]
            if encoder_segment_ids is not None:
                encoder_segment_ids = jnp.take(encoder_segment_ids, encoder_index, axis=0)
        cross_mask = _pair_mask(q_valid, encoder_tokens > 0,
                                _same_segment(segment_ids, encoder_segment_ids))

        y = self.shared_embedding(input_tokens)
        y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, self.deterministic)
        y = y.astype(cfg.activation_dtype)
        encoded = encoded.astype(cfg.activation_dtype)
        layer = _layer_stack(DecoderLayer, cfg, cfg.num_decoder_layers, 6, ("params", "cache"))
        args = (encoded, self_bias, self_mask, cross_mask, decode_index, encoder_index)
        if cfg.scan_layers:
            y, _ = layer(cfg, self.deterministic, self.decode, scanned=True, name="layers")(
                y, *args)
        else:
            for i in range(cfg.num_decoder_layers):
                y = layer(cfg, self.deterministic, self.decode, name=f"layers_{i}")(y, *args)
        y = RMSNorm(cfg.layer_norm_epsilon, dtype=cfg.activation_dtype,
                    param_dtype=cfg.parameter_dtype, name="decoder_norm")(y)
        y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, self.deterministic)
        logits = Dense(cfg.vocab_size, ("embed", "vocab"), dtype=jnp.float32,
                       param_dtype=cfg.parameter_dtype, name="logits_dense")(y)
        return constrain(logits, ("batch", "length", "vocab"))

    def _step_bias(self, relpos, decode_index):
        """Bias [1, h, 1, L] and mask [1, 1, 1, L] for the query at `decode_index` against
        all L cache slots (only the slots written so far are visible)."""
        if self.max_decode_length <= 0:
            raise ValueError("Decoder(decode=True) needs max_decode_length > 0 (cache length)")
        keys = jnp.arange(self.max_decode_length, dtype=jnp.int32)  # [L]
        query = jnp.reshape(decode_index, (1,)).astype(jnp.int32)  # [1]
        allowed = (keys <= query)[None, None, None, :]  # [1, 1, 1, L]
        return relpos(query, keys), allowed


class Transformer(nn.Module):
    """Shared token embedder + encoder + decoder (the T5X `Transformer`)."""

    config: T5Config
    deterministic: bool = True
    decode: bool = False
    max_decode_length: int = 0

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.activation_dtype,
                                    param_dtype=cfg.parameter_dtype)
        self.encoder = Encoder(cfg, self.token_embedder, self.deterministic)
        self.decoder = Decoder(cfg, self.token_embedder, self.deterministic, self.decode,
                               max_decode_length=self.max_decode_length)

    def encode(self, tokens, segment_ids=None):
        return self.encoder(tokens, segment_ids)

    def decode_logits(self, encoded, encoder_tokens, input_tokens, target_tokens=None,
                      encoder_segment_ids=None, segment_ids=None, decode_index=None,
                      encoder_index=None):
        return self.decoder(encoded, encoder_tokens, input_tokens, target_tokens,
                            encoder_segment_ids, segment_ids, decode_index, encoder_index)

    def __call__(self, batch: dict[str, jax.Array]) -> jax.Array:
        encoded = self.encode(batch["encoder_input_tokens"], batch.get("encoder_segment_ids"))
        return self.decode_logits(encoded, batch["encoder_input_tokens"],
                                  batch["decoder_input_tokens"],
                                  batch.get("decoder_target_tokens"),
                                  batch.get("encoder_segment_ids"),
                                  batch.get("decoder_segment_ids"))
