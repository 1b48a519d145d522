"""t0-data's table and mirror builder against the REAL huggingface_hub + datasets, offline: a Hub
cache filled by tests/data/offline_hub.py as the real repositories are laid out (aps/super_glue's
parquet conversion, facebook/anli's dev_r1..3 files, allenai/winogrande's winogrande_xl,
Rowan/hellaswag's conversion), HF_HUB_OFFLINE=1."""
import dataclasses
import json

import pytest

from t0_jax import storage
from t0_jax.data import catalogue, hub, mirror_build, sources, templates
from tests.data import offline_hub

RTE = ("super_glue", "rte", "validation")
ANLI = [("anli", None, f"dev_r{r}") for r in (1, 2, 3)]
WINOGRANDE = ("winogrande", "winogrande_xl", "validation")
HELLASWAG = ("hellaswag", None, "validation")
STORY_CLOZE = ("story_cloze", "2016", "validation")
CACHED = [RTE, *ANLI, WINOGRANDE, HELLASWAG]


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    import datasets  # noqa: F401  (a core dependency: fail, never skip)
    root = tmp_path_factory.mktemp("hf")
    offline_hub.fill_cache(root / "hub", CACHED)
    offline_hub.write_story_cloze_csv(root / "story_cloze")
    return root


@pytest.fixture
def offline(hub_root, monkeypatch, tmp_path):
    offline_hub.go_offline(monkeypatch, hub_root)
    monkeypatch.setenv(sources.INDEX_CACHE_ENV, str(tmp_path / "line_index"))
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    sources.set_data_dir(None)
    sources.clear_cache()
    yield hub_root
    sources.clear_cache()


def _entries(*names):
    return [mirror_build.resolve_dataset(name) for name in names]


# ----------------------------------------------------------------------------- the table


def test_table_covers_the_catalogue_and_cites_every_row():
    table = hub.load_table()
    assert hub.missing_rows() == []
    assert all(s.citations and all(c.startswith("https://") for c in s.citations)
               for s in table.values())
    held_out = catalogue.load_selection().held_out
    assert all(table[key].verified for key in held_out)  # every held-out row was read somewhere
    assert table[("anli", None)].splits[:3] == ("train_r1", "dev_r1", "test_r1")
    assert table[("super_glue", "rte")].pattern("validation") == "rte/validation/*.parquet"
    assert table[("super_glue", "rte")].revision == "refs/convert/parquet"
    for source in table.values():  # the conversion's layout wherever that revision is used
        if source.revision == "refs/convert/parquet":
            assert source.files.split("/")[1:] == ["{split}", "*.parquet"], source.display
    assert catalogue.find_entry("anli").expected_size("dev_r3") == 1200
    assert sum(n for s, n in catalogue.find_entry("anli").split_sizes if s.startswith("train")) \
        == catalogue.find_entry("anli").train_size


def test_table_errors_name_the_file_and_row(tmp_path):
    bad = tmp_path / "hub_sources.yaml"
    bad.write_text("citations: {a: https://x}\ndatasets:\n  super_glue/rte: {repo: aps/super_glue,"
                   " revision: main, files: rte.parquet, splits: [train], cite: [a], "
                   "verified: true}\n")
    with pytest.raises(hub.HubTableError, match=r"row 'super_glue/rte'.*must contain \{split\}"):
        hub.load_table(bad)
    bad.write_text("citations: {}\ndatasets:\n  anli: {repo: facebook/anli, revision: main, "
                   "files: '{split}.parquet', splits: [dev_r1], cite: [nowhere], verified: true}\n")
    with pytest.raises(hub.HubTableError, match=r"row 'anli' cites \['nowhere'\]"):
        hub.load_table(bad)


def test_rows_are_renamed_then_cast_to_the_2021_fields():
    trec = hub.source_for("trec")
    assert trec.convert({"text": "Why?", "coarse_label": 2, "fine_label": 5}) == {
        "text": "Why?", "label-coarse": 2, "label-fine": 5}
    story = hub.source_for("story_cloze", "2016")
    assert story.convert({"InputStoryid": "s", "AnswerRightEnding": "2"}) == {
        "story_id": "s", "answer_right_ending": 2}


