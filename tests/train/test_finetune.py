"""Fine-tuning starts: from the real T5X checkpoint, and optimizer continuity (restore/reset)."""
import itertools

import jax
import numpy as np

from t0_jax.convert import auto
from t0_jax.model.config import get_config
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.train import trainer
from tests.train.batches import BATCH, LENGTHS, synthetic_batch
from tests.train.test_trainer import CONFIG


def _same_batch_source(skip, shard_index, num_shards):
    """Every step sees batch 0, so runs that start at different data positions compare."""
    return itertools.repeat(synthetic_batch(0, BATCH // num_shards))


def _run(model_dir, train_steps, config, **overrides):
    kwargs = dict(model_dir=str(model_dir),
                  train_steps=train_steps, task_feature_lengths=LENGTHS, batch_size=BATCH,
                  model_config=config, num_partitions=4, checkpoint_period=2, log_period=1,
                  progress_bar=False, batch_source=_same_batch_source)
    kwargs.update(overrides)
    return trainer.train(**kwargs)


def test_finetune_starts_from_the_t5x_checkpoint(tmp_path, t5x_fixture):
    """The first step's loss is the loss of the T5X weights (computed here independently)."""
    config = get_config("tiny", dtype="float32")  # the fixture is T5X's test_t5_tiny
    seen = []
    _run(tmp_path, 1, config, initial_checkpoint_path=str(t5x_fixture),
         step_callback=lambda step, m: seen.append(float(m["loss"])))
    t5x_params = auto.load_checkpoint(t5x_fixture).params
    expected, _ = EncoderDecoderModel(config).loss_fn(t5x_params, synthetic_batch(0), z_loss=1e-4)
    np.testing.assert_allclose(seen[0], float(expected), rtol=1e-5)
    assert seen[0] < 2 * np.log(config.vocab_size) * synthetic_batch(0)[
        "decoder_loss_weights"].sum()  # sanity: a real distribution, not garbage


def test_optimizer_continuity_restore_matches_uninterrupted_run(tmp_path):
    """Fine-tuning from step 2 of run A with 'restore' = A continued to step 4, bitwise;
    'reset' (fresh Adafactor at step 0) gives different parameters."""
    _run(tmp_path / "a", 2, CONFIG)
    a4 = _run(tmp_path / "a", 4, CONFIG)
    start = str(tmp_path / "a" / "2")
    restored = _run(tmp_path / "b", 4, CONFIG, initial_checkpoint_path=start,
                    optimizer_continuity="restore")
    assert restored.step == 4 and restored.batches_consumed == 2
    leaves_a = jax.tree.leaves(jax.device_get(a4.state.params))
    leaves_b = jax.tree.leaves(jax.device_get(restored.state.params))
    assert all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))
    reset = _run(tmp_path / "c", 2, CONFIG, initial_checkpoint_path=start,
                 optimizer_continuity="reset")
    assert reset.step == 2
    leaves_c = jax.tree.leaves(jax.device_get(reset.state.params))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_c))


def test_restore_needs_an_absolute_train_steps(tmp_path):
    _run(tmp_path / "a", 2, CONFIG)
    try:
        _run(tmp_path / "b", 2, CONFIG, initial_checkpoint_path=str(tmp_path / "a" / "2"),
             optimizer_continuity="restore")
    except trainer.ConfigError as e:
        assert "TRAIN_STEPS=2 is an absolute step" in str(e) and "already at step 2" in str(e)
    else:
        raise AssertionError("expected a ConfigError")
