"""Our Orbax format: self-describing directories, trainer step directories, sharded restore."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t0_jax.convert import auto, hf, layout, t0_format
from t0_jax.model.config import get_config
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.model.stacking import scan_params

CONFIG = get_config("tiny", vocab_size=64)


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(0)
    return layout.unflatten({p: rng.standard_normal(s).astype(np.float32)
                             for p, s in layout.expected_shapes(CONFIG).items()})


def _assert_equal_trees(got, want):
    got, want = layout.flatten(got), layout.flatten(want)
    assert sorted(got) == sorted(want)
    for p in want:
        np.testing.assert_array_equal(np.asarray(got[p]), want[p], err_msg=p)


@pytest.mark.parametrize("scan", [False, True])
def test_layout_matches_the_model(scan):
    """The converters' expected tree is exactly the model's parameter tree (names and shapes)."""
    config = CONFIG.replace(scan_layers=scan)
    abstract = layout.flatten(EncoderDecoderModel(config).abstract_params())
    assert {p: tuple(v.shape) for p, v in abstract.items()} == layout.expected_shapes(config)


def test_save_then_load_is_exact_and_self_describing(params, tmp_path):
    t0_format.save_checkpoint(tmp_path / "ck", params, CONFIG, step=1_112_200)
    meta = t0_format.read_config(tmp_path / "ck")
    assert meta["config"] == CONFIG.to_dict() and meta["step"] == 1_112_200
    loaded = auto.load_checkpoint(tmp_path / "ck")
    assert loaded.config == CONFIG and loaded.step == 1_112_200 and loaded.vocab_path is None
    assert all(isinstance(v, np.ndarray) for v in layout.flatten(loaded.params).values())
    _assert_equal_trees(loaded.params, params)


def test_dtype_cast_and_sharded_restore(params, tmp_path):
    t0_format.save_checkpoint(tmp_path / "ck", params, CONFIG)
    bf16 = auto.load_checkpoint(tmp_path / "ck", dtype="bfloat16")
    assert bf16.dtypes() == ["bfloat16"]
    q = layout.flatten(bf16.params)["encoder/layers_0/attention/query/kernel"]
    np.testing.assert_array_equal(
        q, layout.flatten(params)["encoder/layers_0/attention/query/kernel"].astype(q.dtype))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    flat = layout.flatten(params)
    shardings = {p: NamedSharding(mesh, PartitionSpec(*([None] * (v.ndim - 1)), "model")
                                  if v.shape[-1] % 4 == 0 else PartitionSpec())
                 for p, v in flat.items()}
    sharded = auto.load_checkpoint(tmp_path / "ck", shardings=layout.unflatten(shardings))
    got = layout.flatten(sharded.params)
    for p, s in shardings.items():
        assert isinstance(got[p], jax.Array) and got[p].sharding == s, p
    _assert_equal_trees(sharded.params, params)


def test_trainer_checkpoint_manager_steps_load(params, tmp_path):
    """The contract with the trainer: items `params` (StandardSave) + `model_config` (JsonSave)."""
    scanned = scan_params(params)
    config = CONFIG.replace(scan_layers=True)
    with ocp.CheckpointManager(tmp_path / "run",
                               item_names=("params", "model_config", "opt_state")) as mgr:
        for step in (10, 20):
            mgr.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(scanned),
                model_config=ocp.args.JsonSave(t0_format.config_json(config, step, None)),
                opt_state=ocp.args.StandardSave({"count": np.int32(step)})))
    assert auto.resolve(tmp_path / "run") == ("t0_jax", str(tmp_path / "run" / "20"))
    loaded = auto.load_checkpoint(tmp_path / "run")
    assert loaded.step == 20 and loaded.config == config
    _assert_equal_trees(loaded.params, jax.tree.map(np.asarray, scanned))
    # a scanned trainer checkpoint exports to HF per layer
    hf.t0_to_hf(loaded.params, loaded.config, tmp_path / "hf")
    _assert_equal_trees(hf.hf_to_t0(tmp_path / "hf").params, params)
