"""`t0-score` with CHECKPOINT_PATH and OUTPUT_DIR on `gs://`, against a real GCS API server
(fake-gcs-server, tests/gcs/): the real tiny T5X checkpoint converted into the bucket (its
vocabulary read back through a verified local copy), every output written there, the same
scores as a local run, and a task killed between its rows and its marker scored again."""
import json
import os

import pytest

from t0_jax import storage
from t0_jax.bin import convert, score
from t0_jax.scoring import plots, report
from tests.scoring import bigbench_files


@pytest.fixture(scope="module")
def gcs(gcs_bucket):
    """The session's emulator (tests/gcs/fixtures.py), its settings applied to this process."""
    with gcs_bucket.applied():
        yield gcs_bucket


def _argv(checkpoint, tasks, output_dir):
    return ["--gin_file=runs/score.gin", f"--gin.CHECKPOINT_PATH={checkpoint}",
            f"--gin.MIXTURE_OR_TASK_NAME={tasks}", f"--gin.OUTPUT_DIR={output_dir}",
            "--gin_bindings=score_run.progress = False",
            "--gin_bindings=score_run.compilation_cache_dir = None"]


def test_score_outputs_in_a_bucket(gcs, t5x_fixture, spm_model_path, tmp_path, monkeypatch):
    root = gcs.root("score")
    assert convert.main(["t5x-to-t0", str(t5x_fixture), f"{root}/ckpt", "--vocab",
                         spm_model_path]) == 0
    names = bigbench_files.write_tasks(tmp_path / "bigbench") / "choice_task"  # ranked only
    local = tmp_path / "local"
    assert convert.main(["t5x-to-t0", str(t5x_fixture), str(local / "ckpt"), "--vocab",
                         spm_model_path]) == 0
    assert score.main(_argv(local / "ckpt", names, local / "out")) == 0

    monkeypatch.chdir(tmp_path / "bigbench")  # nothing may land in the working directory
    out = f"{root}/out"
    assert score.main(_argv(f"{root}/ckpt", names, out)) == 0
    objects = gcs.list_objects(out)
    for name in (report.SCORES_FILE, report.RESULTS_JSON, report.RESULTS_CSV, plots.PLOT_FILE,
                 "config.gin"):
        assert f"{out}/{name}" in objects, name
    assert not [o for o in objects if ".write-probe-" in o]
    assert gcs.read_object(f"{out}/{plots.PLOT_FILE}").startswith(b"\x89PNG")
    remote = json.loads(gcs.read_object(f"{out}/{report.RESULTS_JSON}"))
    here = json.loads((local / "out" / report.RESULTS_JSON).read_text())
    assert remote["checkpoint"] == f"{root}/ckpt"
    assert remote["tasks"].keys() == here["tasks"].keys()
    for task, result in here["tasks"].items():
        assert remote["tasks"][task]["accuracy"] == result["accuracy"], task
    assert gcs.read_object(f"{out}/{report.SCORES_FILE}") == (
        local / "out" / report.SCORES_FILE).read_bytes()
    assert sorted(os.listdir(tmp_path / "bigbench")) == ["choice_task", "gen_task"]

    # killed between a task's rows and its marker: the rerun scores that task again
    done = next(o for o in objects if o.endswith(report.DONE_SUFFIX))
    rows = done[:-len(report.DONE_SUFFIX)] + ".jsonl"
    assert rows in objects
    storage.remove(done)
    storage.write_text(rows, "half a file\n")
    assert score.main(_argv(f"{root}/ckpt", names, out)) == 0
    assert gcs.read_object(rows) != b"half a file\n" and done in gcs.list_objects(out)
    assert gcs.read_object(f"{out}/{report.SCORES_FILE}") == (
        local / "out" / report.SCORES_FILE).read_bytes()
