"""`t0-data` end to end, offline: the held-out suite from a Hub cache laid out as the real
repositories (tests/data/offline_hub.py), StoryCloze from its CSV; and a mirror on gs:// (the
fake-gcs-server emulator of tests/gcs) read back by `t0-tasks render`."""
import json
import subprocess
import sys

import pytest

from t0_jax import storage
from t0_jax.bin import data
from t0_jax.data import sources, templates
from tests.data import offline_hub

HELD_OUT_CACHED = [key for key in offline_hub.REPO_FILES
                   if key[:2] not in (("hellaswag", None), ("super_glue", "wic"))]
WIC = ("super_glue", "wic", "validation")
RTE = ("super_glue", "rte", "validation")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    import datasets  # noqa: F401  (a core dependency: fail, never skip)
    offline_hub.fill_cache(tmp_path / "hf" / "hub", HELD_OUT_CACHED)
    offline_hub.write_story_cloze_csv(tmp_path / "story_cloze")
    offline_hub.go_offline(monkeypatch, tmp_path / "hf")
    monkeypatch.setenv(sources.INDEX_CACHE_ENV, str(tmp_path / "line_index"))
    sources.clear_cache()
    yield tmp_path
    sources.clear_cache()


def _table(out):
    """{(dataset, split): (status, examples)} from the summary table."""
    rows = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and not line.startswith("t0-data"):
            rows[(parts[0], parts[1])] = (parts[2], parts[3])
    return rows


def test_held_out_suite_lands_except_what_cannot_be_fetched_and_resumes(offline, capsys):
    argv = ["--held_out", "--data_dir", str(offline / "mirror"), "--no_progress",
            "--story_cloze_dir", str(offline / "story_cloze")]
    assert data.main(argv) == 1
    out, err = capsys.readouterr()
    table = _table(out)
    assert table == {
        ("super_glue/rte", "validation"): ("written", "277"),
        ("super_glue/cb", "validation"): ("written", "56"),
        ("anli", "dev_r1"): ("written", "1,000"), ("anli", "dev_r2"): ("written", "1,000"),
        ("anli", "dev_r3"): ("written", "1,200"),
        ("super_glue/wsc.fixed", "validation"): ("written", "104"),
        ("winogrande/winogrande_xl", "validation"): ("written", "1,267"),
        ("super_glue/copa", "validation"): ("written", "100"),
        ("story_cloze/2016", "validation"): ("written", "1,871"),
        ("hellaswag", "validation"): ("failed", "-"),
        ("super_glue/wic", "validation"): ("failed", "-")}
    assert "Rowan/hellaswag@refs/convert/parquet" in out and "wic/validation/*.parquet" in out
    assert "2 of 11 splits" in err and "hellaswag, super_glue/wic" in err
    for key in HELD_OUT_CACHED:  # what landed is exactly the 2021 rows
        assert list(sources.open_split(*key, data_dir=offline / "mirror")) == \
            offline_hub.rows_2021(key)

    offline_hub.add_to_cache(offline / "hf" / "hub", WIC)  # the network came back for WiC
    assert data.main(argv) == 1  # hellaswag is still missing
    table = _table(capsys.readouterr()[0])
    assert table[("super_glue/wic", "validation")] == ("written", "638")
    assert table[("super_glue/rte", "validation")] == ("skipped", "277")
    assert table[("hellaswag", "validation")][0] == "failed"

    assert data.main(argv[:3] + ["--check"]) == 1  # counts only: hellaswag's file is missing
    table = _table(capsys.readouterr()[0])
    assert table[("anli", "dev_r3")] == ("present", "1,200")
    assert table[("hellaswag", "validation")] == ("missing", "-")


def test_bad_arguments_and_help(offline, capsys):
    assert data.main(["--datasets", "super_glue/rtee", "--data_dir", str(offline)]) == 2
    assert "did you mean super_glue/" in capsys.readouterr()[1]
    help_text = subprocess.run([sys.executable, "-m", "t0_jax.bin.data", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "t0-cache --import_p3" in help_text and "--story_cloze_dir" in help_text


def test_render_reads_a_mirror_that_t0_data_wrote_to_gs(offline, gcs_bucket, capsys):
    gcs = gcs_bucket  # tests/gcs: fails (never skips) when the emulator cannot start
    root = gcs.root("mirror")
    with gcs.applied():
        assert data.main(["--datasets", "super_glue/rte", "--data_dir", root,
                          "--no_progress"]) == 0
        capsys.readouterr()
    names = gcs.list_objects(root)
    assert names == [f"{root}/super_glue/rte/validation.jsonl",
                     f"{root}/super_glue/rte/validation.jsonl.complete"]
    lines = gcs.read_object(names[0]).decode().splitlines()
    assert [json.loads(x) for x in lines] == offline_hub.rows_2021(RTE)

    from t0_jax.bin import tasks  # noqa: PLC0415 - the registry (TensorFlow) only here
    from t0_jax.data import registry  # noqa: PLC0415

    template = templates.load_templates("super_glue", "rte")[0]
    task = registry.task_name("super_glue", "rte", template.name)
    sources.clear_cache()
    try:
        with gcs.applied():
            code = tasks.main(["render", "--task", task, "--split", "validation",
                               "--data_dir", root, "--n", "3", "--json"])
    finally:
        sources.set_data_dir(None)
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(x) for x in out.splitlines()]
    expected = offline_hub.rows_2021(RTE, 3)
    assert [r["raw"] for r in records] == expected
    for record, row in zip(records, expected):
        want = templates.render_example(template, row)
        assert (record["inputs"], record["targets"], record["answer_choices"]) == (
            want.inputs, want.targets, want.answer_choices)
    held_out = {"super_glue/rte", "super_glue/cb", "anli", "super_glue/wsc.fixed",
                "winogrande/winogrande_xl", "super_glue/copa", "story_cloze/2016", "hellaswag",
                "super_glue/wic"}
    assert set(data._mixture_datasets("t0_eval_score_eval")) == held_out  # --mixture's plan
