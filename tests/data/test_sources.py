"""Raw example sources: the streamed JSONL mirror, its line index, the not-found message and
per-host shards. The Hub fallback (real `datasets` on an offline Hub cache) and remote mirrors
are tested in test_hub.py."""
import json

import numpy as np
import pytest

from t0_jax.data import sources
from tests.data import offline_hub

MIRROR_FILES = ("ag_news/test", "glue/mrpc/train", "glue/mrpc/validation", "piqa/validation",
                "social_i_qa/validation")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    offline_hub.go_offline(monkeypatch, tmp_path / "empty_hf")  # the Hub fallback: no network
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(sources.INDEX_CACHE_ENV, str(tmp_path / "line_index"))
    sources.set_data_dir(None)
    sources.clear_cache()
    yield
    sources.set_data_dir(None)
    sources.clear_cache()


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("name", MIRROR_FILES)
def test_offset_index_reads_exactly_what_a_full_parse_reads(shared_data_dir, name):
    path = shared_data_dir / f"{name}.jsonl"
    with open(path, "rb") as handle:
        lines = handle.readlines()
    expected_starts = np.cumsum([0] + [len(line) for line in lines])  # every line is non-blank
    assert sources.scan_line_starts(path).tolist() == expected_starts.tolist()
    reader = sources.open_split(*_split_of(name), data_dir=shared_data_dir)
    assert len(reader) == len(lines)
    assert list(reader) == [json.loads(line) for line in lines]
    picks = [len(lines) - 1, 0, len(lines) // 2]  # random access, any order
    assert [row for _, row in reader.read(picks)] == [json.loads(lines[i]) for i in picks]


def _split_of(name):
    parts = name.split("/")
    return parts[0], (parts[1] if len(parts) == 3 else None), parts[-1]


def test_real_mirror_fields_and_types(shared_data_dir):
    mrpc = sources.open_split("glue", "mrpc", "validation", data_dir=shared_data_dir)
    assert len(mrpc) == 408 and {"sentence1", "sentence2", "label", "idx"} <= set(mrpc[0])
    assert isinstance(mrpc[0]["label"], int)
    social = sources.open_split("social_i_qa", None, "validation", data_dir=shared_data_dir)
    assert len(social) == 1954 and social[0]["label"] in {"1", "2", "3"}
    with pytest.raises(IndexError, match="example 1954 is out of range"):
        social[1954]


def test_blank_lines_and_a_missing_final_newline(tmp_path):
    path = tmp_path / "anli" / "dev_r1.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('\n{"a": 1}\n \t\n\n{"a": 2}\r\n{"a": "x y"}')
    sources._SCAN_BLOCK, block = 5, sources._SCAN_BLOCK  # lines straddle scan blocks
    try:
        reader = sources.open_split("anli", None, "dev_r1", data_dir=tmp_path)
    finally:
        sources._SCAN_BLOCK = block
    assert list(reader) == [{"a": 1}, {"a": 2}, {"a": "x y"}]


def test_line_index_is_cached_on_disk_and_memory_mapped(tmp_path, monkeypatch):
    path = tmp_path / "piqa" / "validation.jsonl"
    _write_jsonl(path, [{"goal": f"g{i}"} for i in range(5)])
    first = sources.line_index(path)
    saved = list((tmp_path / "line_index").glob("*.npy"))
    assert len(saved) == 1 and isinstance(sources.line_index(path), np.memmap)
    monkeypatch.setattr(sources, "scan_line_starts", lambda p: pytest.fail("rescanned"))
    assert sources.line_index(path).tolist() == first.tolist()
    monkeypatch.undo()  # the scan again, and an index cache that cannot be written
    monkeypatch.setenv(sources.INDEX_CACHE_ENV, "/proc/not-writable")
    assert sources.line_index(path).tolist() == first.tolist()  # unwritable cache: just a scan


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    for name, text in (("env", "from env"), ("set", "from set"), ("arg", "from arg")):
        _write_jsonl(tmp_path / name / "anli" / "dev_r1.jsonl", [{"premise": text}])
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "env"))
    assert sources.open_split("anli", None, "dev_r1")[0]["premise"] == "from env"
    sources.set_data_dir(tmp_path / "set")
    assert sources.open_split("anli", None, "dev_r1")[0]["premise"] == "from set"
    arg = tmp_path / "arg"
    assert sources.open_split("anli", None, "dev_r1", data_dir=arg)[0]["premise"] == "from arg"
    assert sources.reopen(sources.open_split("anli", None, "dev_r1", data_dir=arg).spec)[0] == {
        "premise": "from arg"}


