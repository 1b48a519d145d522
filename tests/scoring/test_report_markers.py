"""A task's score file counts only with its completion marker, written last, on a disk and in a
bucket (fake-gcs-server, tests/gcs/): a run killed between the rows and the marker — even one
rewriting a task finished earlier under another fingerprint — leaves nothing that reads as
complete."""
import pytest

from t0_jax import storage
from t0_jax.scoring import report

ROWS = [{"task": "t", "example": 0, "choice": 0, "log_likelihood": -1.5}]


@pytest.fixture(params=["local", "gcs"])
def output_dir(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "out")
        return
    emulator = request.getfixturevalue("gcs_bucket")
    with emulator.applied():
        yield emulator.root("report")


def test_rows_without_their_marker_never_count(output_dir, monkeypatch):
    report.write_task(output_dir, "t", ROWS, {"task": "t", "fingerprint": {"run": 1}})
    marker, rows = report.finished_task(output_dir, "t", {"run": 1})
    assert rows == ROWS and marker["fingerprint"] == {"run": 1}
    assert report.finished_task(output_dir, "t", {"run": 2}) is None

    def killed(folder, name="COMPLETED", payload=None):
        raise KeyboardInterrupt("killed between the rows and the marker")
    monkeypatch.setattr(report.storage, "mark_complete", killed)
    changed = [dict(ROWS[0], log_likelihood=-9.0)]
    with pytest.raises(KeyboardInterrupt):
        report.write_task(output_dir, "t", changed, {"task": "t", "fingerprint": {"run": 2}})
    rows_path, done_path = report.task_paths(output_dir, "t")
    assert storage.exists(rows_path) and not storage.exists(done_path)
    assert report.finished_task(output_dir, "t", {"run": 1}) is None  # old marker gone first
    assert report.finished_task(output_dir, "t", {"run": 2}) is None

    monkeypatch.undo()
    report.write_task(output_dir, "t", changed, {"task": "t", "fingerprint": {"run": 2}})
    assert report.finished_task(output_dir, "t", {"run": 2})[1] == changed
