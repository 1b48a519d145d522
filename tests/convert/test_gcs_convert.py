"""`t0-convert` with SRC and DST on `gs://`, against a real GCS API server (fake-gcs-server,
tests/gcs/): the real T5X fixture in tensorstore form read from a bucket (tensorstore opens each
array there), our Orbax format written to and read from it, a Hugging Face directory uploaded
and read back (safetensors through verified local copies): every value equal to the fixture's."""
import numpy as np
import pytest

from t0_jax import storage
from t0_jax.bin import convert
from t0_jax.convert import auto, layout, t5x
from tests.convert.peers import read_t5x_fixture, write_t5x_tensorstore


@pytest.fixture(scope="module")
def gcs(gcs_bucket):
    """The session's emulator (tests/gcs/fixtures.py), its settings applied to this process."""
    with gcs_bucket.applied():
        yield gcs_bucket


def test_t5x_in_a_bucket_to_ours_to_hf_and_back(gcs, t5x_fixture, tmp_path, capsys):
    root = gcs.root("convert")
    state = read_t5x_fixture(t5x_fixture)
    storage.copytree(str(write_t5x_tensorstore(state, tmp_path / "checkpoint_0")),
                     f"{root}/t5x/checkpoint_0")
    leaf = t5x.read_state(f"{root}/t5x/checkpoint_0/checkpoint")["optimizer"]["target"][
        "encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert t5x.is_ts_spec(leaf)  # the arrays really are separate stores in the bucket
    vocab = tmp_path / "cc_all.model"
    vocab.write_bytes(b"sentencepiece bytes")

    assert convert.main(["t5x-to-t0", f"{root}/t5x", f"{root}/t0", "--vocab", str(vocab)]) == 0
    assert "518,240 parameters" in capsys.readouterr().out
    objects = gcs.list_objects(f"{root}/t0")
    assert f"{root}/t0/params/_METADATA" in objects
    assert gcs.read_object(f"{root}/t0/spiece.model") == vocab.read_bytes()
    assert auto.resolve(f"{root}/t0") == ("t0_jax", f"{root}/t0")

    assert convert.main(["t0-to-hf", f"{root}/t0", f"{root}/hf", "--max_shard_size",
                         "1MB"]) == 0
    assert f"{root}/hf/model.safetensors.index.json" in gcs.list_objects(f"{root}/hf")
    assert gcs.read_object(f"{root}/hf/spiece.model") == vocab.read_bytes()
    assert convert.main(["t0-to-hf", f"{root}/t0", f"{root}/hf"]) == 2  # DST exists
    assert "already exists" in capsys.readouterr().err

    assert convert.main(["hf-to-t0", f"{root}/hf", str(tmp_path / "back")]) == 0
    back = auto.load_checkpoint(tmp_path / "back")
    want = layout.flatten(state["optimizer"]["target"])
    got = layout.flatten(back.params)
    assert sorted(got) == sorted(want)
    for path in want:
        np.testing.assert_array_equal(got[path], np.asarray(want[path]), path)
    assert (tmp_path / "back" / "spiece.model").read_bytes() == vocab.read_bytes()
