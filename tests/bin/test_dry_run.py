"""`t0-train --dry_run`: the train step compiled ahead of time, its memory per device against
the device's, for this host's 8 fake CPU devices and for a TPU slice described by libtpu; the
user errors around it (unknown slice, a mesh the slice cannot hold, a run-time out-of-memory,
a checkpoint for another model) exit 2 with one message and no traceback."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from t0_jax.bin import train as train_cli
from t0_jax.model import stacking
from t0_jax.model.config import get_config
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.train import checkpoints, steps, topologies, trainer
from tests.train.batches import BATCH, LENGTHS, Source

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL_SPLIT = {"vocab", "mlp", "heads", "joined_kv"}  # DEFAULT_RULES: these go to `model`


def _argv(*extra):
    """The tiny preset at 64/16 tokens, batch 8, 2-way model axis; no data, no checkpoint."""
    return ["--gin_file=runs/train.gin", "--gin_file=experiments/tiny_demo.gin",
            "--gin.MODEL_DIR=/nonexistent/run", "--gin.T5Config.vocab_size=1024",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
            "--gin.NUM_PARTITIONS=2", "--dry_run", "--json", *extra]


def _run(capsys, *extra):
    code = train_cli.main(_argv(*extra))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _params_bytes_per_device(model_width: int) -> int:
    """Σ over the tiny model's parameters of its shard: a dim named in MODEL_SPLIT is divided
    by the model axis when it divides evenly (else that parameter is replicated), fp32."""
    model = EncoderDecoderModel(get_config("tiny", vocab_size=1024))
    total = 0
    for shape, names in zip(jax.tree.leaves(model.abstract_params()),
                            jax.tree.leaves(model.params_axes(),
                                            is_leaf=lambda x: isinstance(x, tuple))):
        dims = [d // model_width if n in MODEL_SPLIT and d % model_width == 0 else d
                for d, n in zip(shape.shape, names)]
        total += int(np.prod(dims)) * 4
    return total


def test_cpu_mesh_plan_counts_the_sharded_state(capsys):
    code, out, _ = _run(capsys, "--device_memory_gib=1")
    assert code == 0
    plan = json.loads(out.strip().splitlines()[-1])
    assert plan["fits"] is True and plan["mesh_shape"] == {"data": 4, "model": 2}
    assert plan["device_memory_bytes"] == 2**30 and plan["num_devices"] == 8
    b = plan["bytes_per_device"]
    assert b["params"] == _params_bytes_per_device(2)
    # XLA's own count of the program's inputs: the parameters and this device's batch rows,
    # plus the optimizer slots the step reads (jit drops the unused [1] placeholders)
    rows = 8 // 4
    assert b["batch"] == rows * (3 * 64 + 5 * 16) * 4
    assert b["params"] + b["batch"] < b["arguments"] <= (b["params"] + b["optimizer"]
                                                         + b["batch"] + 4)
    assert b["temporaries"] > 0 and b["total"] >= b["arguments"] + b["temporaries"]
    cfg = get_config("tiny", vocab_size=1024)
    n_enc = cfg.num_encoder_layers * (4 * 8 * 12 + 3 * 8 * 16)
    n_dec = cfg.num_decoder_layers * (8 * 8 * 12 + 3 * 8 * 16) + 8 * 1024
    attention = 12 * 12 * (2 * 64**2 + 2 * (16**2 + 16 * 64))
    assert plan["flops_per_step"] == pytest.approx(8 * (6 * (n_enc * 64 + n_dec * 16)
                                                        + attention))
    assert "per device:" in out and "FITS" in out


def test_plan_that_does_not_fit_exits_2_with_advice(capsys):
    code, out, err = _run(capsys, "--device_memory_gib=0.0001")
    assert code == 2
    plan = json.loads(out.strip().splitlines()[-1])
    assert plan["fits"] is False
    advice = " ".join(plan["advice"])
    for knob in ("NUM_MICROBATCHES=2", "REMAT_POLICY", "SCAN_LAYERS=True",
                 "partitioning/fsdp.gin", "NUM_PARTITIONS=4"):
        assert knob in advice and knob in out
    assert "DOES NOT FIT" in out and "per device but" in err


def test_unknown_device_memory_is_reported_not_guessed(capsys):
    code, out, _ = _run(capsys)
    assert code == 0
    plan = json.loads(out.strip().splitlines()[-1])
    assert plan["fits"] is None and plan["device_memory_bytes"] is None
    assert "fit unknown" in out


def _libtpu_or_skip():
    try:
        topologies.slice_devices(topologies.parse("v4:2x2x1"))
    except topologies.TopologyUnavailableError as e:
        pytest.skip(f"libtpu cannot describe TPU slices here: {e}")


def test_tpu_slice_plan_from_libtpu(capsys):
    """v4-8 = 4 chips = 8 TensorCores of 16 GiB: the same 4 × 2 mesh as the CPU test, so the
    same parameter shards, compiled for TPU v4."""
    _libtpu_or_skip()
    code, out, _ = _run(capsys, "--topology=v4-8")
    assert code == 0
    plan = json.loads(out.strip().splitlines()[-1])
    assert plan["device_kind"] == "TPU v4" and plan["num_devices"] == 8
    assert plan["mesh_shape"] == {"data": 4, "model": 2}
    assert plan["device_memory_bytes"] == 16 * 2**30 and plan["fits"] is True
    assert plan["bytes_per_device"]["params"] == _params_bytes_per_device(2)
    assert plan["peak_flops_per_device"] == pytest.approx(275e12 / 2)
    assert plan["target"] == "v4-8 (v4:2x2x1)"


@pytest.mark.parametrize("name, libtpu, chips", [
    ("v3-256", "v3:8x16", 128), ("v4-128", "v4:4x4x4", 64), ("v5e-256", "v5e:16x16", 256),
    ("v5p-128", "v5p:4x4x4", 64), ("v4-32", "v4:2x2x4", 16), ("v5litepod-8", "v5e:2x4", 8),
    ("V4:2x2x2", "v4:2x2x2", 8)])
def test_cloud_names_map_to_libtpu_slices(name, libtpu, chips):
    topology = topologies.parse(name)
    assert (topology.libtpu_name, topology.chips) == (libtpu, chips)


@pytest.mark.parametrize("name, why", [
    ("v4-100", "v4 comes in [8, 16"), ("h100", "not a TPU slice name"),
    ("v4:4x4", "3-D chip grids")])
def test_unknown_topology_exits_2_listing_the_known_ones(capsys, name, why):
    code, out, err = _run(capsys, f"--topology={name}")
    assert code == 2 and why in err
    assert "Known slices: v2-{8," in err and "v4-{8, 16, 32, 64, 128" in err
    assert "v5e-{1, 4," in err and "v4:4x4x4" in err
    assert out == ""


def test_mesh_the_slice_cannot_hold_exits_2(capsys):
    _libtpu_or_skip()
    code, _, err = _run(capsys, "--topology=v4-8", "--gin.NUM_PARTITIONS=3")
    assert code == 2
    assert "NUM_PARTITIONS=3 does not divide the 8 available devices" in err
    assert "v4-8" in err
    code, _, err = _run(capsys, "--topology=v4-8", "--gin.BATCH_SIZE=6")
    assert code == 2 and "BATCH_SIZE=6 is not divisible by the data axis" in err


def test_slice_narrower_than_the_model_axis_plans_the_widest_and_answers_fit(tmp_path):
    """The experiment's 16-way model axis asked of v4-8 (8 TensorCores): planned 8-way, said so,
    and libtpu's compile refusing the program (temporaries over the HBM) is the plan's verdict
    with the compiler's figures, exit 2. A tiny model with a batch whose logits overflow 16 GiB
    stands in for T0-11B (same paths; `t0-train … experiments/t0_train.gin --dry_run
    --topology=v4-8` compiles T0-11B itself in minutes)."""
    _libtpu_or_skip()
    argv = ["--gin_file=runs/train.gin", "--gin_file=experiments/tiny_demo.gin",
            f"--gin.MODEL_DIR={tmp_path / 'run'}", "--gin.BATCH_SIZE=8192",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 256}",
            "--gin.SCAN_LAYERS=True", "--gin.NUM_PARTITIONS=16", "--dry_run", "--json",
            "--topology=v4-8"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "t0_jax.bin.train", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    out = done.stdout
    plan = json.loads(out.strip().splitlines()[-1])
    assert plan["mesh_shape"] == {"data": 1, "model": 8}
    assert plan["run"]["num_partitions"] == 8 and plan["run"]["requested_num_partitions"] == 16
    assert ("note: NUM_PARTITIONS=16 is wider than the 8 devices of v4-8 (v4:2x2x1): planned "
            "with NUM_PARTITIONS=8, the widest model axis this slice allows") in out
    assert plan["fits"] is False and "RESOURCE_EXHAUSTED" in plan["compile_error"]
    b = plan["bytes_per_device"]
    temporaries = b["temporaries"] / 2**30  # the compiler's own figure, in its units (GiB)
    assert f"HLO temporaries ({temporaries:.2f}G)" in plan["compile_error"]
    assert temporaries > b["compiler_available"] / 2**30 > 15
    assert b["total"] == b["params"] + b["optimizer"] + b["batch"] + b["temporaries"]
    assert f"temporaries       {temporaries:.2f} GiB" in out
    assert f"total             {b['total'] / 2**30:.2f} GiB of 16.00 GiB" in out
    assert "DOES NOT FIT" in out and "NUM_MICROBATCHES=2" in " ".join(plan["advice"])
    assert f"needs {b['total'] / 2**30:.2f} GiB per device but v4-8" in done.stderr


# ---- run-time errors of a launched run --------------------------------------------------

def _train(model_dir, **overrides):
    kwargs = dict(model_dir=str(model_dir), train_steps=4, task_feature_lengths=LENGTHS,
                  batch_size=BATCH, model_config=get_config("tiny", vocab_size=64,
                                                            dtype="float32"),
                  num_partitions=2, checkpoint_period=2, log_period=1, progress_bar=False,
                  batch_source=Source())
    kwargs.update(overrides)
    return trainer.train(**kwargs)


def _exits_2_in_one_line(monkeypatch, capsys, error) -> str:
    """What `t0-train` prints for `error` raised by a run: exit 2, no traceback."""
    def run(argv):
        raise error
    monkeypatch.setattr(train_cli, "run", run)
    assert train_cli.main(["--gin_file=runs/train.gin"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("t0-train: ")
    return err


def test_out_of_memory_at_run_time_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    """INJECTED at the step boundary: on CPU XLA reserves even a 1 TiB temporary buffer
    without failing (virtual memory), so the third step raises XLA's own error type with a
    TPU-style RESOURCE_EXHAUSTED message instead of running out for real."""
    real, calls = steps.jit_train_step, []

    def failing_step(*args, **kwargs):
        jitted = real(*args, **kwargs)

        def step(state, batch):
            calls.append(1)
            if len(calls) == 3:
                raise jax.errors.JaxRuntimeError(
                    "RESOURCE_EXHAUSTED: Error allocating device buffer: Attempting to "
                    "allocate 18.00G. That was not possible. There are 15.25G free.")
            return jitted(state, batch)
        return step
    monkeypatch.setattr(steps, "jit_train_step", failing_step)
    model_dir = tmp_path / "run"
    with pytest.raises(trainer.OutOfMemoryError) as info:
        _train(model_dir, learning_rate=0.0123)  # a program no other test cached
    text = str(info.value)
    assert "out of device memory in train step 3 (RESOURCE_EXHAUSTED" in text
    assert f"the last checkpoint, {model_dir / '2'}, is kept" in text
    for knob in ("NUM_MICROBATCHES=2", "REMAT_POLICY", "SCAN_LAYERS=True",
                 "partitioning/fsdp.gin", "NUM_PARTITIONS=4", "--dry_run"):
        assert knob in text
    ckpt = checkpoints.Checkpointer(model_dir)
    assert ckpt.all_steps() == [2]
    ckpt.close()
    err = _exits_2_in_one_line(monkeypatch, capsys, info.value)
    assert "out of device memory in train step 3" in err


def test_initial_checkpoint_of_another_model_is_one_message(tmp_path, t5x_fixture,
                                                            monkeypatch, capsys):
    with pytest.raises(trainer.ConfigError) as info:
        _train(tmp_path / "run", model_config=get_config("small"),
               initial_checkpoint_path=str(t5x_fixture))
    text = str(info.value)
    assert text.startswith(f"INITIAL_CHECKPOINT_PATH={t5x_fixture} holds a different model "
                           "than MODEL_CONFIG (emb_dim=512")
    assert "wrong shape: decoder/decoder_norm/scale: found (8,), expected (512,)" in text
    assert "… 187 more" in text and "models/t5_1_1_lm100k_xl.gin" in text
    assert "\n" not in text and "nothing was loaded" in text
    _exits_2_in_one_line(monkeypatch, capsys, info.value)


def test_scanned_model_fine_tunes_from_per_layer_t5x_checkpoint(tmp_path, t5x_fixture):
    """The T0 files scan layers; the public checkpoints are per layer: the first step's loss
    (computed from the loaded weights) is the same in both forms."""
    losses = {}
    for scan in (False, True):
        seen = []
        _train(tmp_path / str(scan), train_steps=1, num_partitions=4,
               model_config=get_config("tiny", dtype="float32", scan_layers=scan),
               initial_checkpoint_path=str(t5x_fixture), learning_rate=0.0234,
               step_callback=lambda step, m: seen.append(float(m["loss"])))
        losses[scan] = seen[0]
    assert losses[True] == pytest.approx(losses[False], rel=1e-6)
