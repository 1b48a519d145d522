"""t0-cache's guarantees beyond the format: the count check fires on a writer that loses a
record, nothing reads as complete after a refused or killed run, a rerun cleans up; the runner
is chosen explicitly; records are TensorFlow's own Example/TFRecord bytes; and the default mode
writes, task by task, exactly what promptsource itself renders from the same examples."""
import collections
import io
import json
import os
import random

import pytest

seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from t0_jax.data import (beam_runners, cache_build, cache_counts, caches,  # noqa: E402
                         example_records, registry, sources, templates)

BASE = "glue_mrpc_equivalent"
IN_MEMORY = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]


@pytest.fixture
def vocab(spm_model_path):
    previous = registry.task_vocabulary().path
    registry.set_vocab_path(spm_model_path)
    yield spm_model_path
    registry.set_vocab_path(previous)


def _lose_row_3_of_shard_0(task, split, shard, row):
    return not (shard == 0 and row == 3)


def test_count_check_refuses_a_split_a_writer_lost_a_record_from(vocab, shared_data_dir,
                                                                 tmp_path):
    out = tmp_path / "cache"
    with pytest.raises(cache_counts.CacheCountError) as error:
        cache_build.cache_tasks([BASE], str(out), splits=["validation"],
                                data_dir=str(shared_data_dir), pipeline_options=IN_MEMORY,
                                min_shards=2, progress=lambda line: None,
                                record_filter=_lose_row_3_of_shard_0)
    message = str(error.value)
    assert f"'{BASE}' split 'validation'" in message
    assert "rows produced 408, stats examples 408, records in the shards 407 disagree" in message
    assert "source 408, dropped 0, kept 408" in message
    assert os.listdir(out) == []  # nothing installed, no staging left

    # a killed run's leftovers: a task folder without COMPLETED and a staging folder
    (out / BASE).mkdir()
    (out / BASE / "validation.tfrecord-00000-of-00009").write_bytes(b"partial")
    (out / cache_build.WORK_DIR / BASE / "data").mkdir(parents=True)
    report = cache_build.cache_tasks([BASE], str(out), splits=["validation"],
                                     data_dir=str(shared_data_dir), pipeline_options=IN_MEMORY,
                                     min_shards=2, progress=lambda line: None)
    assert [(r.examples, r.source, r.dropped) for r in report.rows] == [(408, 408, 0)]
    assert sorted(os.listdir(out)) == [BASE]
    assert sorted(os.listdir(out / BASE)) == [
        "COMPLETED", "info.validation.json", "stats.validation.json",
        "validation.tfrecord-00000-of-00002", "validation.tfrecord-00001-of-00002"]
    assert report.runner == "FnApiRunner (in_memory, 1 worker)"


def test_count_check_names_every_disagreement():
    count = cache_counts.SplitCount(task="t", split="s", source=10, visited=9, dropped=2, kept=7,
                                    rows=7, stats_examples=7, records=7, shard_files=3,
                                    num_shards=4)
    assert count.problems() == ["3 of 4 shard files exist",
                                "the writers visited 9 of the source's 10 examples",
                                "source 10 - dropped 2 = 8, but the writers kept 7"]
    twin = cache_counts.SplitCount(task="t", split="s", source=4, visited=4, dropped=0, kept=4,
                                   rows=8, stats_examples=8, records=8, shard_files=1,
                                   num_shards=1, one_row_per_example=False)
    assert cache_counts.check(twin) is twin


