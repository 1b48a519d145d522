"""MULTI-HOST FOR REAL: two `python -m t0_jax.bin.train` processes on localhost joined by
`jax.distributed` (CPU, gloo collectives, 2 fake devices each → one 4-device mesh) train the
tiny model from a seqio cache of real MRPC examples, each host reading its own file shard;
they checkpoint, stop, and a second pair resumes from every host's saved input state.

Checked: both runs finish; every host batch either run produced is, bit for bit, the batch one
process reading that shard produces at the same position (so the global batches are those of
one process reading both shards); the resumed pair restored its input state and rebuilt none
of the batches consumed before the checkpoint; the Orbax checkpoint written by two processes
reads back in this one.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from t0_jax.bin import train_data
from t0_jax.convert import auto
from t0_jax.train import checkpoints
from tests.train.conftest import CACHED_SPLIT, CACHED_TASK

REPO = pathlib.Path(__file__).resolve().parents[2]
LENGTHS = {"inputs": 64, "targets": 16}
BATCH, HOSTS = 8, 2

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _argv(model_dir, data_dir, vocab, cache, train_steps):
    return ["--gin_file=runs/train.gin", "--gin_file=experiments/tiny_demo.gin",
            f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_DIR={data_dir}",
            f"--gin.VOCAB_PATH={vocab}", "--gin.T5Config.vocab_size=1024",
            f"--gin.MIXTURE_OR_TASK_NAME='{CACHED_TASK}'", f"--gin.SPLIT='{CACHED_SPLIT}'",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", f"--gin.BATCH_SIZE={BATCH}",
            "--gin.NUM_PARTITIONS=2", "--gin.DROPOUT_RATE=0.0", "--gin.LEARNING_RATE=0.01",
            f"--gin.TRAIN_STEPS={train_steps}", "--gin.CHECKPOINT_PERIOD=2",
            "--gin.LOG_PERIOD=2", "--gin_bindings=train.progress_bar = False",
            "--gin.USE_CACHED_TASKS=True",
            f"--gin.CACHE_DIRS=['{cache}']"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_pair(argv, log_dir: pathlib.Path, input_log: pathlib.Path, timeout=400) -> list:
    """Both hosts of one run; returns their outputs (asserting both exited 0)."""
    port = _free_port()
    input_log.mkdir(parents=True)
    procs = []
    for host in range(HOSTS):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
                   XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(HOSTS),
                   JAX_PROCESS_ID=str(host), T0_INPUT_LOG=str(input_log))
        if jax.config.jax_compilation_cache_dir:
            env.update(JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
        log = open(log_dir / f"{input_log.name}_host{host}.log", "wb")
        procs.append((subprocess.Popen([sys.executable, "-m", "t0_jax.bin.train", *argv],
                                       cwd=REPO, env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    outputs = []
    try:
        for proc, log in procs:
            code = proc.wait(timeout)
            log.close()
            outputs.append(pathlib.Path(log.name).read_text())
            assert code == 0, outputs[-1][-3000:]
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            log.close()
    return outputs


def _logged(input_log: pathlib.Path, shard: int) -> dict:
    """{position: [hash, ...]} one host's source produced."""
    out: dict = {}
    path = input_log / f"shard_{shard}-of-{HOSTS}.txt"
    for line in path.read_text().splitlines():
        position, digest = line.split()
        out.setdefault(int(position), []).append(digest)
    return out


def _expected(shard: int, count: int, spm_model_path, cache) -> list:
    """What one process reading `shard` of the cache produces (hashes of batches 0..count-1)."""
    import seqio

    from t0_jax.data import caches, pipeline, registry

    previous = list(seqio.utils.get_global_cache_dirs())
    registry.register_all(vocab_path=spm_model_path)
    caches.use_cache_dirs([cache])
    try:
        it = pipeline.train_batches(CACHED_TASK, CACHED_SPLIT, LENGTHS, BATCH, seed=0,
                                    shard_index=shard, num_shards=HOSTS, use_cached=True)
        return [train_data.batch_digest(next(it)) for _ in range(count)]
    finally:
        seqio.utils.set_global_cache_dirs(previous)
        seqio.get_mixture_or_task(CACHED_TASK)._cache_dir = None


def test_two_processes_train_from_a_cache_checkpoint_and_resume(tmp_path, shared_data_dir,
                                                              spm_model_path, mrpc_cache):
    model_dir = tmp_path / "run"
    first = _run_pair(_argv(model_dir, shared_data_dir, spm_model_path, mrpc_cache, 2),
                      tmp_path, tmp_path / "first")
    assert all("done at step 2" in out for out in first)
    resumed = _run_pair(_argv(model_dir, shared_data_dir, spm_model_path, mrpc_cache, 4),
                        tmp_path, tmp_path / "resumed")
    assert all("done at step 4" in out for out in resumed)
    assert all("restored the saved input state at step 2" in out for out in resumed), resumed[0]

    for shard in range(HOSTS):
        state = json.loads((model_dir / "input_state" / "2" / f"host_{shard}-of-{HOSTS}" /
                            "position.json").read_text())
        saved_at = 2 + state["pending"]  # the source's position (prefetched batches saved)
        before, after = _logged(tmp_path / "first", shard), _logged(tmp_path / "resumed", shard)
        assert min(after) == saved_at, "the resumed host rebuilt consumed batches"
        want = _expected(shard, max(after) + 1, spm_model_path, mrpc_cache)
        for produced in (before, after):
            for position, digests in produced.items():
                assert set(digests) == {want[position]}, f"shard {shard} batch {position}"
        assert set(range(max(after) + 1)) <= set(before) | set(after)

    lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4] and np.isfinite(lines[-1]["loss"])
    params = auto.load_checkpoint(checkpoints.step_directory(model_dir, 4)).params
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
