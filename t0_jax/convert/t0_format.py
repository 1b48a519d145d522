"""Our own checkpoint format: a self-describing Orbax directory.

    DST/
      params/          Orbax PyTree item: the parameter tree (T5X names, docs/internals.md)
      model_config/    Orbax JSON item: {"config": T5Config.to_dict(), "step": int|None,
                                         "vocab": "spiece.model"|None, "format": "t0_jax"}
      opt_state_t5x/   optional Orbax PyTree item: T5X Adafactor slots (see LoadedCheckpoint)
      spiece.model     the SentencePiece vocabulary, copied in so the directory stands alone

The trainer's `orbax.checkpoint.CheckpointManager` writes the same layout per step
(`MODEL_DIR/<step>/params`, `MODEL_DIR/<step>/model_config`, plus its own items such as
`opt_state`), so `load_t0` reads a trainer step directory too: the item names and the JSON
keys are the contract, nothing else is.

DST may be local or on object storage (`gs://...`): Orbax writes and reads it natively, and the
vocabulary is copied and found through `t0_jax.storage`.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from t0_jax import storage
from t0_jax.convert import layout
from t0_jax.convert.loaded import LoadedCheckpoint, resolve_dtype
from t0_jax.model.config import T5Config

PARAMS_ITEM = "params"
CONFIG_ITEM = "model_config"
OPT_STATE_T5X_ITEM = "opt_state_t5x"
VOCAB_FILE = "spiece.model"
FORMAT_NAME = "t0_jax"


def _checkpointer() -> ocp.Checkpointer:
    """Explicit handlers per item, so items written by StandardSave or PyTreeSave both load."""
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
        **{PARAMS_ITEM: ocp.PyTreeCheckpointHandler(),
           CONFIG_ITEM: ocp.JsonCheckpointHandler(),
           OPT_STATE_T5X_ITEM: ocp.PyTreeCheckpointHandler()}))


def config_json(config: T5Config, step: int | None, vocab: str | None) -> dict[str, Any]:
    """The `model_config` item (the trainer writes the same dict with JsonSave)."""
    return {"format": FORMAT_NAME, "config": config.to_dict(),
            "step": None if step is None else int(step), "vocab": vocab}


def save_checkpoint(path: str | os.PathLike, params: dict[str, Any], config: T5Config,
                    vocab_path: str | os.PathLike | None = None, step: int | None = None,
                    opt_state_t5x: dict[str, Any] | None = None, force: bool = False) -> str:
    """Write `params` (+ config, vocabulary, optional T5X optimizer slots) to `path`."""
    path = storage.absolute(path)
    if vocab_path is not None and not storage.isfile(vocab_path):
        raise FileNotFoundError(f"vocabulary file {vocab_path} does not exist; pass the "
                                "SentencePiece .model file or leave the vocabulary out.")
    items = {PARAMS_ITEM: ocp.args.PyTreeSave(params),
             CONFIG_ITEM: ocp.args.JsonSave(
                 config_json(config, step, VOCAB_FILE if vocab_path else None))}
    if opt_state_t5x is not None:  # its step is the checkpoint's step, kept in the JSON
        items[OPT_STATE_T5X_ITEM] = ocp.args.PyTreeSave(
            {"param_states": opt_state_t5x["param_states"]})
    _checkpointer().save(path, args=ocp.args.Composite(**items), force=force)
    if vocab_path is not None and jax.process_index() == 0:
        storage.copy(vocab_path, storage.join(path, VOCAB_FILE))
    return path


def is_t0_checkpoint(path: str | os.PathLike) -> bool:
    return (storage.isdir(storage.join(path, PARAMS_ITEM))
            and storage.isdir(storage.join(path, CONFIG_ITEM)))


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The `model_config` JSON item of a checkpoint (or trainer step) directory."""
    path = storage.absolute(path)
    if not is_t0_checkpoint(path):
        raise layout.CheckpointFormatError(
            f"{path} is not a t0_jax checkpoint: it needs the Orbax items {PARAMS_ITEM}/ and "
            f"{CONFIG_ITEM}/. Convert other formats with `t0-convert`.")
    meta = _checkpointer().restore(path, args=ocp.args.Composite(
        **{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]
    if not isinstance(meta, dict) or "config" not in meta:
        raise layout.CheckpointFormatError(
            f"{storage.join(path, CONFIG_ITEM)} holds {meta!r}, not a JSON object with a "
            "'config' key "
            "(T5Config.to_dict()); the trainer must save it with ocp.args.JsonSave.")
    return meta


def _stored_shapes(path: str, item: str) -> dict[str, Any]:
    """Orbax array metadata of one PyTree item, flat by path (no array is read)."""
    try:
        metadata = _checkpointer().metadata(path).item_metadata[item]
    except (ValueError, OSError) as e:  # tensorstore: missing or damaged files
        raise _damaged(path, e) from e
    if metadata is None:
        raise layout.CheckpointFormatError(
            f"{storage.join(path, item)} could not be read as an Orbax PyTree.")
    return layout.flatten(dict(metadata.tree))


def _damaged(path: str, error: Exception) -> layout.CheckpointFormatError:
    reason = str(error).splitlines()[0][:160]
    return layout.CheckpointFormatError(
        f"{path} could not be read: files of this Orbax checkpoint are missing or damaged "
        f"({reason}...); copy or convert it again.")


def _restore_args(flat_meta: dict[str, Any], dtype: np.dtype | None,
                  shardings: dict[str, Any] | None) -> dict[str, Any]:
    """Host numpy arrays by default; jax.Arrays laid out by `shardings` (flat or nested)."""
    if shardings is None:
        return {p: ocp.RestoreArgs(restore_type=np.ndarray, dtype=dtype) for p in flat_meta}
    flat_shardings = layout.flatten(shardings)  # already-flat "a/b" keys pass through
    return {p: ocp.ArrayRestoreArgs(sharding=flat_shardings[p], global_shape=m.shape, dtype=dtype)
            for p, m in flat_meta.items()}


def _step_from_name(path: str) -> int | None:
    """CheckpointManager step directories are named by the step number."""
    name = storage.basename(path)
    return int(name) if name.isdigit() else None


def load_t0(path: str | os.PathLike, dtype: Any = None, shardings: dict[str, Any] | None = None,
            with_optimizer_state: bool = False) -> LoadedCheckpoint:
    """Read our format (or a trainer step directory); names and shapes are checked first."""
    path = storage.absolute(path)
    meta = read_config(path)
    config = T5Config.from_dict(meta["config"])
    flat_meta = _stored_shapes(path, PARAMS_ITEM)
    layout.check_shapes({p: tuple(m.shape) for p, m in flat_meta.items()}, config,
                        f"t0_jax checkpoint {path}")  # scanned or not, as config.scan_layers says
    if shardings is not None and set(layout.flatten(shardings)) != set(flat_meta):
        extra = sorted(set(layout.flatten(shardings)) ^ set(flat_meta))[:5]
        raise ValueError(
            f"shardings for {path} must cover exactly its parameters (scan_layers="
            f"{config.scan_layers}); these differ: {extra}. Build them from the checkpoint's "
            "own config (t0_format.read_config), or load without shardings and re-lay them.")
    items = {PARAMS_ITEM: ocp.args.PyTreeRestore(restore_args=layout.unflatten(
        _restore_args(flat_meta, resolve_dtype(dtype), shardings)))}
    if with_optimizer_state and storage.isdir(storage.join(path, OPT_STATE_T5X_ITEM)):
        opt_meta = _stored_shapes(path, OPT_STATE_T5X_ITEM)
        items[OPT_STATE_T5X_ITEM] = ocp.args.PyTreeRestore(restore_args=layout.unflatten(
            {p: ocp.RestoreArgs(restore_type=np.ndarray) for p in opt_meta}))
    try:
        restored = _checkpointer().restore(path, args=ocp.args.Composite(**items))
    except (ValueError, OSError) as e:  # tensorstore: missing or damaged array files
        raise _damaged(path, e) from e
    vocab = meta.get("vocab")
    vocab_path = None if vocab is None else _beside(path, vocab)
    step = meta.get("step")
    return LoadedCheckpoint(
        params=restored[PARAMS_ITEM], config=config,
        vocab_path=vocab_path if vocab_path and storage.isfile(vocab_path) else None,
        step=_step_from_name(path) if step is None else int(step),
        opt_state=_with_step(restored.get(OPT_STATE_T5X_ITEM), step) if with_optimizer_state
        else None,
        source_format="t0_jax")


def _beside(path: str, relative: str) -> str:
    """`relative` (e.g. a trainer step's "../spiece.model") resolved against `path`; object
    stores do not resolve "..", so it is done here. An absolute `relative` stays as it is."""
    if relative.startswith("/") or storage.is_remote(relative):
        return relative
    parts = relative.split("/")
    while parts and parts[0] == "..":
        path, parts = storage.dirname(path), parts[1:]
    return storage.join(path, *parts)


def _with_step(opt_state: dict[str, Any] | None, step: int | None) -> dict[str, Any] | None:
    if opt_state is None:
        return None
    return {"step": step, **opt_state}