# ----------------------------------------------------------------------------- fetching


def test_offline_hub_cache_resolves_through_the_table(offline):
    for key in CACHED:
        source = hub.source_for(key[0], key[1])
        fetched = hub.load_split(source, key[2])
        repo, revision, repo_path = offline_hub.REPO_FILES[key]
        ref = offline / "hub" / f"datasets--{repo.replace('/', '--')}" / "refs" / revision
        assert fetched.provenance == {"repo": repo, "revision": revision,
                                      "commit": ref.read_text(), "files": [repo_path],
                                      "verified_row": True}
        assert list(hub.iter_rows(fetched)) == offline_hub.rows_2021(key), key
    with pytest.raises(hub.HubFetchError, match=r"aps/super_glue@refs/convert/parquet has no "
                                                r"files matching cb/validation/\*\.parquet.*"
                                                r"HF_HUB_OFFLINE"):
        hub.load_split(hub.source_for("super_glue", "cb"), "validation")
    moved = dataclasses.replace(hub.source_for("hellaswag"), repo="Rowan/hellaswag-moved")
    with pytest.raises(hub.HubFetchError, match=r"Rowan/hellaswag-moved@refs/convert/parquet "
                                                r"files default/validation/\*\.parquet: "
                                                r"LocalEntryNotFoundError"):
        hub.load_split(moved, "validation")


def test_built_mirror_holds_and_renders_exactly_the_2021_rows(offline, tmp_path):
    data_dir = str(tmp_path / "mirror")
    plan = mirror_build.dataset_plan(["super_glue/rte", "anli", "winogrande/winogrande_xl",
                                      "story_cloze/2016"], ["validation"])
    assert [len(s) for s in plan.values()] == [1, 3, 1, 1]  # ANLI: dev_r1, dev_r2, dev_r3
    results = mirror_build.build(plan, data_dir, story_cloze_dir=str(offline / "story_cloze"),
                                 progress=False)
    assert [(r.dataset, r.split, r.status, r.examples) for r in results] == [
        ("super_glue/rte", "validation", "written", 277),
        ("anli", "dev_r1", "written", 1000), ("anli", "dev_r2", "written", 1000),
        ("anli", "dev_r3", "written", 1200),
        ("winogrande/winogrande_xl", "validation", "written", 1267),
        ("story_cloze/2016", "validation", "written", 1871)]
    for key in [RTE, *ANLI, WINOGRANDE, STORY_CLOZE]:
        name, subset, split = key
        reader = sources.open_split(name, subset, split, data_dir=data_dir)
        assert isinstance(reader, sources.MirrorReader)
        expected = offline_hub.rows_2021(key)
        assert list(reader) == expected  # field names, values AND types (int labels, ...)
        rendered = 0
        for template in templates.load_templates(name, subset):
            for mirrored, original in zip(reader.read(range(4)), expected[:4]):
                got = templates.render_example(template, mirrored[1])
                assert got == templates.render_example(template, original), template.name
                rendered += got is not None
        assert rendered > 0, key
    marker = storage.read_marker(f"{data_dir}/super_glue/rte", "validation.jsonl.complete")
    assert marker["examples"] == 277 and marker["repo"] == "aps/super_glue"
    assert marker["files"] == ["rte/validation/0000.parquet"]


def test_resume_skips_marked_splits_and_redoes_the_unmarked(offline, tmp_path):
    data_dir = str(tmp_path / "mirror")
    plan = mirror_build.dataset_plan(["super_glue/rte", "winogrande/winogrande_xl"],
                                     ["validation"])
    assert {r.status for r in mirror_build.build(plan, data_dir, progress=False)} == {"written"}
    rte = tmp_path / "mirror" / "super_glue" / "rte"
    (rte / "validation.jsonl.complete").unlink()  # killed after the file, before its marker
    (rte / "validation.jsonl").write_text('{"half": ')
    again = mirror_build.build(plan, data_dir, progress=False)
    assert [(r.split, r.status, r.examples) for r in again] == [
        ("validation", "written", 277), ("validation", "skipped", 1267)]
    assert len((rte / "validation.jsonl").read_text().splitlines()) == 277


