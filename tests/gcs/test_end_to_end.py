"""END TO END ON A BUCKET: every path a pod run names is `gs://`, against a real GCS API server
(fake-gcs-server, tests/gcs/), and no process shares a disk with another (issue 17 items 2, 4).

The run, each command a real subprocess with its own fresh, empty working directory, HOME and
TMPDIR (as hosts of a pod have no common disk) and only the installed package (PYTHONPATH holds
just the emulator's Beam settings, tests/gcs/site):
1. `t0-cache` of two real tasks (GLUE/MRPC validation from ../shared/data: the
   `glue_mrpc_paraphrase` template and its `_score_eval` twin, one row per answer choice) from a
   `gs://` DATA_DIR mirror with a SentencePiece vocabulary on `gs://`, into a `gs://` cache, on
   Beam's FnApiRunner with two `multi_processing` workers. This is also item 4's worker test
   (folded in here rather than a second t0-cache run): the two `sdk_worker_main` processes are
   seen in /proc, fresh children of the driver with its clean environment, and what they
   wrote is counted from the server;
2. two `python -m t0_jax.bin.train --multihost` processes joined by `jax.distributed`
   (coordinator on 127.0.0.1: the environment sends other hosts to the TLS proxy) train the
   tiny model from that cache, MODEL_DIR / DATA_DIR / VOCAB_PATH / CACHE_DIRS on `gs://`; both
   are SIGKILLed once a checkpoint is finalized in the bucket; their run lock stays there with
   a stopped heartbeat; the same command rerun by a new pair (new, empty local folders) takes
   the lock over after one lease (LEASE_S) and resumes from the bucket to TRAIN_STEPS;
3. `python -m t0_jax.bin.score` of the final checkpoint, reading the `_score_eval` task from the
   cache, OUTPUT_DIR on `gs://`.

Checked through the server itself (plain HTTP, `gcs_bucket.list_objects`/`read_object`): the
cache's record counts equal the source examples (x 2 answer choices for the twin) and stats,
and the cache reads back through seqio (tf.data over gs://, in this process); the bucket holds
both hosts' checkpoint shards and input state, the TensorBoard event files, metrics.jsonl, the
operative gin config and the score files; the resumed pair restored a checkpoint and the input
state of the killed pair (its event file starts after that step, not at step 0) and ended at
TRAIN_STEPS; and every file left in any process's local folders is justified (`_left_on_disk`:
copies of input objects, libraries' own config caches, a killed process's TensorFlow temp
modules): no output of the run is on local disk. 2.8-3.4 min measured on a 2-core machine
shared with other jobs (load 6-9); about 2 minutes expected on a quiet one.
"""
import json
import os
import pathlib
import signal
import socket

import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from t0_jax import storage
from t0_jax.train.run_lock import LOCK_FILE
from tests.gcs import emulator
from tests.gcs.emulator import SITE_DIR

