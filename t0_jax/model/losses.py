"""Token losses and log-likelihoods, always in fp32 over the full vocabulary.

Training loss (T5X): per token, cross entropy  log Z - logit[target]  plus the z-loss
`z_loss * (log Z)^2`, which keeps the softmax normaliser near 1 so bf16 logits stay accurate.
Both are multiplied by the token weights and SUMMED (T5X does not average per token; a
constant `loss_normalizing_factor` is applied by the caller). Scoring uses plain log p.

Everything here reads the [b, l, vocab] logits in ONE log-softmax (`token_stats`): with a
32k vocabulary those passes, not the model, dominate a small model's step on a CPU.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class TokenStats(NamedTuple):
    """Per-position statistics of the logits, each [b, l] fp32."""

    log_z: jax.Array  # log Σ_v exp(logit_v)
    target_logit: jax.Array  # logit of the target token
    max_logit: jax.Array  # max_v logit_v (no gradient)


def token_stats(logits: jax.Array, targets: jax.Array) -> TokenStats:
    """logits [b, l, v] (any float dtype; computed in fp32), targets [b, l] -> TokenStats.

    The max is both the logsumexp shift and the accuracy test (target logit == max), so the
    vocabulary is reduced twice (max, Σ exp) and never arg-maxed.
    """
    logits = logits.astype(jnp.float32)
    max_logit = jax.lax.stop_gradient(jnp.max(logits, axis=-1))  # [b, l]
    sum_exp = jnp.sum(jnp.exp(logits - max_logit[..., None]), axis=-1)  # [b, l]
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32),
                                       axis=-1)[..., 0]
    return TokenStats(jnp.log(sum_exp) + max_logit, target_logit, max_logit)


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) per position: logits [b, l, v], targets [b, l] -> [b, l] fp32."""
    stats = token_stats(logits, targets)
    return stats.target_logit - stats.log_z


def cross_entropy_with_z_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                              z_loss: float = 1e-4):
    """Weighted sums over tokens -> (total_loss incl. z-loss, total_z_loss, weight_sum, correct).

    logits [b, l, v], targets [b, l] int, weights [b, l]. `correct` is Σ weights over positions
    whose target has the largest logit (token accuracy numerator; an exact tie with another
    token counts as correct, where argmax would pick the lower id).
    """
    stats = token_stats(logits, targets)
    weights = weights.astype(jnp.float32)
    z_term = z_loss * jnp.square(stats.log_z)
    per_token = (stats.log_z - stats.target_logit) + z_term
    hits = (stats.target_logit >= stats.max_logit).astype(jnp.float32)
    return (jnp.sum(per_token * weights), jnp.sum(z_term * weights), jnp.sum(weights),
            jnp.sum(hits * weights))
