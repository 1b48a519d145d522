"""Non-finite loss and parameters stop training before that state can be saved, so the newest
checkpoint is always a good one."""
from __future__ import annotations

import math
from typing import Mapping

import jax

from t0_jax.train import checkpoints
from t0_jax.train.state import TrainState


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the newest checkpoint (if any) predates it."""


def finite_or_raise(values: Mapping[str, float], step: int, ckpt, model_dir,
                    what: str = "") -> None:
    loss = float(values["loss"])
    if math.isfinite(loss):
        return
    what = what or f"loss is {loss}"
    ckpt.wait()
    last = ckpt.latest_step()
    where = (f"the last good checkpoint is {checkpoints.step_directory(model_dir, last)}"
             if last is not None else "no checkpoint was written yet")
    raise NonFiniteLossError(
        f"{what} at step {step}; training stopped and this state was NOT saved "
        f"({where}). Lower LEARNING_RATE, check the data, keep activations in bfloat16/float32 "
        "(not float16), or set a LOSS_NORMALIZING_FACTOR; rerunning resumes from that checkpoint.")


@jax.jit
def all_finite(tree) -> jax.Array:
    return jax.tree.reduce(lambda a, b: a & b,
                           jax.tree.map(lambda x: jax.numpy.isfinite(x).all(), tree), True)


def params_finite_or_raise(state: TrainState, step: int, ckpt, model_dir) -> None:
    """The loss of step t is computed BEFORE update t, so a bad last update (e.g. a NaN
    learning rate) shows only in the parameters: checked before they are saved."""
    if bool(all_finite(state.params)):
        return
    finite_or_raise({"loss": float("nan")}, step, ckpt, model_dir,
                     what="the parameters became non-finite")
