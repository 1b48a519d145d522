"""`t0-cache` in-process: a real task with dropped renderings, the rerun skip, a P3 parquet
import read back as a cache, and user errors as one line with exit status 2."""
import collections
import json
import os

import pytest

seqio = pytest.importorskip("seqio")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from t0_jax.bin import cache  # noqa: E402
from t0_jax.data import caches, registry, sources  # noqa: E402

TASK = "glue_mrpc_generate_paraphrase"  # renders only equivalent pairs: the rest are dropped
TWIN = "glue_mrpc_paraphrase_score_eval"
IN_MEMORY = "--pipeline_options=--runner=DirectRunner,--direct_num_workers=1," \
            "--direct_running_mode=in_memory"
THREADS = "--pipeline_options=--runner=DirectRunner,--direct_num_workers=2," \
          "--direct_running_mode=multi_threading"  # 2 slices per split: drops counted per slice


@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory, spm_model_path, shared_data_dir):
    previous = (registry.task_vocabulary().path, getattr(sources, "_data_dir", None),
                list(seqio.utils.get_global_cache_dirs()))
    out = str(tmp_path_factory.mktemp("cli_cache"))
    yield out
    registry.set_vocab_path(previous[0])
    sources.set_data_dir(previous[1])
    seqio.utils.set_global_cache_dirs(previous[2])
    for name in (TASK, TWIN):
        seqio.get_mixture_or_task(name)._cache_dir = None


def _run(capsys, *argv):
    code = cache.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_builds_table_and_skips_on_rerun(cli_cache, capsys, spm_model_path, shared_data_dir):
    argv = ["--tasks", f"{TASK},{TWIN}", "--output_cache_dir", cli_cache, "--data_dir",
            str(shared_data_dir), "--vocab_path", spm_model_path, "--splits", "validation",
            "--min_shards", "1", THREADS]
    code, out, _ = _run(capsys, *argv)
    assert code == 0, out
    assert "runner: FnApiRunner (multi_threading, 2 workers)" in out.splitlines()
    kept = sum(1 for line in open(shared_data_dir / "glue" / "mrpc" / "validation.jsonl")
               if json.loads(line)["label"] == 1)
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith((TASK + " ", TWIN + " "))}
    assert rows[TASK][1:4] == ["validation", "written", f"{kept:,}"]
    assert rows[TASK][6] == f"{408 - kept:,}"  # dropped renderings
    assert rows[TWIN][1:4] == ["validation", "written", "816"] and rows[TWIN][6] == "0"
    stats = json.load(open(os.path.join(cli_cache, TASK, "stats.validation.json")))
    assert rows[TASK][4] == f"{stats['inputs_tokens']:,}"
    assert sorted(os.listdir(os.path.join(cli_cache, TASK))) == [
        "COMPLETED", "info.validation.json", "stats.validation.json",
        "validation.tfrecord-00000-of-00002", "validation.tfrecord-00001-of-00002"]

    code, out, _ = _run(capsys, *argv)
    assert code == 0 and f"t0-cache: skip {TASK}: already cached" in out
    assert [line.split()[2] for line in out.splitlines() if line.startswith(TASK + " ")] == [
        "cached"]

    code, out, _ = _run(capsys, "--verify", "--tasks", f"{TASK},{TWIN}", "--cache_dirs",
                        cli_cache, "--splits", "validation")
    assert code == 0 and out.splitlines() == [
        f"t0-cache: ok {TASK} validation: {kept} examples",
        f"t0-cache: ok {TWIN} validation: 816 examples"]


def _cached_rows(name):
    task = seqio.get_mixture_or_task(name)
    rows = []
    for ex in task.get_dataset(split="validation", shuffle=False, use_cached=True)\
            .as_numpy_iterator():
        rows.append({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in ex.items()})
    return rows


def _as_key(row):
    return tuple(sorted((k, repr(v)) for k, v in row.items()))


def test_p3_parquet_import_reads_back_as_the_same_cache(cli_cache, capsys, tmp_path,
                                                        spm_model_path):
    """A P3-like parquet download (hub layout <task>/<split>/0000.parquet, P3's columns)."""
    seqio.utils.set_global_cache_dirs([])
    caches.use_cache_dirs([cli_cache])
    original = {name: _cached_rows(name) for name in (TASK, TWIN)}
    data = tmp_path / "P3" / "data"
    for name, rows in original.items():
        (data / name / "validation").mkdir(parents=True)
        decoded = [{k: (v.decode() if isinstance(v, bytes) else
                        [c.decode() for c in v] if k == "answer_choices" else v)
                    for k, v in row.items() if name == TWIN or k not in ("idx", "answer_choices")}
                   for row in rows]
        pq.write_table(pa.Table.from_pylist(decoded),
                       data / name / "validation" / "0000.parquet")
    out_dir = str(tmp_path / "imported")
    code, out, _ = _run(capsys, "--import_p3", str(tmp_path / "P3"), "--output_cache_dir",
                        out_dir, "--vocab_path", spm_model_path, IN_MEMORY)
    assert code == 0, out
    assert sorted(os.listdir(out_dir)) == [TASK, TWIN]
    seqio.utils.set_global_cache_dirs([])
    for name in (TASK, TWIN):
        seqio.get_mixture_or_task(name)._cache_dir = None
    caches.use_cache_dirs([out_dir])
    assert caches.check_cached([TASK, TWIN], "validation")[TWIN] == os.path.join(out_dir, TWIN)
    for name, rows in original.items():
        want = collections.Counter(_as_key({k: v for k, v in row.items()
                                            if name == TWIN or k not in ("idx", "answer_choices")})
                                   for row in rows)
        assert collections.Counter(map(_as_key, _cached_rows(name))) == want


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "glue_mrpc_equivalnt", "--output_cache_dir", "X"], "glue_mrpc_equivalent"),
    (["--tasks", TASK], "--output_cache_dir"),
    (["--tasks", TASK, "--mixture", "t0_train", "--output_cache_dir", "X"], "exactly one"),
    (["--import_p3", "/nonexistent/P3", "--output_cache_dir", "X"], "does not exist"),
    (["--verify", "--tasks", TASK, "--cache_dirs", "/nonexistent"], "does not exist"),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, argv, message):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("t0-cache: error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_p3_folder_of_an_unknown_task_names_the_closest(capsys, tmp_path):
    (tmp_path / "data" / "glue_mrpc_paraphrse" / "train").mkdir(parents=True)
    code, _, err = _run(capsys, "--import_p3", str(tmp_path), "--output_cache_dir",
                        str(tmp_path / "out"))
    assert code == 2 and "'glue_mrpc_paraphrse' (closest: glue_mrpc_paraphrase" in err


def test_seqio_additional_cache_dirs_flag_binds_cache_dirs():
    from t0_jax.bin import gin_flags

    flags = gin_flags.parse_flags(["--gin_file=runs/train.gin",
                                   "--seqio_additional_cache_dirs=/data/t0_cache,gs://b/p3"],
                                  "usage", "runs/train.gin")
    assert flags.gin_bindings == ["CACHE_DIRS = ['/data/t0_cache', 'gs://b/p3']"]