def test_runner_is_chosen_explicitly():
    default = beam_runners.choose(None)
    workers = os.cpu_count() or 1
    assert (default.name, default.workers) == ("FnApiRunner", workers)
    assert default.mode == ("multi_processing" if workers > 1 else "in_memory")
    direct = beam_runners.choose(["--runner=DirectRunner", "--direct_num_workers=2",
                                  "--direct_running_mode=multi_threading", "--foo=1"])
    assert direct.describe() == "FnApiRunner (multi_threading, 2 workers)"
    assert "--foo=1" in direct.options and not any(o.startswith("--runner") for o in
                                                    direct.options)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    assert isinstance(beam_runners.make_pipeline(direct).runner, FnApiRunner)
    flink = beam_runners.choose(["--runner=FlinkRunner", "--parallelism=4"])
    assert (flink.describe(), flink.options) == ("FlinkRunner", ("--runner=FlinkRunner",
                                                                 "--parallelism=4"))


def test_records_are_tensorflows_example_and_tfrecord_bytes(tmp_path):
    row = {"inputs": tf.constant([5, 6, 31999]).numpy(), "inputs_pretokenized": "héllo |||",
           "idx": tf.constant([3, 1]).numpy(), "is_correct": True, "weight": 1.0,
           "answer_choices": ["yes", "no"]}
    mine = tf.train.Example.FromString(example_records.serialize_example(row))
    assert mine == seqio.dict_to_tfexample(row)
    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(5):
            writer.write(b"x" * i)
    buffer = io.BytesIO()
    ours = example_records.RecordWriter(buffer)
    for i in range(5):
        ours.write(b"x" * i)
    assert buffer.getvalue() == open(path, "rb").read()
    assert example_records.count_records(path) == 5
    data = bytearray(buffer.getvalue())
    data[30] ^= 1  # inside the third record's data
    open(path, "wb").write(bytes(data))
    with pytest.raises(example_records.RecordFileError, match="data CRC"):
        example_records.count_records(path)
    open(path, "wb").write(buffer.getvalue()[:-3])
    with pytest.raises(example_records.RecordFileError, match="truncated"):
        example_records.count_records(path)


def _promptsource_rows(ps_templates, template, reader):
    """(inputs, targets) multiset of promptsource's own rendering, with P3's keep rule."""
    rows = collections.Counter()
    for _, example in reader.read(range(len(reader))):
        random.seed(templates.choice_seed(0, example))  # `choice`: our per-example seed
        parts = ps_templates[template].apply(example)
        if len(parts) == 2 and parts[0]:
            rows[(parts[0], parts[1] or templates.NO_LABEL)] += 1
    return rows


def test_default_mode_writes_what_promptsource_renders(vocab, shared_data_dir, tmp_path):
    """The CI version of bench.cache_scale's 10^5-example run: three glue/mrpc templates (one
    drops the non-paraphrases), default runner options (FnApiRunner, a worker process per core)."""
    ps = pytest.importorskip("promptsource.templates")
    infos = [i for i in registry.dataset_tasks("glue", "mrpc")
             if i.template_name in ("equivalent", "generate_paraphrase", "replace")]
    assert len(infos) == 3
    report = cache_build.cache_tasks([i.name for i in infos], str(tmp_path), splits=["validation"],
                                     data_dir=str(shared_data_dir), min_shards=2,
                                     progress=lambda line: None)
    assert report.runner.startswith("FnApiRunner (")
    peer = ps.DatasetTemplates("glue", "mrpc")
    reader = sources.open_split("glue", "mrpc", "validation", shared_data_dir)
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("inputs_pretokenized",
                                                                "targets_pretokenized")}
    for info in infos:
        expected = _promptsource_rows(peer, info.template_name, reader)
        folder = tmp_path / info.name
        cached = collections.Counter()
        for record in tf.data.TFRecordDataset(sorted(map(str, folder.glob("validation.*")))):
            parsed = tf.io.parse_single_example(record, spec)
            cached[tuple(parsed[k].numpy().decode() for k in spec)] += 1
        row = next(r for r in report.rows if r.task == info.name)
        assert cached == expected, info.name
        assert (row.examples, row.source, row.dropped) == (
            sum(expected.values()), 408, 408 - sum(expected.values()))
        stats = json.loads((folder / "stats.validation.json").read_text())
        assert stats["examples"] == sum(expected.values())