def test_readers_are_shared_until_the_file_changes(tmp_path):
    path = tmp_path / "super_glue" / "rte" / "validation.jsonl"
    _write_jsonl(path, [{"premise": "p", "hypothesis": "h", "idx": 0, "label": 1}])
    first = sources.open_split("super_glue", "rte", "validation", data_dir=tmp_path)
    assert sources.open_split("super_glue", "rte", "validation", data_dir=tmp_path) is first
    assert first[0] is not first[0]  # fresh dicts: callers may modify them
    _write_jsonl(path, [{"premise": "p2", "hypothesis": "h", "idx": 0, "label": 0}] * 2)
    changed = sources.open_split("super_glue", "rte", "validation", data_dir=tmp_path)
    assert [row["premise"] for row in changed] == ["p2", "p2"]


def test_missing_dataset_message_lists_every_source_tried(tmp_path):
    with pytest.raises(sources.DataNotFoundError) as info:
        sources.open_split("super_glue", "cb", "validation", data_dir=tmp_path)
    message = str(info.value)
    expected_path = tmp_path / "super_glue" / "cb" / "validation.jsonl"
    assert "'super_glue' subset 'cb' split 'validation'" in message
    assert f"local mirror: {expected_path}" in message
    assert "Hugging Face Hub aps/super_glue@refs/convert/parquet (tasks/hub_sources.yaml row " \
           "'super_glue/cb'): HubFetchError" in message and "HF_HUB_OFFLINE" in message
    assert "TFDS `super_glue/cb`" in message and "array_record" in message
    assert f"t0-data --datasets super_glue/cb --data_dir {tmp_path}" in message
    assert "write the split as JSON lines" in message and "T0_DATA_DIR" in message


def test_missing_data_dir_and_manual_download_are_explained():
    with pytest.raises(sources.DataNotFoundError) as info:
        sources.open_split("story_cloze", "2016", "validation")
    message = str(info.value)
    assert "no data dir" in message and "manual download" in message
    assert "story_cloze/2016/validation.jsonl" in message


def test_bad_lines_name_file_and_line(tmp_path):
    path = tmp_path / "piqa" / "validation.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"goal": "g"}\n\n{"goal": \n[1, 2]\n"text"\n{"goal": "\xff"}\n')
    reader = sources.open_split("piqa", None, "validation", data_dir=tmp_path)
    assert len(reader) == 5 and reader[0] == {"goal": "g"}
    with pytest.raises(sources.BadExampleError, match=r"validation.jsonl:3 is not valid JSON"):
        reader[1]
    with pytest.raises(ValueError, match=r"validation.jsonl:4 is a JSON list, not an object"):
        reader[2]
    with pytest.raises(ValueError, match=r"validation.jsonl:5 is a JSON str, not an object"):
        reader[3]
    with pytest.raises(ValueError, match=r"validation.jsonl:6 is not valid JSON"):
        reader[4]


def test_shards_are_disjoint_cover_the_split_and_keep_global_indices(tmp_path, monkeypatch):
    _write_jsonl(tmp_path / "anli" / "dev_r1.jsonl", [{"i": i} for i in range(10)])
    reader = sources.open_split("anli", None, "dev_r1", data_dir=tmp_path)
    reads = []
    original = type(reader)._example
    monkeypatch.setattr(type(reader), "_example",
                        lambda self, i: reads.append(i) or original(self, i))
    shards = [list(reader.shard(k, 3)) for k in range(3)]
    assert reads == [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]  # each shard read only its own examples
    assert [[i for i, _ in shard] for shard in shards] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert all(row == {"i": i} for shard in shards for i, row in shard)
    assert sorted(i for shard in shards for i, _ in shard) == list(range(10))
    assert len(reader.shard(1, 3)) == 3 and reader.shard(0, 1).indices == range(10)
    assert len(reader.shard(11, 12)) == 0
    with pytest.raises(ValueError, match="shard_index=3, num_shards=3"):
        reader.shard(3, 3)
