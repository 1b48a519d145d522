"""The train step: a pure module-level function (T5X habit), wired and jitted by the trainer.

`train_step(state, batch, ...)` computes the loss with `model.loss_fn`, its gradients, the
Adafactor update and the step's metrics. Gradient accumulation splits the batch into
microbatches and sums their gradients with `lax.scan`; because the loss is a SUM of token losses
divided by one normaliser for the whole batch, the accumulated gradient is the full-batch
gradient (up to float summation order).

Dropout randomness is `fold_in(fold_in(PRNGKey(seed), step), microbatch)`: a function of the
absolute step only, so a resumed run draws exactly the masks an uninterrupted run draws.

Metrics (all scalars, summed over the batch where it says `_sum`):
    loss                normalised loss that was differentiated (cross-entropy + z-loss)
    cross_entropy_sum   Σ token cross-entropy × loss weight
    z_loss_sum          Σ z-loss term × loss weight
    weight_sum          Σ loss weights (real target tokens)
    correct_sum         Σ argmax hits × loss weight
    grad_norm           global L2 norm of the (normalised) gradient
    learning_rate       schedule value used for this update
    input_tokens        non-pad encoder tokens (for tokens/s)
    target_tokens       non-pad decoder target tokens
"""
from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp
import optax

from t0_jax.model import cpu_compile
from t0_jax.train.state import Optimizer, TrainState

NUM_REAL_TARGET_TOKENS = "NUM_REAL_TARGET_TOKENS"
Normalizer = Union[None, float, str]


def loss_denominator(batch, loss_normalizing_factor: Normalizer) -> jax.Array:
    """What the summed loss is divided by: 1 (None), a constant (T5X's 233472), or the number
    of real target tokens in the whole batch ("NUM_REAL_TARGET_TOKENS")."""
    if loss_normalizing_factor is None:
        return jnp.asarray(1.0, jnp.float32)
    if loss_normalizing_factor == NUM_REAL_TARGET_TOKENS:
        return jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)
    return jnp.asarray(float(loss_normalizing_factor), jnp.float32)


def split_microbatches(batch, num_microbatches: int):
    """[b, ...] → [m, b/m, ...], microbatch j = rows j, j+m, j+2m, … so that every microbatch
    draws rows from every data shard (no resharding of a block-sharded batch)."""
    def split(x):  # x [b, ...]
        b = x.shape[0]
        x = x.reshape((b // num_microbatches, num_microbatches) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)  # [m, b/m, ...]
    return jax.tree.map(split, batch)


def _microbatch_grads(model, params, batch, rng, z_loss: float, denominator):
    """Gradient of (Σ token loss) / denominator on one (micro)batch, and its summed metrics."""
    def loss(p):
        total, aux = model.loss_fn(p, batch, dropout_rng=rng, z_loss=z_loss,
                                   loss_normalizing_factor=None)
        return total / denominator, aux
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    sums = {"loss": value,
            "cross_entropy_sum": jnp.asarray(aux["cross_entropy"], jnp.float32),
            "z_loss_sum": jnp.asarray(aux["z_loss"], jnp.float32),
            "weight_sum": jnp.asarray(aux["weight_sum"], jnp.float32),
            "correct_sum": jnp.asarray(aux["correct"], jnp.float32)}
    return grads, sums


def accumulate_grads(model, params, batch, rng, *, z_loss: float, denominator,
                     num_microbatches: int):
    """Summed gradients and metrics over `num_microbatches` slices of the batch (lax.scan)."""
    if num_microbatches <= 1:
        return _microbatch_grads(model, params, batch, rng, z_loss, denominator)
    micro = split_microbatches(batch, num_microbatches)
    zeros_g = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    keys = ("loss", "cross_entropy_sum", "z_loss_sum", "weight_sum", "correct_sum")
    zeros_m = {k: jnp.zeros((), jnp.float32) for k in keys}

    def body(carry, xs):
        index, mb = xs
        grads, sums = _microbatch_grads(model, params, mb, jax.random.fold_in(rng, index),
                                        z_loss, denominator)
        acc_g, acc_m = carry
        acc_g = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc_g, grads)
        acc_m = jax.tree.map(jnp.add, acc_m, sums)
        return (acc_g, acc_m), None

    (grads, sums), _ = jax.lax.scan(body, (zeros_g, zeros_m),
                                    (jnp.arange(num_microbatches), micro))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    return grads, sums


def train_step(state: TrainState, batch, *, model, optimizer: Optimizer, dropout_seed: int = 0,
               z_loss: float = 1e-4, loss_normalizing_factor: Normalizer = None,
               num_microbatches: int = 1) -> tuple[TrainState, dict]:
    """One optimizer update. Pure: same inputs → same outputs, whatever the mesh."""
    rng = jax.random.fold_in(jax.random.PRNGKey(dropout_seed), state.step)
    denominator = loss_denominator(batch, loss_normalizing_factor)
    grads, metrics = accumulate_grads(model, state.params, batch, rng, z_loss=z_loss,
                                      denominator=denominator,
                                      num_microbatches=num_microbatches)
    updates, opt_state = optimizer.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = jnp.asarray(optimizer.schedule(state.step), jnp.float32)
    metrics["input_tokens"] = jnp.sum(batch["encoder_input_tokens"] != 0).astype(jnp.float32)
    metrics["target_tokens"] = jnp.sum(batch["decoder_target_tokens"] != 0).astype(jnp.float32)
    return TrainState(state.step + 1, params, opt_state), metrics


def jit_train_step(layout, *, model, optimizer: Optimizer, dropout_seed: int, z_loss: float,
                   loss_normalizing_factor: Normalizer, num_microbatches: int,
                   batch_shardings: Optional[dict] = None):
    """`train_step` compiled for the layout: state donated (updated in place), state outputs
    pinned to the same shardings so every step reuses one compiled program, traced inside the
    layout's mesh and axis rules so the activation sharding constraints are in that program
    (`.lower(state, batch)` shows them)."""
    def step(state, batch):
        return train_step(state, batch, model=model, optimizer=optimizer,
                          dropout_seed=dropout_seed, z_loss=z_loss,
                          loss_normalizing_factor=loss_normalizing_factor,
                          num_microbatches=num_microbatches)
    in_shardings = (layout.shardings, batch_shardings) if batch_shardings else None
    kwargs = {"in_shardings": in_shardings} if in_shardings else {}
    return layout.bind(jax.jit(step, out_shardings=(layout.shardings, None), donate_argnums=(0,),
                               compiler_options=cpu_compile.compiler_options(layout.mesh.devices),
                               **kwargs))
