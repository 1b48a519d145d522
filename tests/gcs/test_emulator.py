"""Every GCS client the project uses makes a round trip through the emulator (fake-gcs-server).

Each test writes with one client and checks the bytes or names with another: the client itself
and, independently, plain HTTP requests to the server (`list_objects`, `read_object`), so a
client that silently wrote to local disk (a folder named `gs:`) cannot pass.
"""
import os

import subprocess
import sys

import numpy as np
import pytest

import t0_jax.storage  # noqa: F401 - first, as in every t0 process: it picks epath's gcsfs backend
from tests.gcs import emulator
from tests.gcs.emulator import HERE, SITE_DIR

REPO = HERE.parents[1]


def _names(gcs_bucket, root):
    return [name[len(root) + 1:] for name in gcs_bucket.list_objects(root + "/")]


def test_env_points_every_client_at_the_emulator(gcs_bucket):
    env, url = gcs_bucket.env, gcs_bucket.server_url
    assert env["STORAGE_EMULATOR_HOST"] == url and env["TENSORSTORE_GCS_HTTP_URL"] == url
    assert env["https_proxy"] == gcs_bucket.proxy_url and "127.0.0.1" in env["no_proxy"]
    assert open(env["CURL_CA_BUNDLE"]).read().startswith("-----BEGIN CERTIFICATE-----")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(SITE_DIR)
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    before = dict(os.environ)
    with gcs_bucket.applied():
        assert os.environ["STORAGE_EMULATOR_HOST"] == url
    assert dict(os.environ) == before


def test_gcsfs_write_read_list(gcs_bucket, gcs_root):
    import fsspec

    with gcs_bucket.applied():
        fs = fsspec.filesystem("gs")  # no token argument: FSSPEC_GCS_TOKEN=anon supplies it
        fs.pipe(f"{gcs_root}/a/one.txt", b"first")
        with fs.open(f"{gcs_root}/a/two.bin", "wb") as f:
            f.write(bytes(range(256)) * 100)
        assert fs.cat(f"{gcs_root}/a/one.txt") == b"first"
        assert fs.size(f"{gcs_root}/a/two.bin") == 25600
        assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{gcs_root}/a")) == ["one.txt", "two.bin"]
    assert _names(gcs_bucket, gcs_root) == ["a/one.txt", "a/two.bin"]
    assert gcs_bucket.read_object(f"{gcs_root}/a/two.bin") == bytes(range(256)) * 100


def test_storage_client_create_if_absent(gcs_bucket, gcs_root):
    """The trainer lock: an object created only if none exists (if_generation_match=0)."""
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import storage

    name = gcs_root.split("/", 3)[3] + "/LOCK"
    with gcs_bucket.applied():
        blob = storage.Client().bucket(gcs_bucket.bucket).blob(name)
        blob.upload_from_string(b"host-0", if_generation_match=0)
        with pytest.raises(PreconditionFailed):
            blob.upload_from_string(b"host-1", if_generation_match=0)
    assert gcs_bucket.read_object(f"{gcs_root}/LOCK") == b"host-0"


def test_orbax_standard_checkpointer(gcs_bucket, gcs_root):
    """Orbax: array data through tensorstore, directories and metadata through etils.epath/TF."""
    import jax
    import orbax.checkpoint as ocp

    tree = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": {"c": np.asarray(7, dtype=np.int32)}}
    with gcs_bucket.applied():
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(f"{gcs_root}/ckpt", tree)
        ckptr.wait_until_finished()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
        restored = ckptr.restore(f"{gcs_root}/ckpt", target)
        ckptr.close()
    np.testing.assert_array_equal(np.asarray(restored["w"]), tree["w"])
    assert int(restored["b"]["c"]) == 7
    names = _names(gcs_bucket, gcs_root)
    assert "ckpt/_CHECKPOINT_METADATA" in names
    assert any(n.startswith("ckpt/") and "manifest.ocdbt" in n for n in names), names


def test_tensorflow_gfile_and_tfrecord_dataset(gcs_bucket, gcs_root):
    """tf.io.gfile (through the TLS proxy) and tf.data, as seqio reads its caches."""
    import tensorflow as tf

    gfile = tf.io.gfile
    with gcs_bucket.applied():
        gfile.makedirs(f"{gcs_root}/d")
        with gfile.GFile(f"{gcs_root}/d/a.txt", "w") as f:
            f.write("hello from tf")
        gfile.rename(f"{gcs_root}/d/a.txt", f"{gcs_root}/d/b.txt")
        assert not gfile.exists(f"{gcs_root}/d/a.txt")
        assert gfile.glob(f"{gcs_root}/d/*.txt") == [f"{gcs_root}/d/b.txt"]
        assert gfile.GFile(f"{gcs_root}/d/b.txt").read() == "hello from tf"
        records = [f"record {i}".encode() for i in range(5)]
        with tf.io.TFRecordWriter(f"{gcs_root}/data.tfrecord") as writer:
            for record in records:
                writer.write(record)
        read = list(tf.data.TFRecordDataset([f"{gcs_root}/data.tfrecord"]).as_numpy_iterator())
    assert read == records
    assert gcs_bucket.read_object(f"{gcs_root}/d/b.txt") == b"hello from tf"
    assert emulator.tfrecords(gcs_bucket.read_object(f"{gcs_root}/data.tfrecord")) == records


