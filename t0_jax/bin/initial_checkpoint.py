"""The fine-tuning start of `t0-train`, checked before the input pipeline is built.

The pipeline needs a vocabulary first; without VOCAB_PATH it reaches for T5's public one on
`gs://t5-data`, so a mistyped INITIAL_CHECKPOINT_PATH used to surface as "cannot read the
SentencePiece vocabulary" on an offline host, naming the wrong thing. Here the checkpoint is
looked at first: a path that is not there is named as such, and the vocabulary the checkpoint
carries (its `spiece.model`, as `t0-convert` and the trainer write it) stands in for an unset
VOCAB_PATH, as it does in `t0-score`.
"""
from __future__ import annotations

import os
from typing import Optional

from t0_jax import storage
from t0_jax.train import trainer

VOCAB_FILE = "spiece.model"


def _resumes(model_dir: Optional[str]) -> bool:
    """MODEL_DIR already holds a step directory: the run resumes from it, not from the
    initial checkpoint (which may then be gone)."""
    return bool(model_dir) and any(name.isdigit() for name in storage.listdir(model_dir))


def check(initial_checkpoint_path: Optional[str], model_dir: Optional[str]) -> None:
    """A missing initial checkpoint, named with what to give instead (ConfigError: exit 2)."""
    path = initial_checkpoint_path
    if not path or _resumes(model_dir) or storage.exists(path):
        return
    raise trainer.ConfigError(
        f"INITIAL_CHECKPOINT_PATH={path} does not exist. Give the directory (or T5X msgpack "
        "file) of the checkpoint to fine-tune: one of ours, a T5X checkpoint or a Hugging Face "
        "T5 directory (T0 starts from T5 v1.1 LM-adapted, e.g. "
        "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_xxl/checkpoint_1100000), or "
        "--gin_file=runs/train.gin instead of runs/finetune.gin to start from random weights.")


def vocabulary(initial_checkpoint_path: Optional[str], vocab_path: Optional[str]
               ) -> Optional[str]:
    """VOCAB_PATH if set (or $T0_VOCAB_PATH), else the initial checkpoint's own vocabulary
    (`spiece.model` in it, in its resolved step directory, or beside a T5X file), else None."""
    if vocab_path or os.environ.get("T0_VOCAB_PATH") or not initial_checkpoint_path:
        return vocab_path
    candidates = [storage.join(initial_checkpoint_path, VOCAB_FILE)]
    if not storage.is_remote(initial_checkpoint_path):
        from t0_jax.convert import auto  # noqa: PLC0415 - resolves step dirs (local only)

        try:
            _, concrete = auto.resolve(initial_checkpoint_path)
        except (OSError, ValueError):
            concrete = None
        if concrete is not None:
            concrete = os.fspath(concrete)
            folder = concrete if storage.isdir(concrete) else os.path.dirname(concrete)
            candidates += [os.path.join(folder, VOCAB_FILE),
                           os.path.join(os.path.dirname(folder), VOCAB_FILE)]
    return next((c for c in candidates if storage.exists(c) and not storage.isdir(c)), None)
