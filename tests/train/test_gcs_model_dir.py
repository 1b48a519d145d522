"""MODEL_DIR on `gs://`, against a real GCS API server (fake-gcs-server, tests/gcs/): every file
the trainer writes lands in the bucket (checked by listing the server itself), nothing lands on
local disk, a rerun resumes from the bucket, and the run lock is exclusive there."""
import json
import os
import socket

import jax
import numpy as np
import pytest

from t0_jax import storage
from t0_jax.train import checkpoints, preemption, trainer
from tests.train.batches import BATCH, LENGTHS, StatefulSource
from tests.train.test_trainer import CONFIG


@pytest.fixture(scope="module")
def gcs(gcs_bucket):
    """The session's emulator (tests/gcs/fixtures.py), its settings applied to this process."""
    with gcs_bucket.applied():
        yield gcs_bucket


class BucketSource(StatefulSource):
    """StatefulSource whose saved position goes through t0_jax.storage (as the seqio source
    does), so its input state can live in a bucket."""

    def save_state(self, directory, step):
        storage.write_text(storage.join(directory, "position.txt"), str(self._position))
        return True

    def restore_state(self, directory, step):
        try:
            self._pending_restore = int(storage.read_text(storage.join(directory,
                                                                       "position.txt")))
        except OSError:
            return False
        return True


def _run(model_dir, train_steps, source, **overrides):
    return trainer.train(model_dir=model_dir, train_steps=train_steps,
                         task_feature_lengths=LENGTHS, batch_size=BATCH, model_config=CONFIG,
                         num_partitions=4, checkpoint_period=2, log_period=1,
                         progress_bar=False, batch_source=source, config_text="# operative\n",
                         **overrides)


def test_model_dir_in_a_bucket_resumes_from_it(gcs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a gs:// path must never become a local folder "gs:"
    root = gcs.root("model-dir")
    first = _run(root, 2, BucketSource())
    objects = gcs.list_objects(root)
    host = f"host_{jax.process_index()}-of-{jax.process_count()}"
    for name in ("config.gin", "metrics.jsonl", "2/params/_METADATA", "2/opt_state/_METADATA",
                 "2/model_config/metadata", "2/train_state/metadata",
                 f"input_state/2/{host}/position.json", f"input_state/2/{host}/pending.npz",
                 f"input_state/2/{host}/position.txt"):
        assert f"{root}/{name}" in objects, name
    assert any(o.startswith(f"{root}/train/events.out.tfevents.") for o in objects)
    assert f"{root}/{preemption.LOCK_FILE}" not in objects  # released
    lines = gcs.read_object(f"{root}/metrics.jsonl").decode().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert gcs.read_object(f"{root}/config.gin") == b"# operative\n"
    assert os.listdir(tmp_path) == []

    resumed_source = BucketSource()
    resumed = _run(root, 4, resumed_source)
    assert resumed.step == 4 and resumed_source.restored  # input state read from the bucket
    lines = gcs.read_object(f"{root}/metrics.jsonl").decode().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]  # earlier lines kept
    straight = _run(str(tmp_path / "local"), 4, BucketSource())
    for a, b in zip(jax.tree.leaves(jax.device_get(straight.state.params)),
                    jax.tree.leaves(jax.device_get(resumed.state.params))):
        np.testing.assert_array_equal(a, b)  # resumed from the bucket = uninterrupted
    ckpt = checkpoints.Checkpointer(root)
    assert ckpt.all_steps() == [2, 4] and ckpt.directory == root
    ckpt.close()


def test_run_lock_in_a_bucket_is_exclusive_and_taken_over_only_when_stale(gcs):
    root = gcs.root("lock")
    lock = preemption.RunLock(root).acquire()
    assert lock.held and json.loads(gcs.read_object(f"{root}/{preemption.LOCK_FILE}"))[
        "pid"] == os.getpid()
    other = preemption.RunLock(root)
    other_me = {"pid": os.getpid() + 1, "host": socket.gethostname()}
    assert not storage.create_exclusive(other.path, json.dumps(other_me).encode())
    lock.release()
    assert f"{root}/{preemption.LOCK_FILE}" not in gcs.list_objects(root)

    # a live holder elsewhere (its heartbeat moves) is never displaced
    holder = preemption.RunLock(root, lease_s=2.0).acquire()
    other = preemption.RunLock(root, lease_s=2.0, progress=lambda line: None)
    other._me["host"] = "elsewhere"
    with pytest.raises(preemption.RunLockedError, match="is alive"):
        other.acquire()
    holder._stop.set()  # SIGKILLed: the heartbeat stops, the object stays
    holder._beat.join()
    other.acquire()
    assert json.loads(gcs.read_object(f"{root}/{preemption.LOCK_FILE}"))["host"] == "elsewhere"
    other.release()

    # a lock whose last beat is older than its lease is stale at once
    storage.write_text(storage.join(root, preemption.LOCK_FILE), json.dumps(
        {"pid": 2 ** 22 + 1, "host": "gone", "heartbeat": 1.0, "lease_s": 60}))
    taker = preemption.RunLock(root).acquire()
    assert json.loads(gcs.read_object(f"{root}/{preemption.LOCK_FILE}"))["pid"] == os.getpid()
    taker.release()
