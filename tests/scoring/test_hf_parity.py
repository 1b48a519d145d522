"""Per-choice log-likelihoods and predictions equal the t-zero protocol on PyTorch T5.

The peer is fully independent of our pipeline: raw GLUE/MRPC validation examples from the
shared mirror, rendered by promptsource's own `Template.apply`, tokenized by SentencePiece,
scored by transformers' T5ForConditionalGeneration (input without EOS, labels = choice + EOS,
Σ log_softmax at the labels). Ours: the same random weights loaded from the Hugging Face
directory through CHECKPOINT_PATH, the registry's `_score_eval` tasks, the encode-once scorer.
Also here: a second run over the same OUTPUT_DIR skips the tasks that finished.
"""
import json
import pathlib

import numpy as np
import pytest

from t0_jax.bin.score_data import ScoreData
from t0_jax.scoring import report, runner
from tests.scoring.hf_peer import TZeroPeer, save_random_t5

TEMPLATES = ("equivalent", "paraphrase")
TASKS = [f"glue_mrpc_{t}_score_eval" for t in TEMPLATES]
N_EXAMPLES = 20


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, spm_model_path):
    return save_random_t5(tmp_path_factory.mktemp("hf_t5"), spm_model_path)


@pytest.fixture(scope="module")
def scored(hf_dir, shared_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("score_out")
    cfg = runner.ScoreRun(checkpoint_path=str(hf_dir), mixture_or_task_name=",".join(TASKS),
                          output_dir=str(out), data_dir=str(shared_data_dir),
                          max_examples=N_EXAMPLES, compilation_cache_dir=None, progress=False)
    return cfg, runner.run(cfg, ScoreData(cfg))


def _peer_scores(hf_dir, data_dir):
    """{(task, example): (choices, log-likelihoods, correct flags)} the t-zero way."""
    from promptsource.templates import DatasetTemplates

    peer = TZeroPeer(hf_dir)
    lines = pathlib.Path(data_dir, "glue", "mrpc", "validation.jsonl").read_text().splitlines()
    examples = [json.loads(line) for line in lines[:N_EXAMPLES]]
    out = {}
    for name, task in zip(TEMPLATES, TASKS):
        template = DatasetTemplates("glue", "mrpc")[name]
        for i, example in enumerate(examples):
            prompt, target = template.apply(example)
            choices = template.get_answer_choices_list(example)
            out[(task, i)] = (choices, peer.choice_log_likelihoods(prompt, choices),
                              [c == target.strip() for c in choices])
    return out


def test_log_likelihoods_and_predictions_match_tzero_peer(scored, hf_dir, shared_data_dir):
    cfg, results = scored
    peer = _peer_scores(hf_dir, shared_data_dir)
    rows = [json.loads(line) for line in
            pathlib.Path(cfg.output_dir, report.SCORES_FILE).read_text().splitlines()]
    assert len(rows) == sum(len(c) for c, _, _ in peer.values())
    ours = {}
    for r in rows:
        ours.setdefault((r["task"], r["example"]), []).append(r)
    assert set(ours) == set(peer)
    correct = {task: 0 for task in TASKS}
    for key, (choices, lls, flags) in peer.items():
        mine = sorted(ours[key], key=lambda r: r["choice"])
        assert [r["choice_text"] for r in mine] == choices
        assert [r["is_correct"] for r in mine] == flags
        np.testing.assert_allclose([r["log_likelihood"] for r in mine], lls, rtol=0, atol=1e-3)
        ours_pred = int(np.argmax([r["log_likelihood"] for r in mine]))
        assert ours_pred == int(np.argmax(lls)), key  # identical predictions (first max)
        correct[key[0]] += flags[int(np.argmax(lls))]
    for task in TASKS:
        assert results["tasks"][task]["accuracy"] == pytest.approx(correct[task] / N_EXAMPLES)
        assert results["tasks"][task]["dataset"] == "glue/mrpc"
    assert results["datasets"]["glue/mrpc"]["num_templates"] == 2


def test_rerun_skips_finished_tasks(scored, monkeypatch):
    """Killed while scoring the second task, then killed again between its rows and its
    completion marker: each rerun redoes that task only, never trusting the rows alone."""
    cfg, results = scored
    out = pathlib.Path(cfg.output_dir)
    kept_rows, kept_done = map(pathlib.Path, report.task_paths(out, TASKS[0]))
    redo_rows, redo_done = map(pathlib.Path, report.task_paths(out, TASKS[1]))
    before = {p: p.stat().st_mtime_ns for p in (kept_rows, kept_done, redo_rows)}
    scores_before = (out / report.SCORES_FILE).read_text()
    redo_done.unlink()  # as if the run had been killed while scoring the second task

    def killed(folder, name="COMPLETED", payload=None):
        raise KeyboardInterrupt(f"killed before writing {name}")
    monkeypatch.setattr(report.storage, "mark_complete", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, ScoreData(cfg))
    assert redo_rows.stat().st_mtime_ns != before[redo_rows] and not redo_done.exists()
    assert report.finished_task(out, TASKS[1], json.loads(kept_done.read_text())[
        "fingerprint"]) is None  # rows without a marker do not count
    rewritten = redo_rows.stat().st_mtime_ns
    monkeypatch.undo()
    again = runner.run(cfg, ScoreData(cfg))
    assert kept_rows.stat().st_mtime_ns == before[kept_rows]  # not scored again
    assert kept_done.stat().st_mtime_ns == before[kept_done]
    assert redo_done.is_file() and redo_rows.stat().st_mtime_ns != rewritten
    assert (out / report.SCORES_FILE).read_text() == scores_before
    assert again["tasks"][TASKS[0]]["accuracy"] == results["tasks"][TASKS[0]]["accuracy"]
    assert again["overall"] == results["overall"]
