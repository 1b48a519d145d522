"""Greedy autoregressive decoding with a key/value cache (fixed maximum length).

The decoder runs one position per step in `decode` mode: each self-attention layer writes its
new key/value into the flax "cache" collection at the step index and attends to the filled
prefix. The cache is sized by evaluating one full-length decoder call under `jax.eval_shape`
(no compute), then zero-filled. Cross-attention keys/values are projected once per input: the
first step (run before the loop) stores them in the cache and the later steps read them.
Rows stop at EOS; everything after a row's EOS is 0, and the loop ends early when every row is
done (as Hugging Face `generate` does).
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from t0_jax.model.network import Transformer

CROSS_KV = ("cross_key", "cross_value")  # cross-attention K/V in the cache (layers.Attention)


def _zero_cache(module: Transformer, params, encoded, encoder_tokens, max_len: int):
    """A zero cache shaped for decoding `max_len` positions (shapes via eval_shape)."""
    b = encoder_tokens.shape[0]

    def full_call():
        _, variables = module.apply({"params": params}, encoded, encoder_tokens,
                                    jnp.zeros((b, max_len), jnp.int32),
                                    method=Transformer.decode_logits, mutable=["cache"])
        return variables["cache"]

    shapes = flax.traverse_util.flatten_dict(flax.core.unfreeze(jax.eval_shape(full_call)))
    return flax.traverse_util.unflatten_dict({  # cross K/V: left out, the first step fills them
        path: jnp.zeros(s.shape, s.dtype) for path, s in shapes.items()
        if path[-1] not in CROSS_KV})


def greedy_decode(module: Transformer, params, encoded: jax.Array, encoder_tokens: jax.Array,
                  eos_id: int = 1) -> jax.Array:
    """Argmax decoding from start token 0 -> tokens [b, module.max_decode_length]."""
    max_len = module.max_decode_length
    b = encoder_tokens.shape[0]
    cache = _zero_cache(module, params, encoded, encoder_tokens, max_len)

    def step(state):
        i, cache, current, out, done = state
        logits, variables = module.apply(
            {"params": params, "cache": cache}, encoded, encoder_tokens, current,
            decode_index=i, method=Transformer.decode_logits, mutable=["cache"])
        token = jnp.argmax(logits[:, 0, :], axis=-1).astype(jnp.int32)  # [b]
        token = jnp.where(done, 0, token)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
        done = done | (token == eos_id)
        return i + 1, variables["cache"], token[:, None], out, done

    def not_finished(state):
        i, _, _, _, done = state
        return (i < max_len) & ~jnp.all(done)

    state = (jnp.asarray(0, jnp.int32), cache, jnp.zeros((b, 1), jnp.int32),
             jnp.zeros((b, max_len), jnp.int32), jnp.zeros((b,), bool))
    state = step(state)  # outside the loop: it adds the cross K/V to the cache (new structure)
    return jax.lax.while_loop(not_finished, step, state)[3]
