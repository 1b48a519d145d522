"""T5X import against the real T5X checkpoint (t5x/testdata/test_t5_tiny.checkpoint_0).

The fixture is the peer: every converted array must equal the fixture's own array, the HF
export must hold exactly those arrays once transformers has loaded it, and transformers' logits
must equal our model's.
"""
import json

import numpy as np
import pytest

from t0_jax.convert import auto, hf, layout, t0_format, t5x
from tests.convert.peers import read_t5x_fixture, write_t5x_tensorstore


@pytest.fixture(scope="module")
def fixture_state(t5x_fixture):
    return read_t5x_fixture(t5x_fixture)


@pytest.fixture(scope="module")
def fixture_params(fixture_state):
    return layout.flatten(fixture_state["optimizer"]["target"])


@pytest.fixture(scope="module")
def exported(t5x_fixture, tmp_path_factory):
    """fixture → our format → Hugging Face directory (what `t0-convert` does in two steps)."""
    out = tmp_path_factory.mktemp("t5x_export")
    loaded = t5x.load_t5x(t5x_fixture, with_optimizer_state=True)
    t0_format.save_checkpoint(out / "t0", loaded.params, loaded.config, step=loaded.step,
                              opt_state_t5x=loaded.opt_state)
    again = auto.load_checkpoint(out / "t0", with_optimizer_state=True)
    hf.t0_to_hf(again.params, again.config, out / "hf")
    return out, loaded, again


def assert_same_arrays(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for path in want:
        assert got[path].dtype == want[path].dtype, path
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)


def test_config_is_read_off_the_shapes(exported):
    _, loaded, again = exported
    c = loaded.config  # the fixture README: emb 8, 4 heads x 3, mlp 16, 2+2 layers, vocab 32128
    assert (c.emb_dim, c.num_heads, c.head_dim, c.mlp_dim) == (8, 4, 3, 16)
    assert (c.num_encoder_layers, c.num_decoder_layers, c.vocab_size) == (2, 2, 32128)
    assert again.config == loaded.config and again.step == loaded.step == 0


def test_fixture_round_trips_through_our_format(exported, fixture_params, fixture_state):
    _, loaded, again = exported
    assert_same_arrays(layout.flatten(loaded.params), fixture_params)
    assert_same_arrays(layout.flatten(again.params), fixture_params)
    slots = layout.flatten(fixture_state["optimizer"]["state"]["param_states"])
    assert_same_arrays(layout.flatten(again.opt_state["param_states"]), slots)
    assert again.opt_state["step"] == 0


def test_huggingface_export_holds_the_fixture_arrays(exported, fixture_params):
    import transformers

    out, loaded, _ = exported
    model, info = transformers.T5ForConditionalGeneration.from_pretrained(
        out / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for hf_name, path in hf.name_map(loaded.config).items():
        want = fixture_params[path].T if hf.transposed(path) else fixture_params[path]
        np.testing.assert_array_equal(state[hf_name], want, err_msg=hf_name)
    config = json.loads((out / "hf" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["feed_forward_proj"] == "gated-gelu"


def test_transformers_logits_equal_ours(exported):
    import jax
    import torch
    import transformers

    from t0_jax.model.model import EncoderDecoderModel

    out, loaded, _ = exported
    rng = np.random.default_rng(0)
    enc = rng.integers(2, loaded.config.vocab_size, size=(2, 7)).astype(np.int32)
    tgt = rng.integers(2, loaded.config.vocab_size, size=(2, 5)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((2, 1), np.int32), tgt[:, :-1]], axis=1)
    model = EncoderDecoderModel(loaded.config.replace(dtype="float32"))
    ours = np.asarray(jax.jit(model.logits)(loaded.params, {
        "encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
        "decoder_target_tokens": tgt}))
    peer = transformers.T5ForConditionalGeneration.from_pretrained(out / "hf").eval()
    with torch.no_grad():
        theirs = peer(input_ids=torch.tensor(enc, dtype=torch.long),
                      decoder_input_ids=torch.tensor(dec_in, dtype=torch.long)).logits.numpy()
    assert ours.shape == theirs.shape == (2, 5, loaded.config.vocab_size)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_tensorstore_form_equals_msgpack_form(t5x_fixture, fixture_state, tmp_path):
    ckpt_dir = write_t5x_tensorstore(fixture_state, tmp_path / "checkpoint_0")
    stored = read_t5x_fixture(ckpt_dir / "checkpoint")
    leaf = stored["optimizer"]["target"]["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert t5x.is_ts_spec(leaf)  # really the tensorstore form, not inline arrays
    from_ts = auto.load_checkpoint(tmp_path / "checkpoint_0", with_optimizer_state=True)
    from_msgpack = auto.load_checkpoint(t5x_fixture, with_optimizer_state=True)
    assert from_ts.config == from_msgpack.config and from_ts.step == from_msgpack.step
    assert_same_arrays(layout.flatten(from_ts.params), layout.flatten(from_msgpack.params))
    assert_same_arrays(layout.flatten(from_ts.opt_state["param_states"]),
                       layout.flatten(from_msgpack.opt_state["param_states"]))
    # a T5X model directory resolves to its latest checkpoint_<step>
    assert auto.resolve(tmp_path) == ("t5x", str(tmp_path / "checkpoint_0"))


def test_scanned_t5x_layers_are_split_per_layer(fixture_state, fixture_params, tmp_path):
    """T5X scan_layers form: encoder/encoder/... stacked on axis 1."""
    from flax import serialization

    scanned = {}
    for path, value in fixture_params.items():
        stack, rest = path.split("/", 1)
        if rest.startswith("layers_0/"):
            layers = [fixture_params[f"{stack}/layers_{i}/{rest[9:]}"] for i in range(2)]
            scanned[f"{stack}/{stack}/{rest[9:]}"] = np.stack(layers, axis=1)
        elif not rest.startswith("layers_"):
            scanned[path] = value
    state = {"version": 3, "optimizer": {"target": layout.unflatten(scanned),
                                         "state": {"step": np.int32(7)}}}
    (tmp_path / "scanned").write_bytes(serialization.msgpack_serialize(state))
    loaded = t5x.load_t5x(tmp_path / "scanned")
    assert loaded.step == 7
    assert_same_arrays(layout.flatten(loaded.params), fixture_params)
