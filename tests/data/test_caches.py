"""seqio caches of real tasks (glue/mrpc validation from ../shared/data) built with Beam
(DirectRunner, 2 threads / in-memory, tiny) and read back through seqio's own cached reader."""
import collections
import json
import os
import shutil

import pytest

seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from t0_jax.data import cache_build, caches, pipeline, registry, sources  # noqa: E402

BASE, TWIN = "glue_mrpc_equivalent", "glue_mrpc_equivalent_score_eval"
IN_MEMORY = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
# the default on small hosts: 2 threads, each split cut into 2 slices rendered in the threads
THREADS = ["--runner=DirectRunner", "--direct_num_workers=2",
           "--direct_running_mode=multi_threading"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, spm_model_path, shared_data_dir):
    """Both tasks cached once for the module; global seqio/registry state restored after."""
    previous_vocab, previous_dirs = registry.task_vocabulary().path, list(
        seqio.utils.get_global_cache_dirs())
    previous_data = getattr(sources, "_data_dir", None)
    sources.set_data_dir(shared_data_dir)  # the uncached reads compared with the cache
    out = str(tmp_path_factory.mktemp("cache"))
    report = cache_build.cache_tasks([BASE, TWIN], out, splits=["validation"],
                                     data_dir=str(shared_data_dir), vocab_path=spm_model_path,
                                     pipeline_options=THREADS, min_shards=2,
                                     progress=lambda line: None)
    yield out, report
    registry.set_vocab_path(previous_vocab)
    sources.set_data_dir(previous_data)
    seqio.utils.set_global_cache_dirs(previous_dirs)
    _forget_cache_dirs()


def _forget_cache_dirs():
    for name in (BASE, TWIN):
        seqio.get_mixture_or_task(name)._cache_dir = None  # seqio remembers the dir it found


@pytest.fixture
def reading(built):
    """Fresh seqio cache dirs for one test."""
    seqio.utils.set_global_cache_dirs([])
    _forget_cache_dirs()
    yield built[0]
    seqio.utils.set_global_cache_dirs([])
    _forget_cache_dirs()


def _multiset(dataset) -> collections.Counter:
    def key(value):
        return repr(value.tolist() if hasattr(value, "tolist") else value)

    return collections.Counter(tuple(sorted((k, key(v)) for k, v in ex.items()))
                               for ex in dataset.as_numpy_iterator())


def _examples(name, use_cached, shard_info=None):
    task = seqio.get_mixture_or_task(name)
    return _multiset(task.get_dataset(split="validation", shuffle=False, use_cached=use_cached,
                                      shard_info=shard_info))


def test_beam_writes_seqio_format_and_reports_figures(built):
    out, report = built
    assert sorted(os.listdir(out)) == [BASE, TWIN]  # the temporary folder is gone
    for name, examples in ((BASE, 408), (TWIN, 816)):
        files = sorted(os.listdir(os.path.join(out, name)))
        assert files == ["COMPLETED", "info.validation.json", "stats.validation.json",
                         "validation.tfrecord-00000-of-00002", "validation.tfrecord-00001-of-00002"]
        stats = json.load(open(os.path.join(out, name, "stats.validation.json")))
        row = next(r for r in report.rows if r.task == name)
        assert (row.status, row.examples, row.inputs_tokens, row.targets_tokens, row.dropped) == (
            "written", examples, stats["inputs_tokens"], stats["targets_tokens"], 0)
    info = json.load(open(os.path.join(out, TWIN, "info.validation.json")))
    assert {k: v["dtype"] for k, v in info["features"].items()} == {
        "answer_choices": "string", "idx": "int32", "inputs": "int32",
        "inputs_pretokenized": "string", "is_correct": "bool", "targets": "int32",
        "targets_pretokenized": "string", "weight": "float32"}


def test_cached_reads_exactly_the_uncached_examples_with_file_sharding(reading):
    assert caches.use_cache_dirs([reading]) == [reading]
    assert caches.check_cached([BASE, TWIN], "validation") == {
        BASE: os.path.join(reading, BASE), TWIN: os.path.join(reading, TWIN)}
    for name in (BASE, TWIN):
        cached = _examples(name, True)
        assert cached == _examples(name, False)  # strings, ids, idx, is_correct, choices
        hosts = [_examples(name, True, seqio.ShardInfo(i, 2)) for i in range(2)]
        assert hosts[0] + hosts[1] == cached and not hosts[0] & hosts[1]
        assert sum(hosts[0].values()) > 0 and sum(hosts[1].values()) > 0
    lengths = {"inputs": 512, "targets": 8}
    features = [_multiset(pipeline.features_dataset(BASE, "validation", lengths, pack=False,
                                                    shuffle=False, seed=None, num_epochs=1,
                                                    use_cached=cached)) for cached in (1, 0)]
    assert features[0] == features[1]


def test_rerun_skips_completed_tasks(built):
    out, _ = built
    lines = []
    report = cache_build.cache_tasks([BASE], out, splits=["validation"],
                                     pipeline_options=IN_MEMORY, progress=lines.append)
    assert [(r.task, r.status, r.examples) for r in report.rows] == [(BASE, "cached", 408)]
    assert lines == [f"skip {BASE}: already cached at {os.path.join(out, BASE)}"]


