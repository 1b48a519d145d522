"""Execute every notebook headless (nbclient, the venv's own python3 kernel) and check that the
outputs hold the values the notebooks are about — not just that they ran."""
import os
import pathlib
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def _kernel_name() -> str:
    """A kernelspec running THIS interpreter (the venv), so the notebooks see t0_jax."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # jupyter_client runs a bare "python"/"python3" as sys.executable (the venv's interpreter)
    if spec.argv[0] not in ("python", "python3") and (
            os.path.realpath(spec.argv[0]) != os.path.realpath(sys.executable)):
        pytest.skip(f"kernel python3 runs {spec.argv[0]}, not {sys.executable}")
    return "python3"


def _run(name: str, tmp_path, **env) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name=_kernel_name(),
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    nbformat.write(nb, tmp_path / f"{name}.ipynb")  # executed copy, for a look when it fails
    return _text(nb)


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts.append(data.get("text/plain", ""))
            if "image/png" in data:
                parts.append("<image/png>")
    return "\n".join(parts)


def test_01_prompts_and_tasks(tmp_path):
    text = _run("01_prompts_and_tasks", tmp_path, T0_NOTEBOOK_DIR=tmp_path)
    assert "feeling_short      unseen" in text and "pos_or_neg         seen" in text
    assert "super_glue/rte has 10 promptsource templates" in text
    assert "t0_train: 313 tasks, total rate 17,277,798" in text  # REFERENCE.md §4
    assert re.search(r"cnn_dailymail/3\.0\.0\s+15\.\d%", text)  # largest share
    assert "synth_train: 24 tasks (seen templates only)" in text  # 6 trained templates x 4
    assert "(1 = EOS)" in text and "<image/png>" in text


def test_02_zero_shot_scoring(tmp_path):
    text = _run("02_zero_shot_scoring", tmp_path, T0_NOTEBOOK_DIR=tmp_path)
    assert "synth_completion   median" in text and "synth_same_kind    median" in text
    difference = float(re.search(r"max \|direct - t0-score\| = (\S+)", text).group(1))
    assert difference < 1e-3  # the scorer's numbers are the model's log-likelihoods
    assert (tmp_path / "scores" / "results.json").is_file() and "<image/png>" in text


def test_03_train_tiny(tmp_path):
    text = _run("03_train_tiny", tmp_path, T0_NOTEBOOK_DIR=tmp_path, T0_NOTEBOOK_TRAIN_STEPS=30)
    first, last = map(float, re.search(r"first 5 steps (\S+) -> last 5 steps (\S+)", text).groups())
    assert last < 0.7 * first  # it learns
    assert "checkpoint: ['30']" in text and "<image/png>" in text
