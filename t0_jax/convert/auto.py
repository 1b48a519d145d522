"""One entry point for every checkpoint format: look at the disk, pick the reader.

    our Orbax directory / trainer step dir   params/ + model_config/          → t0_format
    CheckpointManager root (trainer MODEL_DIR) numbered step dirs            → latest step
    Hugging Face T5 directory                config.json + weights           → hf
    T5X                                      msgpack file, or a dir with `checkpoint`,
                                             or a model dir of checkpoint_<step>/ → latest step

Paths are strings, local or on object storage (`gs://...`): detection lists and tests files
through `t0_jax.storage`, so a bucket is read like a disk.
"""
from __future__ import annotations

import os
import re
from typing import Any

from t0_jax import storage
from t0_jax.convert import hf, layout, t0_format, t5x
from t0_jax.convert.loaded import LoadedCheckpoint
from t0_jax.model.config import T5Config

FORMATS = ("t0_jax", "huggingface", "t5x")


def _latest(path: str, pattern: str, accept) -> str | None:
    """The highest-numbered child directory matching `pattern` that `accept`s."""
    steps = []
    for name in storage.listdir(path):
        m = re.fullmatch(pattern, name)
        child = storage.join(path, name)
        if m and accept(child):
            steps.append((int(m.group(1)), child))
    return max(steps)[1] if steps else None


def resolve(path: str | os.PathLike) -> tuple[str, str]:
    """(format, concrete path) for a checkpoint path; a run directory resolves to its latest step."""
    path = os.fspath(path)
    if not storage.exists(path):
        raise FileNotFoundError(f"checkpoint path {path} does not exist.")
    if storage.isfile(path):
        return "t5x", path
    if t0_format.is_t0_checkpoint(path):
        return "t0_jax", path
    if storage.isfile(storage.join(path, hf.CONFIG_FILE)):
        return "huggingface", path
    if storage.isfile(storage.join(path, t5x.CHECKPOINT_FILE)):
        return "t5x", path
    step_dir = _latest(path, r"(\d+)", t0_format.is_t0_checkpoint)
    if step_dir is not None:
        return "t0_jax", step_dir
    step_dir = _latest(path, r"checkpoint_(\d+)",
                       lambda d: storage.isfile(storage.join(d, t5x.CHECKPOINT_FILE)))
    if step_dir is not None:
        return "t5x", step_dir
    raise layout.CheckpointFormatError(
        f"{path} is not a checkpoint this code can read. Looked for: a t0_jax/Orbax directory "
        f"({t0_format.PARAMS_ITEM}/ + {t0_format.CONFIG_ITEM}/, or numbered step directories "
        f"holding them), a Hugging Face directory ({hf.CONFIG_FILE} + model.safetensors or "
        f"pytorch_model.bin), a T5X msgpack file or a directory with a "
        f"'{t5x.CHECKPOINT_FILE}' file (or checkpoint_<step>/ subdirectories).")


def load_checkpoint(path: str | os.PathLike, dtype: Any = None, *,
                    config: T5Config | None = None, with_optimizer_state: bool = False,
                    shardings: dict[str, Any] | None = None,
                    progress: bool = False) -> LoadedCheckpoint:
    """Load any supported checkpoint as T5X-named params + T5Config + vocabulary + step.

    `config`: for T5X it replaces the config inferred from the shapes; HF and our format carry
    their own, and the loaded parameters are then checked against `config`'s sizes. The
    parameters keep the form they were stored in: per-layer for T5X and HF (T5X's scanned form
    is split per layer), as saved for ours; `loaded.config.scan_layers` says which.
    `shardings` (our format only) restores straight into sharded jax.Arrays.
    Names and shapes are checked before any array is read; one error lists every difference.
    """
    fmt, concrete = resolve(path)
    if shardings is not None and fmt != "t0_jax":
        raise ValueError(f"shardings= is supported for t0_jax checkpoints only; {path} is {fmt}. "
                         "Load it to host memory and device_put, or convert it with t0-convert.")
    if fmt == "t5x":
        return t5x.load_t5x(concrete, config=config, dtype=dtype,
                            with_optimizer_state=with_optimizer_state, progress=progress)
    if fmt == "t0_jax":
        loaded = t0_format.load_t0(concrete, dtype=dtype, shardings=shardings,
                                   with_optimizer_state=with_optimizer_state)
    else:
        loaded = hf.hf_to_t0(concrete, dtype=dtype, progress=progress)
    if config is not None:  # sizes must agree; scanned vs per-layer is the caller's choice
        layout.check_shapes(layout.shapes_of(layout.flatten(loaded.params)),
                            config.replace(scan_layers=loaded.config.scan_layers),
                            f"{fmt} checkpoint {concrete} (against the requested config)")
    return loaded