def test_etils_epath(gcs_bucket, gcs_root):
    """etils.epath (Orbax's path type) goes through gcsfs, as t0_jax.storage does: importing
    t0_jax.storage sets EPATH_USE_TF=false (else epath would use TensorFlow's filesystem
    whenever TF is installed)."""
    from etils import epath

    with gcs_bucket.applied():
        root = epath.Path(gcs_root)
        (root / "sub").mkdir(parents=True, exist_ok=True)
        (root / "sub" / "x.json").write_text('{"step": 3}')
        (root / "sub" / "x.json").rename(root / "sub" / "y.json")
        assert [p.name for p in (root / "sub").glob("*.json")] == ["y.json"]
        assert (root / "sub" / "y.json").read_text() == '{"step": 3}'
        backend = type(root._backend).__name__
    assert backend == "_FileSystemSpecBackend"
    assert gcs_bucket.read_object(f"{gcs_root}/sub/y.json") == b'{"step": 3}'


def test_beam_gcsio_settings_in_process(gcs_bucket, gcs_root):
    """applied() gives this process Beam's test-side settings, and takes them back."""
    from apache_beam.io.gcp import gcsio

    original = gcsio.GcsIO.copy_batch
    with gcs_bucket.applied():
        io = gcsio.GcsIO()
        with io.open(f"{gcs_root}/src", "wb") as f:
            f.write(b"payload")
        assert io.copy_batch([(f"{gcs_root}/src", f"{gcs_root}/dst")]) == [
            (f"{gcs_root}/src", f"{gcs_root}/dst", None)]
        assert io.delete_batch([f"{gcs_root}/src"]) == [(f"{gcs_root}/src", None)]
    assert gcsio.GcsIO.copy_batch is original
    assert _names(gcs_bucket, gcs_root) == ["dst"]
    assert gcs_bucket.read_object(f"{gcs_root}/dst") == b"payload"


def test_beam_multi_processing_file_sinks(gcs_bucket, gcs_root, tmp_path):
    """WriteToText and WriteToTFRecord to gs:// from multi_processing workers in a subprocess."""
    n = 40
    env = {**gcs_bucket.env, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(HERE / "beam_sinks.py"), gcs_root, str(n),
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    driver = int(proc.stdout.split("DRIVER ")[1].split()[0])
    assert "RUNNER FnApiRunner" in proc.stdout
    assert "prism" not in (proc.stdout + proc.stderr).lower()
    assert _names(gcs_bucket, gcs_root) == [
        "records-00000-of-00002", "records-00001-of-00002",
        "text-00000-of-00002", "text-00001-of-00002"]
    lines = b"".join(gcs_bucket.read_object(f"{gcs_root}/text-0000{i}-of-00002")
                     for i in range(2)).decode().splitlines()
    assert sorted(int(line.split("\t")[0]) for line in lines) == list(range(n))
    worker_pids = {int(line.split("\t")[1]) for line in lines}
    assert driver not in worker_pids  # rendered in Beam's worker processes
    records = [r for i in range(2) for r in emulator.tfrecords(
        gcs_bucket.read_object(f"{gcs_root}/records-0000{i}-of-00002"))]
    assert sorted(int(r) for r in records) == list(range(n))
    assert not list(tmp_path.glob("gs:*")), "a gs:// path was written to local disk"


def test_by_hand_runner_runs_one_command(tmp_path):
    """`python -m tests.gcs.emulator -- CMD` (docs/storage-testing.md) runs CMD against a fresh
    emulator with the fixture's environment and passes its exit code on."""
    script = ("import fsspec, sys; fs = fsspec.filesystem('gs');"
              "fs.pipe('gs://t0-test/by-hand/x.txt', b'by hand');"
              "sys.stdout.write(fs.cat('gs://t0-test/by-hand/x.txt').decode()); sys.exit(3)")
    proc = subprocess.run([sys.executable, "-m", "tests.gcs.emulator", "--", sys.executable,
                           "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (3, "by hand"), proc.stderr[-2000:]
