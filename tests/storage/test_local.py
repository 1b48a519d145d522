"""t0_jax.storage on local paths: the behaviour the rooms relied on before it existed."""
import os
import threading

import pytest

from t0_jax import storage


def test_write_is_atomic_and_creates_parents(tmp_path):
    target = storage.join(str(tmp_path), "a", "b", "c.json")
    storage.write_text(target, "one")
    storage.write_text(target, "two")
    assert storage.read_text(target) == "two"
    assert os.listdir(tmp_path / "a" / "b") == ["c.json"]  # no temporary file left beside it
    assert storage.size(target) == 3


def test_listdir_glob_and_missing(tmp_path):
    for name in ("x.tfrecord-00000-of-00002", "x.tfrecord-00001-of-00002", "info.json"):
        storage.write_bytes(storage.join(str(tmp_path), name), b"1")
    assert storage.listdir(str(tmp_path)) == sorted(os.listdir(tmp_path))
    assert [os.path.basename(p) for p in storage.glob(str(tmp_path / "x.tfrecord-*"))] == [
        "x.tfrecord-00000-of-00002", "x.tfrecord-00001-of-00002"]
    assert storage.listdir(str(tmp_path / "absent")) == []
    assert not storage.exists(str(tmp_path / "absent"))


def test_create_exclusive_has_one_winner(tmp_path):
    lock = str(tmp_path / "run.lock")
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        storage.create_exclusive(lock, str(i).encode()))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert storage.read_text(lock) in {str(i) for i in range(8)}


def test_marker_is_written_last_and_read_back(tmp_path):
    folder = str(tmp_path / "task")
    assert not storage.is_complete(folder) and storage.read_marker(folder) is None
    storage.write_text(storage.join(folder, "data.jsonl"), "{}\n")
    storage.mark_complete(folder, payload={"examples": 1})
    assert storage.is_complete(folder)
    assert storage.read_marker(folder) == {"examples": 1}


def test_copytree_and_paths(tmp_path):
    src = tmp_path / "src"
    storage.write_text(str(src / "a" / "b.txt"), "b")
    storage.write_text(str(src / "c.txt"), "c")
    storage.copytree(str(src), str(tmp_path / "dst"))
    assert storage.read_text(str(tmp_path / "dst" / "a" / "b.txt")) == "b"
    assert storage.read_text(str(tmp_path / "dst" / "c.txt")) == "c"
    assert storage.local_copy(str(src / "c.txt")) == str(src / "c.txt")
    assert storage.absolute("rel") == os.path.join(os.getcwd(), "rel")
    assert storage.join("gs://bucket/run/", "1", "x") == "gs://bucket/run/1/x"
    assert storage.absolute("gs://bucket/run/") == "gs://bucket/run"
    assert storage.is_remote("gs://b/x") and storage.is_remote("s3://b/x")
    assert not storage.is_remote("file:///tmp/x") and storage.scheme("/tmp/x") == ""


def test_remove_missing_ok(tmp_path):
    storage.remove(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError):
        storage.remove(str(tmp_path / "nothing"), missing_ok=False)


def test_written_files_are_readable_by_others_as_plain_writes_are(tmp_path):
    target = tmp_path / "stats.train.json"
    storage.write_text(str(target), "{}")
    assert target.stat().st_mode & 0o777 == 0o644