def test_a_failed_dataset_is_named_and_the_others_land(offline, tmp_path):
    data_dir = str(tmp_path / "mirror")
    rte, cb, story = _entries("super_glue/rte", "super_glue/cb", "story_cloze/2016")
    wrong_count = dataclasses.replace(rte, split_sizes=(("validation", 999),))
    plan = {cb: ["validation"], story: ["validation"], wrong_count: ["validation"],
            mirror_build.resolve_dataset("anli"): ["dev_r1"]}
    results = {r.dataset: r for r in mirror_build.build(plan, data_dir, progress=False)}
    assert results["anli"].status == "written"
    assert results["super_glue/cb"].status == "failed"
    assert "aps/super_glue@refs/convert/parquet" in results["super_glue/cb"].reason
    assert "--story_cloze_dir" in results["story_cloze/2016"].reason
    mismatch = results["super_glue/rte"]
    assert (mismatch.status, mismatch.examples, mismatch.expected) == ("failed", 277, 999)
    assert not storage.is_complete(f"{data_dir}/super_glue/rte", "validation.jsonl.complete")
    table = mirror_build.summary_table(list(results.values()))
    assert "super_glue/cb" in table and "expects 999" in table
    checked = mirror_build.check({rte: ["validation", "test"]}, data_dir)
    assert [(r.status, r.examples) for r in checked] == [("present", 277), ("missing", None)]


def test_source_fallback_reads_the_hub_through_the_same_table(offline, tmp_path):
    reader = sources.open_split("anli", None, "dev_r2", data_dir=tmp_path)  # empty mirror
    assert isinstance(reader, sources.HuggingFaceReader) and "facebook/anli@main" in \
        reader.description
    assert len(reader) == 1000 and list(reader.read([0, 999])) == [
        (i, row) for i, row in zip((0, 999), offline_hub.rows_2021(ANLI[1])[::999])]
    assert [i for i, _ in reader.shard(1, 400)] == [1, 401, 801]
    assert sources.open_split("anli", None, "dev_r2", data_dir=tmp_path) is reader
    with pytest.raises(sources.DataNotFoundError) as info:
        sources.open_split("super_glue", "cb", "validation", data_dir=tmp_path)
    message = str(info.value)
    assert "Hugging Face Hub aps/super_glue@refs/convert/parquet (tasks/hub_sources.yaml row " \
           "'super_glue/cb')" in message
    assert "t0-data --datasets super_glue/cb" in message


def test_remote_mirror_is_read_from_a_verified_local_copy(tmp_path, monkeypatch):
    """DATA_DIR on another scheme (fsspec's in-memory store here; gs:// in tests/gcs)."""
    monkeypatch.setenv(sources.INDEX_CACHE_ENV, str(tmp_path / "line_index"))
    sources.clear_cache()
    rows = offline_hub.rows_2021(RTE, 5)
    root = f"memory://t0-hub-test-{tmp_path.name}"
    storage.write_text(f"{root}/super_glue/rte/validation.jsonl",
                       "".join(json.dumps(r) + "\n" for r in rows))
    try:
        reader = sources.open_split("super_glue", "rte", "validation", data_dir=root)
        assert reader.description == f"{root}/super_glue/rte/validation.jsonl"
        assert not str(reader.path).startswith(str(tmp_path))  # a temporary copy of this process
        assert not (tmp_path / "line_index").exists()  # the copy's index sits beside the copy
        assert reader.path.parent.joinpath(reader.path.name).read_bytes() == storage.read_bytes(
            f"{root}/super_glue/rte/validation.jsonl")
        assert list(reader) == rows and reader[4] == rows[4]
        assert sources.has_mirror_split(root, "super_glue", "rte", "validation")
        assert not sources.has_mirror_split(root, "super_glue", "rte", "test")
    finally:
        storage.rmtree(root)
        sources.clear_cache()
