"""The trainer on 8 fake CPU devices with the tiny model and synthetic batches.

Checked against real peers: the sharded step against the same step on one device, the
resumed run against an uninterrupted run (bitwise), microbatched against full-batch gradients.
"""
import json
import pathlib

import jax
import numpy as np
import pytest

from t0_jax.model import axes
from t0_jax.model.config import get_config
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.parallel import host_arrays, mesh as mesh_lib
from t0_jax.parallel.sharding import DoesNotFitError
from t0_jax.train import checkpoints, steps, trainer
from t0_jax.train.state import init_state, make_optimizer, state_layout
from tests.train.batches import BATCH, LENGTHS, VOCAB, Source, StatefulSource, synthetic_batch

CONFIG = get_config("tiny", vocab_size=VOCAB, dtype="float32", dropout_rate=0.1)


def _run(model_dir, train_steps, source=None, **overrides):
    kwargs = dict(model_dir=str(model_dir),
                  train_steps=train_steps, task_feature_lengths=LENGTHS, batch_size=BATCH,
                  model_config=CONFIG, num_partitions=4, checkpoint_period=2, log_period=2,
                  progress_bar=False, batch_source=source or Source())
    kwargs.update(overrides)
    return trainer.train(**kwargs)


def _one_step(devices, num_partitions, config, num_microbatches=1):
    model = EncoderDecoderModel(config)
    mesh = mesh_lib.make_mesh(num_partitions, devices=devices)
    optimizer = make_optimizer(model.params_axes(), learning_rate=1e-2)
    layout = state_layout(model, optimizer, mesh, axes.DEFAULT_RULES)
    state = init_state(model, optimizer, layout, seed=0)
    step = steps.jit_train_step(layout, model=model, optimizer=optimizer, dropout_seed=0,
                                z_loss=1e-4, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS",
                                num_microbatches=num_microbatches)
    state, metrics = step(state, host_arrays.host_to_global(synthetic_batch(0), mesh))
    return jax.device_get(state.params), jax.device_get(metrics), state


def _assert_trees_close(a, b, atol):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_sharded_step_equals_single_device_step():
    """2 × 4 mesh (model axis splits heads, mlp, vocab) vs one device, dropout on."""
    one, m1, _ = _one_step(jax.devices()[:1], 1, CONFIG)
    eight, m8, state8 = _one_step(jax.devices(), 4, CONFIG)
    assert state8.params["decoder"]["logits_dense"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    _assert_trees_close(one, eight, atol=1e-5)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-6)
    init = jax.device_get(init_state(*_model_opt_layout(jax.devices()[:1]), seed=0).params)
    moved = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(one), jax.tree.leaves(init)))
    assert moved > 1e-4  # the step really updated the parameters


def _model_opt_layout(devices):
    model = EncoderDecoderModel(CONFIG)
    optimizer = make_optimizer(model.params_axes(), learning_rate=1e-2)
    return model, optimizer, state_layout(model, optimizer, mesh_lib.make_mesh(1, devices),
                                          axes.DEFAULT_RULES)


def test_microbatched_gradients_equal_full_batch():
    """lax.scan accumulation over 2 microbatches = the full-batch step (dropout off)."""
    config = CONFIG.replace(dropout_rate=0.0)
    full, mfull, _ = _one_step(jax.devices(), 4, config, num_microbatches=1)
    micro, mmicro, _ = _one_step(jax.devices(), 4, config, num_microbatches=2)
    _assert_trees_close(full, micro, atol=1e-5)
    np.testing.assert_allclose(mfull["weight_sum"], mmicro["weight_sum"])
    np.testing.assert_allclose(mfull["loss"], mmicro["loss"], rtol=1e-5)


def _kill_after_5(step, _):
    if step == 5:
        raise KeyboardInterrupt("simulated kill")


def test_kill_and_resume_is_bitwise_equal(tmp_path, caplog):
    """Stopped after step 5 (checkpoint at 4, step 5 lost), rerun → same params as 6 straight.
    A plain callable cannot save its state: the rerun replays, and the log says so."""
    caplog.set_level("INFO", logger="t0_jax")
    straight = _run(tmp_path / "straight", 6)
    assert "cannot save its state" in caplog.text and "at step 2 that is" in caplog.text

    killed_source = Source()
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", 6, killed_source, step_callback=_kill_after_5)
    ckpt = checkpoints.Checkpointer(tmp_path / "killed")
    assert ckpt.all_steps() == [2, 4]
    ckpt.close()
    # a half-written step (as left by a kill during a save) must be ignored
    partial = tmp_path / "killed" / "6.orbax-checkpoint-tmp-1234"
    (partial / "params").mkdir(parents=True)
    (partial / "params" / "garbage").write_text("not a checkpoint")

    resumed_source = Source()
    resumed = _run(tmp_path / "killed", 6, resumed_source)
    assert resumed_source.opened_at == [4]  # data resumes after the 4 consumed batches
    assert "resuming by replay (4 batches" in caplog.text
    assert resumed.step == 6 and resumed.batches_consumed == 6
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(
            jax.device_get(straight.state.params))[0],
            jax.tree.leaves(jax.device_get(resumed.state.params))):
        assert np.array_equal(a, b), f"{jax.tree_util.keystr(path)} differs after resume"
    same_opt = jax.tree.map(np.array_equal, jax.device_get(straight.state.opt_state),
                            jax.device_get(resumed.state.opt_state))
    assert all(jax.tree.leaves(same_opt))
    # the step directory is self-describing for t0-score / auto.load_checkpoint
    from t0_jax.convert import auto
    loaded = auto.load_checkpoint(tmp_path / "killed" / "6")
    assert loaded.step == 6 and loaded.config == CONFIG
    np.testing.assert_array_equal(loaded.params["token_embedder"]["embedding"],
                                  jax.device_get(resumed.state.params)["token_embedder"]
                                  ["embedding"])
    lines = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text()
             .splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]
    assert all(np.isfinite(x["loss"]) and 0 < x["accuracy"] <= 1 for x in lines)
    assert list((tmp_path / "straight" / "train").glob("events.out.tfevents.*"))


