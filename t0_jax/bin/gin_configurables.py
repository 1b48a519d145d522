"""Where gin meets the library: every name the shipped gin files bind is registered here.

Library code never imports gin (DESIGN.md rule 1); importing this module registers
    t0_jax.model.T5Config        the model hyperparameters (gin/models/*.gin)
    t0_jax.train.train           training on a seqio task/mixture (gin/runs/*.gin): the trainer's
                                 plain arguments plus the data ones (t0_jax.bin.train_data.train)
    t0_jax.data.dataset_mixture  registers a mixture of whole datasets at bind time and returns
                                 its name (d-ablation experiments: gin/experiments/*)
`T5Config` instances built by gin belong to a gin-made subclass (gin does not mutate the
library class); `train` copies its `model_config` into a plain T5Config.
"""
from __future__ import annotations

from typing import Sequence

import gin

from t0_jax.bin import train_data
from t0_jax.model.config import T5Config

REQUIRED_MACROS = ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TRAIN_STEPS", "TASK_FEATURE_LENGTHS",
                   "BATCH_SIZE")


def dataset_mixture(name: str, datasets: Sequence[str]) -> str:
    """Register `name` as the T0-capped mixture of every training template of `datasets`
    ("hf_name" or "hf_name/subset") and return the name, for MIXTURE_OR_TASK_NAME."""
    from t0_jax.data import mixtures  # noqa: PLC0415 - TF boundary: only when bound

    mixtures.register_dataset_mixture(name, list(datasets))
    return name


gin.external_configurable(T5Config, name="T5Config", module="t0_jax.model")
gin.external_configurable(train_data.train, name="train", module="t0_jax.train")
gin.external_configurable(dataset_mixture, name="dataset_mixture", module="t0_jax.data")