def test_failed_beam_run_names_the_task_and_changes_nothing(built, tmp_path, shared_data_dir):
    out, _ = built
    mirror = tmp_path / "mirror" / "glue" / "mrpc"
    mirror.mkdir(parents=True)
    lines = (shared_data_dir / "glue" / "mrpc" / "validation.jsonl").read_text().splitlines()
    (mirror / "validation.jsonl").write_text("\n".join(lines[:3] + ["{not json"]) + "\n")
    before = sorted(os.listdir(out))
    with pytest.raises(caches.CacheBuildError, match="glue_mrpc_paraphrase \\(validation\\)"):
        cache_build.cache_tasks([BASE, "glue_mrpc_paraphrase"], out, splits=["validation"],
                                data_dir=str(tmp_path / "mirror"), pipeline_options=IN_MEMORY,
                                min_shards=1, progress=lambda line: None)
    assert sorted(os.listdir(out)) == before  # nothing added, no temporary folder left


def _copy_task(src_root, name, dst_root):
    shutil.copytree(os.path.join(src_root, name), os.path.join(dst_root, name))
    return os.path.join(dst_root, name)


def _rewrite_first_shard(folder, change):
    path = os.path.join(folder, "validation.tfrecord-00000-of-00002")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            example = tf.train.Example.FromString(record)
            change(example.features.feature)
            writer.write(example.SerializeToString())


def test_bad_caches_get_one_clear_error(reading, tmp_path):
    with pytest.raises(caches.CacheError, match="does not exist"):
        caches.use_cache_dirs([str(tmp_path / "nowhere")])
    with pytest.raises(caches.CacheError, match=f"ONE task's cache folder"):
        caches.use_cache_dirs([os.path.join(reading, BASE)])

    unknown = tmp_path / "p3_unknown"
    _copy_task(reading, BASE, unknown)
    os.rename(unknown / BASE, unknown / "glue_mrpc_equivalnt")
    with pytest.raises(caches.CacheError, match="'glue_mrpc_equivalnt' \\(closest: "
                                                "glue_mrpc_equivalent"):
        caches.use_cache_dirs([str(unknown)])

    incomplete = tmp_path / "incomplete"
    os.remove(os.path.join(_copy_task(reading, BASE, incomplete), "COMPLETED"))
    with pytest.raises(caches.CacheError, match=f"{incomplete / BASE} has no COMPLETED"):
        caches.use_cache_dirs([str(incomplete)])

    fixed = tmp_path / "fixed"
    info_path = os.path.join(_copy_task(reading, BASE, fixed), "info.validation.json")
    info = json.load(open(info_path))
    info["features"]["inputs"]["shape"] = [512]
    json.dump(info, open(info_path, "w"))
    with pytest.raises(caches.CacheError, match="info.validation.json: feature 'inputs'.*fixed"):
        caches.use_cache_dirs([str(fixed)])


@pytest.mark.parametrize("damage, message", [
    ("vocabulary", "another vocabulary"), ("trimmed", "other feature lengths"),
    ("corrupt", "corrupt or truncated")])
def test_foreign_or_damaged_shards_are_named(reading, tmp_path, damage, message):
    folder = _copy_task(reading, BASE, tmp_path)
    shard = os.path.join(folder, "validation.tfrecord-00000-of-00002")
    if damage == "vocabulary":
        _rewrite_first_shard(folder, lambda f: f["inputs"].int64_list.value.__setitem__(
            0, f["inputs"].int64_list.value[0] + 1))
    elif damage == "trimmed":
        _rewrite_first_shard(folder, lambda f: f["inputs"].int64_list.value.__delitem__(
            slice(5, None)))
    else:
        data = bytearray(open(shard, "rb").read())
        data[20:40] = b"\xff" * 20  # inside the first record: its CRC no longer matches
        open(shard, "wb").write(bytes(data))
    caches.use_cache_dirs([str(tmp_path)])  # cheap checks pass; reading the data does not
    with pytest.raises(caches.CacheError, match=f"{shard}.*{message}"):
        caches.check_cached([BASE], "validation")


def test_not_cached_names_tasks_and_dirs_searched(reading):
    caches.use_cache_dirs([reading])
    with pytest.raises(caches.CacheError, match="glue_mrpc_paraphrase.*Searched: " + reading):
        caches.check_cached([BASE, "glue_mrpc_paraphrase"], "validation")
    with pytest.raises(caches.CacheError, match="no split 'train'"):
        caches.check_cached([BASE], "train")
    with pytest.raises(caches.CacheError, match="of 116 task"):
        caches.check_cached(["t0_eval_score_eval"], "validation")  # a mixture: its tasks


def test_p3_tfrecord_layout_with_older_info_reads_as_a_cache(reading, tmp_path):
    """P3's folders are our task names; its info files come from seqio 0.0.6 and do not list
    the base task's idx/answer_choices (the records may still hold them)."""
    data = tmp_path / "P3" / "data"
    for name in (BASE, TWIN):
        info_path = os.path.join(_copy_task(reading, name, data), "info.validation.json")
        info = json.load(open(info_path))
        info["seqio_version"] = "0.0.6"
        if name == BASE:
            info["features"] = {k: v for k, v in info["features"].items()
                                if k in ("inputs", "inputs_pretokenized", "targets",
                                         "targets_pretokenized")}
        json.dump(info, open(info_path, "w"))
    caches.use_cache_dirs([str(data)])
    assert caches.check_cached([BASE, TWIN], "validation")[BASE] == str(data / BASE)
    drop = ("idx", "answer_choices")
    uncached = collections.Counter(tuple(kv for kv in ex if kv[0] not in drop)
                                   for ex in _examples(BASE, False).elements())
    assert _examples(BASE, True) == uncached
    assert _examples(TWIN, True) == _examples(TWIN, False)
