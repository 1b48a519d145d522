"""KILL-AND-RESUME (real processes): `python -m t0_jax.bin.train` is SIGKILLed mid-run, the same
command is rerun to completion, and its final parameters must equal, bit for bit, those of an
uninterrupted run of the same steps.

Real pieces end to end: the shipped gin files, a seqio cache of real GLUE/MRPC examples
(../shared/data) built with t0-cache's Beam pipeline and read with USE_CACHED_TASKS, the packed
seqio pipeline, the tiny model on 8 fake CPU devices (2-way model parallel),
dropout on, async Orbax saves every 2 steps. The kill comes once step 4 is finalized AND a later
save is in flight (its Orbax temporary directory exists), so the restart must skip and clean up
that unfinished save, restore the newest finalized step and re-open the data stream at the batch
where that step stopped — from the input state saved with that checkpoint, so the restart
rebuilds none of the consumed batches (counted through the T0_INPUT_LOG hashes, which also match
the uninterrupted run's batches). Subprocesses read the test session's persistent
compile cache, which the in-process reference run fills. About 50 s on a busy 2-core CPU.
"""
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from t0_jax.bin import train as train_cli
from t0_jax.convert import auto
from t0_jax.train import checkpoints
from tests.train.conftest import CACHED_SPLIT, CACHED_TASK

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TRAIN_STEPS, PERIOD = 8, 2
KILL_AFTER_STEP = 4  # a finalized checkpoint beyond the first exists


def _argv(model_dir, data_dir, vocab, cache):
    return ["--gin_file=runs/train.gin", "--gin_file=experiments/tiny_demo.gin",
            f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_DIR={data_dir}",
            f"--gin.VOCAB_PATH={vocab}", "--gin.T5Config.vocab_size=1024",
            f"--gin.MIXTURE_OR_TASK_NAME='{CACHED_TASK}'", f"--gin.SPLIT='{CACHED_SPLIT}'",
            "--gin.USE_CACHED_TASKS=True",
            f"--gin.CACHE_DIRS=['{cache}']",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
            "--gin.LOSS_NORMALIZING_FACTOR='NUM_REAL_TARGET_TOKENS'",
            "--gin.LEARNING_RATE=0.01", "--gin.NUM_PARTITIONS=2", "--gin.DROPOUT_RATE=0.1",
            f"--gin.TRAIN_STEPS={TRAIN_STEPS}", f"--gin.CHECKPOINT_PERIOD={PERIOD}",
            f"--gin.LOG_PERIOD={PERIOD}", "--gin_bindings=train.progress_bar = False"]


def _env(input_log=None):
    """The test session's devices, platform and compile cache, for the child process."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=os.environ["XLA_FLAGS"],
               PYTHONPATH=str(REPO))
    if input_log is not None:
        env["T0_INPUT_LOG"] = str(input_log)
    if jax.config.jax_compilation_cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    return env


@contextlib.contextmanager
def _train_process(argv, log_path, input_log=None):
    """`python -m t0_jax.bin.train ARGV` with output to `log_path`; never outlives the test."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "t0_jax.bin.train", *argv], cwd=REPO,
                                env=_env(input_log), stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def _kill_during_save(proc, model_dir, timeout=240.0) -> int:
    """SIGKILL `proc` in the middle of a save, once a finalized step >= KILL_AFTER_STEP exists;
    returns the newest finalized step at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = _finalized_steps(model_dir)
        if steps and steps[-1] >= KILL_AFTER_STEP and _unfinished(model_dir):
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return steps[-1]
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"no save in flight after step {KILL_AFTER_STEP} before the run ended "
                         f"or timed out (exit {proc.poll()}); see "
                         f"{model_dir.parent / 'killed.log'}")


def _unfinished(model_dir):
    """Orbax temporary step directories (a save that has not completed)."""
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if "tmp" in p.name)


def _finalized_steps(model_dir):
    """Step directories Orbax has finalized (temporary ones carry a suffix)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and
                  (p / "train_state").is_dir())