REPO = pathlib.Path(__file__).resolve().parents[2]
TASK, TWIN, SPLIT = "glue_mrpc_paraphrase", "glue_mrpc_paraphrase_score_eval", "validation"
MIRROR_FILE = "glue/mrpc/validation.jsonl"  # 408 real examples, 2 answer choices each
HOSTS, TRAIN_STEPS, PERIOD = 2, 6, 2
SCORED = 16  # examples t0-score ranks (MAX_EXAMPLES)
LEASE_S = 10.0  # the run lock's lease: a killed holder's lock is taken over after this
BEAM = ("--runner=DirectRunner,--direct_running_mode=multi_processing,"
        "--direct_num_workers=2")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Processes:
    """Starts each command in its own fresh folder (cwd = HOME = TMPDIR); remembers them all."""

    def __init__(self, gcs_bucket, base: pathlib.Path):
        self.gcs, self.base, self.folders, self.running = gcs_bucket, base, {}, []

    def env(self, folder: pathlib.Path, **extra) -> dict:
        env = {**self.gcs.env, "HOME": str(folder), "TMPDIR": str(folder),
               "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        env["PYTHONPATH"] = str(SITE_DIR)  # the emulator's Beam settings; t0_jax as installed
        for name in ("T0_DATA_DIR", "T0_VOCAB_PATH", "T0_STORAGE_CACHE", "T0_INDEX_CACHE_DIR"):
            env.pop(name, None)  # the defaults: everything under this process's own HOME
        if jax.config.jax_compilation_cache_dir:  # the test session's cache, outside the folders
            env.update(JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
        return {**env, **extra}

    def start(self, name: str, module: str, argv: list, **extra) -> subprocess.Popen:
        folder = self.base / name
        folder.mkdir()
        self.folders[name] = folder
        log = open(self.base / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=folder,
                                env=self.env(folder, **extra), stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.running.append(proc)
        return proc

    def output(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")

    def finish(self, name: str, proc: subprocess.Popen, timeout: float) -> str:
        code = proc.wait(timeout)
        out = self.output(name)
        assert code == 0, f"{name} exited {code}:\n{out[-4000:]}"
        return out

    def kill_all(self):
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


@pytest.fixture
def processes(gcs_bucket, tmp_path):
    procs = Processes(gcs_bucket, tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


def _upload(gcs_bucket, root, shared_data_dir, spm_model_path) -> dict:
    """The inputs in the bucket: {gs path: local source}."""
    inputs = {f"{root}/mirror/{MIRROR_FILE}": shared_data_dir / MIRROR_FILE,
              f"{root}/vocab/spm.model": pathlib.Path(spm_model_path)}
    with gcs_bucket.applied():
        for remote, local in inputs.items():
            storage.write_bytes(remote, local.read_bytes())
    for remote, local in inputs.items():
        assert gcs_bucket.read_object(remote) == local.read_bytes()
    return inputs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_argv(root) -> list:
    return ["--multihost", "--gin_file=runs/train.gin", "--gin_file=experiments/tiny_demo.gin",
            f"--gin.MODEL_DIR={root}/model", f"--gin.DATA_DIR={root}/mirror",
            f"--gin.VOCAB_PATH={root}/vocab/spm.model", "--gin.T5Config.vocab_size=1024",
            f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", f"--gin.SPLIT='{SPLIT}'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", "--gin.BATCH_SIZE=8",
            "--gin.NUM_PARTITIONS=2", "--gin.DROPOUT_RATE=0.0", "--gin.LEARNING_RATE=0.01",
            f"--gin.TRAIN_STEPS={TRAIN_STEPS}", f"--gin.CHECKPOINT_PERIOD={PERIOD}",
            f"--gin.LOG_PERIOD={PERIOD}", "--gin_bindings=train.progress_bar = False",
            f"--gin_bindings=train.lock_lease_seconds = {LEASE_S}",
            "--gin.USE_CACHED_TASKS=True", f"--gin.CACHE_DIRS=['{root}/cache']"]


def _start_pair(processes, label, root) -> list:
    port = _free_port()
    return [processes.start(f"{label}_host{host}", "t0_jax.bin.train", _train_argv(root),
                            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                            JAX_NUM_PROCESSES=str(HOSTS), JAX_PROCESS_ID=str(host))
            for host in range(HOSTS)]


def _finalized_steps(gcs_bucket, model_dir) -> list:
    """Steps Orbax has committed in the bucket (on GCS: `<step>/commit_success.txt`, last)."""
    steps = set()
    for name in gcs_bucket.list_objects(model_dir + "/"):
        parts = name[len(model_dir) + 1:].split("/")
        if len(parts) == 2 and parts[0].isdigit() and parts[1] == "commit_success.txt":
            steps.add(int(parts[0]))
    return sorted(steps)


def _kill_after_a_checkpoint(gcs_bucket, pair, model_dir, timeout=240.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in pair):
        steps = _finalized_steps(gcs_bucket, model_dir)
        if steps:
            for proc in pair:
                proc.send_signal(signal.SIGKILL)
            for proc in pair:
                proc.wait(30)
            return steps[-1]
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint finalized in {model_dir} before the pair ended or "
                         f"{timeout:.0f} s passed (exit codes {[p.poll() for p in pair]})")


def _watch_beam_workers(proc, timeout: float) -> dict:
    """Until `proc` exits: {pid: (ancestor pids, argv, cwd, environment)} of every process Beam's
    FnApiRunner started for it (`python -m apache_beam.runners.worker.sdk_worker_main`), read
    from /proc while they run."""
    seen, deadline = {}, time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in seen:
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if "apache_beam.runners.worker.sdk_worker_main" not in argv:
                    continue
                ancestors = _ancestors(int(entry.name))
                environ = dict(item.split("=", 1) for item in (entry / "environ").read_bytes()
                               .decode(errors="replace").split("\0") if "=" in item)
                seen[int(entry.name)] = (ancestors, argv, os.readlink(entry / "cwd"), environ)
            except (OSError, ValueError, IndexError):
                continue  # it exited while we looked
        time.sleep(0.2)
    return {pid: info for pid, info in seen.items() if proc.pid in info[0]}


def _ancestors(pid: int) -> list:
    """Parent, grandparent, ... pids (Beam starts its workers through `sh -c`)."""
    out = []
    while pid > 1 and len(out) < 8:
        pid = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        out.append(pid)
    return out


def _check_workers(workers: dict, driver: int, folder: pathlib.Path):
    """Fresh worker processes of the driver (two per pipeline), from the installed package: the venv's
    interpreter, the driver's fresh folder as cwd/HOME, no repository on their PYTHONPATH (only
    the emulator's test-side settings), the emulator's endpoint in their environment."""
    assert len(workers) >= 2, f"expected 2 Beam worker processes of pid {driver}: {workers}"
    for pid, (_, argv, cwd, environ) in workers.items():
        assert argv[0] == sys.executable and pid != driver
        assert cwd == str(folder) and environ["HOME"] == str(folder)
        assert str(REPO) not in environ.get("PYTHONPATH", "").split(os.pathsep), environ
        assert environ["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")


def _check_cache(gcs_bucket, cache, log):
    """Record counts in the shards (read from the server) = source examples (x 2 choices)."""
    objects = gcs_bucket.list_objects(cache + "/")
    for task, rows in ((TASK, 408), (TWIN, 816)):
        folder = f"{cache}/{task}"
        shards = [o for o in objects if o.startswith(f"{folder}/{SPLIT}.tfrecord-")]
        assert len(shards) >= 2 and f"{folder}/COMPLETED" in objects, (task, objects)
        records = sum(len(emulator.tfrecords(gcs_bucket.read_object(s))) for s in shards)
        stats = json.loads(gcs_bucket.read_object(f"{folder}/stats.{SPLIT}.json"))
        assert records == rows == stats["examples"], (task, records, stats)
    assert not [o for o in objects if "/.t0-cache-tmp/" in o], "work files left in the cache"
    assert "FnApiRunner (multi_processing, 2 workers)" in log, log[-3000:]


def _check_seqio_reads_cache(gcs_bucket, cache, vocab):
    """The cache as training reads it: seqio's TFRecord dataset over gs:// (TensorFlow)."""
    import seqio

    from t0_jax.data import caches, registry

    previous_vocab = registry.task_vocabulary().path
    previous_dirs = list(seqio.utils.get_global_cache_dirs())
    with gcs_bucket.applied():
        try:
            registry.register_all(vocab_path=vocab)
            caches.use_cache_dirs([cache])
            ds = seqio.get_mixture_or_task(TASK).get_dataset(
                None, split=SPLIT, shuffle=False, use_cached=True)
            rows = list(ds.as_numpy_iterator())
        finally:
            registry.set_vocab_path(previous_vocab)
            seqio.utils.set_global_cache_dirs(previous_dirs)
            seqio.get_mixture_or_task(TASK)._cache_dir = None
    assert len(rows) == 408
    assert len({int(r["idx"]) for r in rows}) == 408
    assert all(r["targets"][-1] == 1 and len(r["inputs"]) > 0 for r in rows)  # EOS-terminated


def _event_steps(gcs_bucket, path, tmp_path) -> list:
    """Steps with a summary in one event file, read from the server's bytes."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    local = tmp_path / "events" / path.rsplit("/", 1)[1]
    local.parent.mkdir(exist_ok=True)
    local.write_bytes(gcs_bucket.read_object(path))
    return [e.step for e in EventFileLoader(str(local)).Load() if e.HasField("summary")]


# Files a library writes into a fresh HOME/TMPDIR whatever the run does (not outputs of it):
LIBRARY_FILES = (
    ".keras/keras.json",  # Keras's default config, written when TensorFlow is imported
    ".cache/matplotlib/fontlist-",  # matplotlib's font list cache, built on first import
)


def _left_on_disk(folders: dict, inputs: dict) -> dict:
    """{process: files in its folder that no rule below justifies}; {} when nothing of the run
    is on local disk. Justified: a byte-for-byte copy of an input object (`storage.local_copy`
    of the vocabulary or a mirror file) or a line index of one; a library's own config/cache
    (LIBRARY_FILES); and in a SIGKILLed process's TMPDIR, TensorFlow autograph's temporary
    modules (removed at exit, which a killed process never reaches)."""
    allowed = {p.read_bytes() for p in inputs.values()}
    out = {}
    for name, folder in folders.items():
        extra = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
            relative = str(path.relative_to(folder))
            if path.suffix == ".npy" and "line_index" in path.parts:
                continue
            if path.is_file() and path.read_bytes() in allowed:
                continue
            if relative.startswith(LIBRARY_FILES):
                continue
            if name.startswith("killed") and path.name.startswith("__autograph_generated_file"):
                continue
            extra.append(relative)
        if extra:
            out[name] = extra
    return out


def _cache(processes, gcs_bucket, root):
    """Phase 1: t0-cache of two real tasks into the bucket, on two Beam worker processes."""
    cache = f"{root}/cache"
    proc = processes.start("cache", "t0_jax.bin.cache", [
        "--tasks", f"{TASK},{TWIN}", "--splits", SPLIT, "--data_dir", f"{root}/mirror",
        "--vocab_path", f"{root}/vocab/spm.model", "--output_cache_dir", cache,
        "--min_shards", "2", f"--pipeline_options={BEAM}"])
    workers = _watch_beam_workers(proc, timeout=300)
    _check_cache(gcs_bucket, cache, processes.finish("cache", proc, 30))
    _check_workers(workers, proc.pid, processes.folders["cache"])
    _check_seqio_reads_cache(gcs_bucket, cache, f"{root}/vocab/spm.model")


def _train_kill_resume(processes, gcs_bucket, root) -> int:
    """Phase 2: two hosts train, are SIGKILLed after a checkpoint, a new pair resumes to the
    end; returns the step the resumed pair restored."""
    model_dir = f"{root}/model"
    killed = _start_pair(processes, "killed", root)
    killed_at = _kill_after_a_checkpoint(gcs_bucket, killed, model_dir)
    assert killed_at < TRAIN_STEPS, "the run finished before it could be killed"
    # A SIGKILLed trainer cannot release its lock: it stays in the bucket, its heartbeat stops,
    # and the rerun of the same command takes it over after one lease (train/run_lock.py).
    lock = f"{model_dir}/{LOCK_FILE}"
    assert json.loads(gcs_bucket.read_object(lock))["pid"] == killed[0].pid
    resumed = [processes.finish(f"resumed_host{h}", p, 300)
               for h, p in enumerate(_start_pair(processes, "resumed", root))]
    marker = "restored the saved input state at step "
    for out in resumed:
        assert f"done at step {TRAIN_STEPS}" in out, out[-3000:]
        restored = [int(x.split(marker)[1].split()[0]) for x in out.splitlines() if marker in x]
        assert restored and restored[0] >= killed_at, out[-3000:]
        assert f"resuming from {model_dir}/{restored[0]}" in out, out[-3000:]
    assert lock not in gcs_bucket.list_objects(model_dir + "/"), "the lock was not released"
    return restored[0]


def _check_checkpoints(gcs_bucket, model_dir, objects):
    """Both hosts' array shards in the final step; both hosts' input state in every kept step."""
    final = f"{model_dir}/{TRAIN_STEPS}"
    for item in ("params", "opt_state"):
        shards = {o.split("/ocdbt.process_")[1].split("/")[0] for o in objects
                  if o.startswith(f"{final}/{item}/ocdbt.process_")}
        assert shards == {"0", "1"}, (item, shards)  # each host wrote its own array shards
    kept = _finalized_steps(gcs_bucket, model_dir)
    newest = list(range(TRAIN_STEPS - 2 * PERIOD, TRAIN_STEPS + 1, PERIOD))  # KEEP_CHECKPOINTS=3
    assert kept[-3:] == newest, kept
    if kept[:-3]:  # diagnostics: an older step Orbax's max_to_keep has not deleted (yet)
        print("older finalized steps left:", kept[:-3])
    for step in newest:
        prefix = f"{model_dir}/input_state/{step}/"
        hosts = {o[len(prefix):].split("/")[0] for o in objects
                 if o.startswith(prefix) and "/" in o[len(prefix):]}
        assert hosts == {f"host_{h}-of-{HOSTS}" for h in range(HOSTS)}, (step, hosts)
        assert {f"{prefix}{h}/position.json" for h in hosts} <= set(objects)


def _check_model_dir(gcs_bucket, root, resumed_from, tmp_path):
    """Checkpoints, operative config, metrics.jsonl and event files, read from the server."""
    model_dir = f"{root}/model"
    objects = gcs_bucket.list_objects(model_dir + "/")
    _check_checkpoints(gcs_bucket, model_dir, objects)
    config = gcs_bucket.read_object(f"{model_dir}/config.gin").decode()
    assert f"MODEL_DIR = '{model_dir}'" in config and f"{root}/cache" in config
    metrics = [json.loads(x) for x in
               gcs_bucket.read_object(f"{model_dir}/metrics.jsonl").decode().splitlines()]
    steps = [m["step"] for m in metrics]
    assert steps[0] == PERIOD and steps[-1] == TRAIN_STEPS and np.isfinite(metrics[-1]["loss"])
    assert set(range(PERIOD, TRAIN_STEPS + 1, PERIOD)) <= set(steps)
    events = [o for o in objects if o.startswith(f"{model_dir}/train/events.out.tfevents.")]
    first_steps = sorted(_event_steps(gcs_bucket, e, tmp_path)[0] for e in events)
    # the killed pair's file starts at step PERIOD, the resumed pair's after its checkpoint
    assert first_steps[0] == PERIOD and first_steps[-1] == resumed_from + PERIOD, first_steps


def _score(processes, gcs_bucket, root):
    """Phase 3: t0-score of the final checkpoint, the _score_eval task read from the cache."""
    final, out_dir = f"{root}/model/{TRAIN_STEPS}", f"{root}/scores"
    proc = processes.start("score", "t0_jax.bin.score", [
        "--gin_file=runs/score.gin", f"--gin.CHECKPOINT_PATH={final}",
        f"--gin.MIXTURE_OR_TASK_NAME='{TWIN}'", f"--gin.OUTPUT_DIR={out_dir}",
        f"--gin.DATA_DIR='{root}/mirror'", "--gin.USE_CACHED_TASKS=True",
        f"--gin.CACHE_DIRS=['{root}/cache']", f"--gin.MAX_EXAMPLES={SCORED}",
        "--gin_bindings=score_run.progress = False"])
    processes.finish("score", proc, 300)
    scored = gcs_bucket.list_objects(out_dir + "/")
    for name in ("scores.jsonl", "results.json", "config.gin"):
        assert f"{out_dir}/{name}" in scored, (name, scored)
    rows = [json.loads(x) for x in
            gcs_bucket.read_object(f"{out_dir}/scores.jsonl").decode().splitlines()]
    assert {(r["example"], r["choice"]) for r in rows} == {
        (e, c) for e in range(SCORED) for c in range(2)}  # one row per answer choice
    assert all(r["task"] == TWIN and np.isfinite(r["log_likelihood"]) for r in rows)
    results = json.loads(gcs_bucket.read_object(f"{out_dir}/results.json"))
    assert results["checkpoint"] == final
    best = {}  # example -> its highest-scoring row: rank classification
    for r in rows:
        if r["example"] not in best or r["log_likelihood"] > best[r["example"]]["log_likelihood"]:
            best[r["example"]] = r
    accuracy = sum(r["is_correct"] for r in best.values()) / SCORED
    assert results["tasks"][TWIN]["accuracy"] == pytest.approx(accuracy), results["tasks"]


def test_cache_train_kill_resume_score_all_on_gs(gcs_bucket, processes, shared_data_dir,
                                                 spm_model_path, tmp_path):
    root = gcs_bucket.root("end-to-end")
    inputs = _upload(gcs_bucket, root, shared_data_dir, spm_model_path)
    timings, start = {}, time.monotonic()
    _cache(processes, gcs_bucket, root)
    timings["cache"], start = time.monotonic() - start, time.monotonic()
    resumed_from = _train_kill_resume(processes, gcs_bucket, root)
    timings["train"], start = time.monotonic() - start, time.monotonic()
    _check_model_dir(gcs_bucket, root, resumed_from, tmp_path)
    _score(processes, gcs_bucket, root)
    timings["score"] = time.monotonic() - start
    assert _left_on_disk(processes.folders, inputs) == {}  # nothing of the run on local disk
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
