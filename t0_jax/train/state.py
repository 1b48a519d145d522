"""The training state (step, params, Adafactor state) and where each of its arrays lives.

`StateLayout` is computed once, before anything is allocated: the abstract shapes
(`jax.eval_shape`), the logical axes of every leaf (params from the model, Adafactor slots from
the optimizer) and the NamedSharding those axes map to on the mesh. Initialisation and checkpoint
restore both materialise arrays directly into these shardings, so no device ever holds a full
copy of a model that is partitioned. The layout also carries the logical-axis rules, so every
program compiled for it (init, train step) traces inside `mesh_context(mesh, rules)` and the
model's activation sharding constraints take effect (t0_jax.parallel.mesh).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t0_jax.optim import adafactor as adafactor_lib
from t0_jax.optim import schedules
from t0_jax.parallel import mesh as mesh_lib
from t0_jax.parallel import sharding as sharding_lib

OPTIMIZER_CONTINUITY = ("reset", "restore")


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. `step` is the absolute step (int32 scalar)."""

    step: jax.Array
    params: Any
    opt_state: adafactor_lib.AdafactorState


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The Adafactor transformation and its learning-rate schedule (logged as a metric)."""

    tx: optax.GradientTransformation
    schedule: Callable[[jax.Array], jax.Array]


def make_optimizer(params_axes, learning_rate: float = 1e-3, lr_schedule: str = "constant",
                   warmup_steps: int = 10_000, step_offset: int = 0) -> Optimizer:
    """T5X Adafactor factored along the model's logical axes (REFERENCE.md §6)."""
    schedule = schedules.get_schedule(lr_schedule, learning_rate, warmup_steps, step_offset)
    return Optimizer(adafactor_lib.adafactor(schedule, params_axes), schedule)


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """Abstract TrainState (ShapeDtypeStructs), the TrainState of NamedShardings, and the
    logical-axis rules both the parameter shardings and the activation constraints follow."""

    abstract: TrainState
    shardings: TrainState
    mesh: Mesh
    rules: tuple = ()

    def bind(self, jitted) -> mesh_lib.InMeshContext:
        """`jitted`, always traced and run inside this layout's mesh and rules."""
        return mesh_lib.InMeshContext(jitted, self.mesh, self.rules)

    def per_device_bytes(self) -> int:
        return sharding_lib.shard_bytes(self.abstract, self.shardings)


def _as_specs(axes_tree):
    """Logical-axis tuples → PartitionSpecs, so the AdafactorState NamedTuple (itself a tuple)
    is walked as a container rather than mistaken for one axes leaf."""
    def is_leaf(x):
        return x is None or (isinstance(x, tuple) and not hasattr(x, "_fields"))
    return jax.tree.map(lambda ax: PartitionSpec(*(ax or ())), axes_tree, is_leaf=is_leaf)


def state_layout(model, optimizer: Optimizer, mesh: Mesh, rules: Sequence) -> StateLayout:
    """Shapes and shardings of the whole state; allocates nothing."""
    abstract_params = model.abstract_params()
    params_axes = model.params_axes()
    abstract_opt = jax.eval_shape(optimizer.tx.init, abstract_params)
    opt_axes = _as_specs(adafactor_lib.state_logical_axes(params_axes, abstract_params))
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                          opt_state=abstract_opt)
    shardings = TrainState(
        step=NamedSharding(mesh, PartitionSpec()),
        params=sharding_lib.logical_to_sharding(params_axes, mesh, rules, abstract_params),
        opt_state=sharding_lib.logical_to_sharding(opt_axes, mesh, rules, abstract_opt))
    return StateLayout(abstract, shardings, mesh, tuple(rules))


def abstract_with_shardings(layout: StateLayout) -> TrainState:
    """ShapeDtypeStructs that carry their sharding: the restore target for Orbax."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        layout.abstract, layout.shardings)


def init_state_fn(model, optimizer: Optimizer, layout: StateLayout):
    """Jitted `rng -> TrainState`: random parameters and a fresh optimizer state, created
    directly in their shards (no full copy anywhere). Traced in the layout's mesh context, so
    it is the same constrained model code as the step (init's dummy batch of 1 row is padded)."""
    def init(rng):
        params = model.init_params(rng)
        return TrainState(jnp.zeros((), jnp.int32), params, optimizer.tx.init(params))
    return layout.bind(jax.jit(init, out_shardings=layout.shardings))


def init_state(model, optimizer: Optimizer, layout: StateLayout, seed: int) -> TrainState:
    return init_state_fn(model, optimizer, layout)(jax.random.PRNGKey(seed))


def state_from_params(params, optimizer: Optimizer, layout: StateLayout, *, step: int = 0,
                      opt_state: Optional[adafactor_lib.AdafactorState] = None) -> TrainState:
    """A state from loaded parameters (fine-tuning): placed by the layout's shardings.

    Without `opt_state` the optimizer starts fresh with its counter at `step` (reset continuity
    passes 0; restore continuity passes the checkpoint's step so β2 continues the decay).
    """
    _check_shapes(params, layout.abstract.params, "initial checkpoint parameters")
    params = jax.tree.map(_as_dtype, params, layout.abstract.params)
    params = jax.device_put(params, layout.shardings.params)
    if opt_state is None:
        opt_state = jax.jit(optimizer.tx.init, out_shardings=layout.shardings.opt_state)(params)
    else:
        _check_shapes(opt_state, layout.abstract.opt_state, "initial checkpoint optimizer state")
    # set_step makes a new count array: place it too, or the first step's input shardings differ
    # from every later step's and the train step is compiled twice.
    opt_state = jax.device_put(adafactor_lib.set_step(opt_state, step), layout.shardings.opt_state)
    step_arr = jax.device_put(jnp.asarray(step, jnp.int32), layout.shardings.step)
    return TrainState(step_arr, params, opt_state)


def _as_dtype(x, abstract):
    """Host arrays stay on the host until placed; device arrays are never gathered."""
    if isinstance(x, jax.Array):
        return x if x.dtype == abstract.dtype else x.astype(abstract.dtype)
    return np.asarray(x, abstract.dtype)


def _check_shapes(tree, abstract, what: str) -> None:
    """Compare trees before placing them, with the first mismatching path in the message."""
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    want = jax.tree_util.tree_flatten_with_path(abstract)[0]
    got_paths = {jax.tree_util.keystr(p): np.shape(x) for p, x in got}
    for path, a in want:
        key = jax.tree_util.keystr(path)
        if key not in got_paths:
            raise ValueError(f"{what}: missing {key} (expected shape {a.shape}); the checkpoint "
                             "is for a different model config than the gin MODEL_CONFIG.")
        if tuple(got_paths[key]) != tuple(a.shape):
            raise ValueError(f"{what}: {key} has shape {tuple(got_paths[key])} but the model "
                             f"config needs {tuple(a.shape)}; pick the models/*.gin file that "
                             "matches the checkpoint.")
    if len(got) != len(want):
        extra = sorted(set(got_paths) - {jax.tree_util.keystr(p) for p, _ in want})
        raise ValueError(f"{what}: unexpected entries {extra[:5]}; the checkpoint is for a "
                         "different model config.")