def _logged_steps(model_dir) -> dict:
    """{writer pid: steps it logged}, from the TensorBoard event file each process writes."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    out = {}
    for path in sorted((model_dir / "train").glob("events.out.tfevents.*")):
        steps = [e.step for e in EventFileLoader(str(path)).Load() if e.HasField("summary")]
        out[path.name.rsplit(".", 1)[-1]] = steps
    return out


def _final_params(model_dir):
    return auto.load_checkpoint(checkpoints.step_directory(model_dir, TRAIN_STEPS)).params


def _produced(input_log) -> dict:
    """{position: hash} of the batches a run's source produced (T0_INPUT_LOG)."""
    lines = (input_log / "shard_0-of-1.txt").read_text().split("\n")
    return {int(p): h for p, h in (line.split() for line in lines if line)}


def test_sigkilled_training_resumes_to_bitwise_identical_params(tmp_path, shared_data_dir,
                                                               spm_model_path, mrpc_cache,
                                                               monkeypatch):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    # Uninterrupted reference, in-process (it also fills the compile cache for the children).
    for name in ("reference_input", "resumed_input"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("T0_INPUT_LOG", str(tmp_path / "reference_input"))
    assert train_cli.main(_argv(reference_dir, shared_data_dir, spm_model_path,
                                mrpc_cache)) == 0
    monkeypatch.delenv("T0_INPUT_LOG")
    argv = _argv(killed_dir, shared_data_dir, spm_model_path, mrpc_cache)
    with _train_process(argv, tmp_path / "killed.log") as proc:
        killed_at = _kill_during_save(proc, killed_dir)
    assert proc.returncode == -signal.SIGKILL
    assert killed_at < TRAIN_STEPS, "the run finished before it could be killed"
    left_unfinished = _unfinished(killed_dir)
    assert left_unfinished, "the kill should have interrupted a save"

    with _train_process(argv, tmp_path / "resumed.log", tmp_path / "resumed_input") as proc:
        assert proc.wait(240) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    resumed_log = (tmp_path / "resumed.log").read_text()
    assert f"done at step {TRAIN_STEPS}" in resumed_log
    assert "restored the saved input state" in resumed_log
    assert "resuming by replay" not in resumed_log and "cannot save" not in resumed_log
    assert _unfinished(killed_dir) == [], f"left after the restart (killed: {left_unfinished})"
    # The second process really resumed: its first logged step follows a killed-run checkpoint.
    first_step = {pid: steps[0] for pid, steps in _logged_steps(killed_dir).items()}
    assert len(first_step) == 2 and min(first_step.values()) == PERIOD
    resumed_from = max(first_step.values()) - PERIOD
    assert killed_at <= resumed_from < TRAIN_STEPS
    # No replay: the restart's source continued after the batches saved with that checkpoint
    # (consumed + prefetched), and produced exactly the uninterrupted run's batches.
    position = json.loads(pathlib.Path(checkpoints.input_state_directory(
        killed_dir, resumed_from), "position.json").read_text())
    produced, reference = _produced(tmp_path / "resumed_input"), _produced(
        tmp_path / "reference_input")
    assert min(produced) == resumed_from + position["pending"]
    assert all(reference[p] == h for p, h in produced.items() if p in reference)

    want, got = _final_params(reference_dir), _final_params(killed_dir)
    assert jax.tree.structure(want) == jax.tree.structure(got)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                      err_msg=jax.tree_util.keystr(path))
    # The last logged metrics agree too, and the run really learned something.
    last = [json.loads(x) for x in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (reference_dir / "metrics.jsonl").read_text().splitlines()]
    assert last[-1]["step"] == ref[-1]["step"] == TRAIN_STEPS
    assert last[-1]["cross_entropy"] == ref[-1]["cross_entropy"]
    assert ref[-1]["cross_entropy"] < ref[0]["cross_entropy"]
