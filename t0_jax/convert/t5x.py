"""Read T5X checkpoints (both on-disk forms) into T5X-named numpy parameters.

A T5X checkpoint is a msgpack file written with flax.serialization:
    {"version": 3, "optimizer": {"target": params,
                                 "state": {"step": int, "param_states": {path: {v_row, v_col, v, m}}}}}
- legacy form (e.g. t5x/testdata/test_t5_tiny.checkpoint_0): every array is inline in the msgpack.
- tensorstore form (the public `checkpoint_1100000` directories): `DIR/checkpoint` holds the same
  tree, but each partitioned array is replaced by a TensorStore spec (a dict with `driver`
  "zarr", `kvstore` {"driver": "file"|"gcs", "path": "target.encoder.layers_0.attention.key.kernel"}
  and `metadata` {shape, chunks, dtype, compressor}); the path is RELATIVE to `DIR`, so the
  directory can be moved or downloaded from GCS. Small unpartitioned values (the step) stay inline.
Version < 3 stored bfloat16 arrays as uint16 in TensorStore; they are reinterpreted.

T5X's scanned-layers form puts all layers of a stack under `encoder/encoder/...` with the layers
axis at position 1 (an XLA layout choice); it is split back into `encoder/layers_{i}/...` here,
so every converter downstream sees the per-layer layout.

The checkpoint may be local or on object storage: the msgpack file is read through
`t0_jax.storage`, and tensorstore opens each array where it lies (`gs://` natively), so a
public `gs://.../checkpoint_1100000` converts without downloading it first.
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any, Mapping

import numpy as np

from t0_jax import storage
from t0_jax.convert import layout
from t0_jax.convert.loaded import LoadedCheckpoint, cast_flat, resolve_dtype, tensor_progress
from t0_jax.model.config import T5Config

CHECKPOINT_FILE = "checkpoint"
T5X_SCAN_AXIS = 1
_SCANNED = re.compile(r"^(encoder|decoder)/\1/(.*)$")


def find_checkpoint_file(path: str | os.PathLike) -> str:
    """A msgpack file, or a T5X `checkpoint_<step>` directory holding `checkpoint`."""
    path = os.fspath(path)
    if storage.isfile(path):
        return path
    if storage.isfile(storage.join(path, CHECKPOINT_FILE)):
        return storage.join(path, CHECKPOINT_FILE)
    raise layout.CheckpointFormatError(
        f"{path} is not a T5X checkpoint: expected a msgpack file or a directory containing a "
        f"'{CHECKPOINT_FILE}' file (e.g. .../checkpoint_1100000/).")


def read_state(file: str) -> dict[str, Any]:
    """The msgpack tree (TensorStore-backed arrays still as spec dicts)."""
    from flax import serialization  # noqa: PLC0415

    data = storage.read_bytes(file)  # whole, as msgpack needs it: one sequential read
    try:
        state = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise layout.CheckpointFormatError(
            f"{file} is not a T5X msgpack checkpoint ({type(e).__name__}: {e}).") from e
    if not isinstance(state, dict) or "target" not in state.get("optimizer", {}):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise layout.CheckpointFormatError(
            f"{file} has no optimizer/target tree (found {keys}); it is not a T5X checkpoint.")
    return state


def is_ts_spec(leaf: Any) -> bool:
    return isinstance(leaf, Mapping) and "driver" in leaf and ("kvstore" in leaf or "path" in leaf)


def flatten_state(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Like layout.flatten, but TensorStore spec dicts are leaves."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping) and not is_ts_spec(value):
            out.update(flatten_state(value, path))
        else:
            out[path] = value
    return out


def leaf_shape(leaf: Any) -> tuple[int, ...]:
    if is_ts_spec(leaf):
        return tuple(int(d) for d in leaf["metadata"]["shape"])
    return tuple(np.shape(leaf))


def absolute_spec(spec: Mapping[str, Any], ckpt_dir: str) -> dict[str, Any]:
    """Point a stored (relative, maybe GCS) spec at the array under `ckpt_dir`, wherever that
    lies: a `file` kvstore for a local folder, tensorstore's URL form (`gs://bucket/path/`)
    for object storage."""
    spec = copy.deepcopy(dict(spec))
    kvstore = spec.get("kvstore", {})
    relative = kvstore.get("path") if isinstance(kvstore, Mapping) else None
    relative = relative or spec.get("path")  # tensorstore < 0.1.14 kept `path` at top level
    if relative is None:
        raise layout.CheckpointFormatError(f"TensorStore spec without a path in {ckpt_dir}: {spec}")
    spec.pop("path", None)
    # join keeps the trailing "/" that marks a zarr directory prefix
    where = storage.join(ckpt_dir, relative.lstrip("/"))
    spec["kvstore"] = where if storage.is_remote(where) else {"driver": "file", "path": where}
    return spec


def _kvstore_path(spec: Mapping[str, Any]) -> str:
    kvstore = spec["kvstore"]
    return kvstore if isinstance(kvstore, str) else kvstore["path"]


def read_leaf(leaf: Any, ckpt_dir: str, version: int) -> np.ndarray:
    """An inline array as is; a TensorStore one read from disk (whole array)."""
    if not is_ts_spec(leaf):
        return np.asarray(leaf)
    import tensorstore as ts  # noqa: PLC0415 - orbax depends on it, so it is installed

    spec = absolute_spec(leaf, ckpt_dir)
    if not storage.exists(_kvstore_path(spec)):
        raise FileNotFoundError(
            f"T5X array {_kvstore_path(spec)} is missing; copy the whole checkpoint directory "
            f"(the msgpack file and its target.* / state.* subdirectories).")
    array = ts.open(spec, open=True, read=True).result().read().result()
    if version < 3 and array.dtype == np.uint16:  # bfloat16 bits before T5X checkpoint v3
        array = array.view(resolve_dtype("bfloat16"))
    return np.asarray(array)


def unscan_plan(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[str, int | None, tuple]]:
    """Per-layer path → (stored path, layer index or None, per-layer shape); no array is read."""
    plan = {}
    for path, shape in shapes.items():
        m = _SCANNED.match(path)
        if m is None:
            plan[path] = (path, None, tuple(shape))
            continue
        per_layer = tuple(shape[:T5X_SCAN_AXIS]) + tuple(shape[T5X_SCAN_AXIS + 1:])
        for i in range(shape[T5X_SCAN_AXIS]):
            plan[f"{m.group(1)}/layers_{i}/{m.group(2)}"] = (path, i, per_layer)
    return plan


def _read_params(flat: dict[str, Any], plan: dict[str, tuple], ckpt_dir: str,
                 version: int, progress: bool) -> dict[str, np.ndarray]:
    """Read each stored array once (a scanned stack serves all its layers)."""
    out, stacked = {}, {}
    for path in tensor_progress(sorted(plan), progress, "reading T5X arrays", len(plan)):
        stored, index, _ = plan[path]
        if index is None:
            out[path] = read_leaf(flat[stored], ckpt_dir, version)
            continue
        if stored not in stacked:
            stacked = {stored: read_leaf(flat[stored], ckpt_dir, version)}  # keep one stack
        out[path] = np.ascontiguousarray(np.take(stacked[stored], index, axis=T5X_SCAN_AXIS))
    return out


def _read_opt_state(state: dict[str, Any], plan: dict[str, tuple], ckpt_dir: str,
                    version: int, source: str) -> dict[str, Any]:
    """Adafactor slots (v_row, v_col, v, and m if stored) per parameter, as T5X stored them."""
    if any(index is not None for _, index, _ in plan.values()):
        raise layout.CheckpointFormatError(
            f"{source}: optimizer state of a scanned-layers T5X checkpoint is not supported "
            "(its factored slots carry the layers axis); convert without --with_optimizer_state.")
    param_states = state["optimizer"].get("state", {}).get("param_states")
    if not isinstance(param_states, Mapping):
        raise layout.CheckpointFormatError(
            f"{source} has no optimizer/state/param_states (not a t5x.adafactor checkpoint); "
            "convert without --with_optimizer_state.")
    flat = flatten_state(param_states)
    missing = [f"{p}/{s}" for p in plan for s in ("v_row", "v_col", "v") if f"{p}/{s}" not in flat]
    if missing:
        raise layout.CheckpointMismatchError(
            f"{source}: optimizer state lacks {len(missing)} slot(s): {missing[:20]}")
    # `m` (momentum) is kept when stored, so a resuming trainer can refuse a beta1 checkpoint
    slots = {f"{p}/{s}": read_leaf(flat[f"{p}/{s}"], ckpt_dir, version)
             for p in plan for s in ("v_row", "v_col", "v", "m") if f"{p}/{s}" in flat}
    return layout.unflatten(slots)


def _step(state: dict[str, Any]) -> int | None:
    step = state["optimizer"].get("state", {}).get("step")
    return None if step is None or is_ts_spec(step) else int(np.asarray(step))


def load_t5x(path: str | os.PathLike, config: T5Config | None = None, dtype: Any = None,
             with_optimizer_state: bool = False, progress: bool = False) -> LoadedCheckpoint:
    """Load a T5X checkpoint; the config is read off the shapes unless `config` is given.

    Every name and shape is checked against the config before any TensorStore array is read.
    """
    file = find_checkpoint_file(path)
    source = f"T5X checkpoint {file}"
    state = read_state(file)
    version = int(state.get("version", 3))
    flat = flatten_state(state["optimizer"]["target"])
    plan = unscan_plan({p: leaf_shape(v) for p, v in flat.items()})
    shapes = {p: s for p, (_, _, s) in plan.items()}
    if config is None:
        config = layout.infer_config(shapes, source)
    layout.check_shapes(shapes, config.replace(scan_layers=False), source)
    params = cast_flat(_read_params(flat, plan, storage.dirname(file), version, progress), dtype)
    step = _step(state)
    opt_state = None
    if with_optimizer_state:
        opt_state = {"step": step,
                     "param_states": _read_opt_state(state, plan, storage.dirname(file), version, source)}
    return LoadedCheckpoint(params=layout.unflatten(params), config=config.replace(scan_layers=False),
                            vocab_path=None, step=step, opt_state=opt_state, source_format="t5x")