def _assert_same_params(a, b):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(jax.device_get(a))[0],
                            jax.tree.leaves(jax.device_get(b))):
        assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs after resume"


def test_resume_restores_the_input_state_without_replay(tmp_path):
    """A source that saves its state: the rerun continues it (plus the batches the prefetch
    had read ahead, saved beside the checkpoint) and never rebuilds a consumed batch."""
    straight = _run(tmp_path / "straight", 6, StatefulSource())

    killed = StatefulSource()
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", 6, killed, step_callback=_kill_after_5)
    state_dir = checkpoints.input_state_directory(tmp_path / "killed", 4)
    position = json.loads(pathlib.Path(state_dir, "position.json").read_text())
    assert position["batches_consumed"] == 4
    saved_at = int(pathlib.Path(state_dir, "position.txt").read_text())
    assert saved_at == 4 + position["pending"]  # read ahead = pending, saved with it

    resumed_source = StatefulSource()
    resumed = _run(tmp_path / "killed", 6, resumed_source)
    assert resumed_source.restored == [saved_at]
    assert resumed_source.opened_at == [saved_at]
    assert min(resumed_source.produced) == saved_at  # batches 0..saved_at-1: never rebuilt
    assert resumed.step == 6 and resumed.batches_consumed == 6
    _assert_same_params(straight.state.params, resumed.state.params)
    # input states follow the checkpoints Orbax keeps
    kept = sorted(int(p.name) for p in (tmp_path / "killed" / "input_state").iterdir())
    assert kept == [2, 4, 6]


class PoisonedSource(Source):
    """Batch 2 (step 3) has NaN loss weights, as a corrupt input would."""

    def __call__(self, skip, shard_index, num_shards):
        for k, batch in enumerate(super().__call__(skip, shard_index, num_shards), start=skip):
            if k == 2:
                batch["decoder_loss_weights"] = np.full_like(batch["decoder_loss_weights"],
                                                             np.nan)
            yield batch


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(trainer.NonFiniteLossError, match=r"loss is nan at step 3.*"
                                                         r"last good checkpoint is .*/2\b"):
        _run(tmp_path, 6, PoisonedSource())
    ckpt = checkpoints.Checkpointer(tmp_path)
    assert ckpt.all_steps() == [2]
    ckpt.close()
    from t0_jax.convert import auto
    params = auto.load_checkpoint(tmp_path / "2").params
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_non_finite_update_is_never_saved(tmp_path):
    """A NaN learning rate poisons the parameters of step 1 while its loss is still finite."""
    with pytest.raises(trainer.NonFiniteLossError,
                       match=r"parameters became non-finite at step 1.*no checkpoint"):
        _run(tmp_path, 2, learning_rate=float("nan"), checkpoint_period=1)
    ckpt = checkpoints.Checkpointer(tmp_path)
    assert ckpt.all_steps() == []
    ckpt.close()


@pytest.mark.parametrize("overrides, error, message", [
    (dict(batch_size=6, num_partitions=1), trainer.ConfigError, r"BATCH_SIZE=6 is not divisible by the data axis"),
    (dict(num_partitions=3), trainer.ConfigError, r"NUM_PARTITIONS=3 does not divide"),
    (dict(num_microbatches=3), trainer.ConfigError, r"not divisible by train.num_microbatches"),
    (dict(task_feature_lengths={"inputs": 16}), trainer.ConfigError, r"'inputs' and 'targets'"),
    (dict(optimizer_continuity="keep"), trainer.ConfigError, r"OPTIMIZER_CONTINUITY='keep'"),
    (dict(device_memory_bytes=1000), DoesNotFitError, r"training state needs .* per device"),
])
def test_bad_configs_fail_before_any_compute(tmp_path, overrides, error, message):
    source = Source()
    with pytest.raises(error, match=message):
        _run(tmp_path, 2, source, **overrides)
    assert source.opened_at == []  # no data read
    assert not list(pathlib.Path(tmp_path).glob("*"))  # nothing written


def test_flops_count_matches_hand_count():
    """6·(N_enc·Li + N_dec·Lt) + attention, with N from the parameter shapes."""
    from t0_jax.train import metrics
    model = EncoderDecoderModel(CONFIG)
    e, j, m, v = CONFIG.emb_dim, CONFIG.joined_kv, CONFIG.mlp_dim, CONFIG.vocab_size
    n_enc = 2 * (4 * e * j + 3 * e * m)
    n_dec = 2 * (8 * e * j + 3 * e * m) + e * v
    attention = 12 * j * (2 * 16 ** 2 + 2 * (8 ** 2 + 8 * 16))
    assert metrics.matmul_params(model.abstract_params()) == (n_enc, n_dec)
    assert metrics.flops_per_sequence(model.abstract_params(), CONFIG, 16, 8) == (
        6 * (n_enc * 16 + n_dec * 8) + attention)
    assert metrics.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert metrics.peak_flops_per_device("cpu") is None
