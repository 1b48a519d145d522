"""`t0-convert` in-process: T5X → ours → HF → ours again, with the vocabulary carried along."""
import subprocess
import sys

import numpy as np
import pytest

from t0_jax.bin import convert
from t0_jax.convert import auto, layout
from tests.convert.peers import read_t5x_fixture


def test_t5x_to_t0_to_hf_and_back(t5x_fixture, tmp_path, capsys):
    vocab = tmp_path / "cc_all.model"
    vocab.write_bytes(b"sentencepiece bytes")
    assert convert.main(["t5x-to-t0", str(t5x_fixture), str(tmp_path / "t0"),
                         "--vocab", str(vocab), "--with_optimizer_state"]) == 0
    out = capsys.readouterr().out
    assert "518,240 parameters" in out and "step 0" in out and "float32" in out
    assert (tmp_path / "t0" / "spiece.model").read_bytes() == vocab.read_bytes()

    assert convert.main(["t0-to-hf", str(tmp_path / "t0"), str(tmp_path / "hf"),
                         "--max_shard_size", "1MB"]) == 0
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()  # 4 MB → shards
    assert (tmp_path / "hf" / "spiece.model").read_bytes() == vocab.read_bytes()

    assert convert.main(["hf-to-t0", str(tmp_path / "hf"), str(tmp_path / "t0_again"),
                         "--dtype", "bfloat16"]) == 0
    again = auto.load_checkpoint(tmp_path / "t0_again")
    want = layout.flatten(read_t5x_fixture(t5x_fixture)["optimizer"]["target"])
    got = layout.flatten(again.params)
    assert sorted(got) == sorted(want) and again.dtypes() == ["bfloat16"]
    for path in want:
        np.testing.assert_array_equal(got[path], want[path].astype(got[path].dtype), path)
    assert again.vocab_path and again.vocab_path.endswith("spiece.model")


def test_errors_name_the_problem(t5x_fixture, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert convert.main(["t5x-to-t0", str(t5x_fixture), str(tmp_path / "taken")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert convert.main(["hf-to-t0", str(t5x_fixture), str(tmp_path / "d")]) == 2
    assert "t5x checkpoint, not huggingface" in capsys.readouterr().err
    assert convert.main(["t5x-to-t0", str(t5x_fixture), str(tmp_path / "d"),
                         "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "difference(s)" in err and "token_embedder/embedding" in err
    assert not (tmp_path / "d").exists()
    with pytest.raises(SystemExit):
        convert.main(["t0-to-hf", str(t5x_fixture), str(tmp_path / "e"), "--dtype", "int8"])


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "t0_jax.bin.convert", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "hf-to-t0" in result.stdout and "t0-to-hf" in result.stdout
