"""Published T0 figures: the file's own consistency, and t0-score's report putting them beside a
run's figures (mean beside mean, median beside median, differences) — from fake task records
with known accuracies, through the runner's real aggregation and writers (no model)."""
import csv
import json
import pathlib

import numpy as np
import pytest

from t0_jax.data import catalogue
from t0_jax.scoring import aggregate, published, report, runner
from t0_jax.scoring.aggregate import ChoiceScore

# The model cards' own "Average" column, over the nine datasets (read from the same cards).
CARD_AVERAGE_TOLERANCE = 0.1  # the cards average unrounded figures; ours are rounded to 0.1


def test_published_file_is_consistent():
    table = published.load()
    held_out = {e.display for e in catalogue.eval_datasets("BASE")}
    rounds = catalogue.load_selection().rounds.get("anli")
    for key, spec in table.datasets.items():  # every label is a held-out report label
        for label in spec["labels"]:
            base, _, round_name = label.rpartition("_")
            assert label in held_out or (base in held_out and round_name in rounds), label
    assert {label for s in table.datasets.values() for label in s["labels"]} == (
        held_out - {"anli"}) | {f"anli_{r}" for r in rounds}
    for model, info in table.models.items():
        assert info["hf_repo"].startswith("bigscience/"), model
        assert info["results"] or info["missing"], f"{model}: no figures and no reason"
        for key, figure in info["results"].items():
            assert table.source_url(figure.source).startswith("https://"), (model, key)
            assert figure.mean is not None or figure.median is not None, (model, key)
            if figure.rounds:  # ANLI as the mean of its rounds, where rounds are given
                means = [figure.rounds[label]["mean"] for label in table.datasets[key]["labels"]]
                assert figure.mean == pytest.approx(np.mean(means), abs=0.05)
        if "card_average" in info:  # the card's Average = mean of its nine per-dataset means
            means = [f.mean for f in info["results"].values()]
            assert len(means) == len(table.datasets)
            assert np.mean(means) == pytest.approx(info["card_average"]["value"],
                                                   abs=CARD_AVERAGE_TOLERANCE)
    assert table.figures("T0_3B")["rte"].mean == 64.6  # REFERENCE.md §11 transcription
    assert table.figures("T0")["anli"].mean == 41.0


def _write(tmp_path, text):
    path = tmp_path / "published.yaml"
    path.write_text(text)
    return path


BAD_FILE = """
sources: {card: {url: https://example.org/card}}
datasets: {anli: {labels: [anli_r1, anli_r2, anli_r3]}}
models:
  M:
    hf_repo: bigscience/M
    results:
      anli: {mean: 40.0, source: card, rounds: {anli_r1: {mean: 30.0}, anli_r2: {mean: 40.0},
             anli_r3: {mean: 41.0}}}
"""


def test_check_names_an_inconsistent_anli_mean_and_an_unknown_source(tmp_path):
    with pytest.raises(published.PublishedResultsError, match=r"models\.M\.results\.anli: mean "
                       r"40\.0 is not the mean of its rounds \[30\.0, 40\.0, 41\.0\] \(37\.00\)"):
        published.load(_write(tmp_path, BAD_FILE))
    fixed = BAD_FILE.replace("mean: 40.0, source", "mean: 37.0, source")
    assert published.load(_write(tmp_path, fixed)).figures("M")["anli"].mean == 37.0
    with pytest.raises(published.PublishedResultsError, match="source 'paper' is not one of"):
        published.load(_write(tmp_path, fixed.replace("source: card", "source: paper")))


def test_published_model_choice():
    table = published.load()
    assert published.choose_models(table, "auto", "/ckpt/hf/T0_3B/") == ["T0_3B"]
    assert published.choose_models(table, "auto", "bigscience/T0pp") == ["T0pp"]
    assert published.choose_models(
        table, "auto", "/hf/hub/models--bigscience--T0/snapshots/0a1b") == ["T0"]
    assert published.choose_models(table, "auto", "/ckpt/my_finetune") == ["T0_3B", "T0"]
    assert published.choose_models(table, ["T0", "T0_3B"]) == ["T0", "T0_3B"]
    assert published.choose_models(table, "none") == []
    with pytest.raises(ValueError, match=r"PUBLISHED_MODEL \['T5'\].*'T0_3B'"):
        published.choose_models(table, "T5")


# Fake held-out run: per task (template) the number of correct examples out of 20.
N = 20
CORRECT = {
    "super_glue_rte_a_score_eval": ("super_glue/rte", 12),  # 60 %
    "super_glue_rte_b_score_eval": ("super_glue/rte", 14),  # 70 %
    "super_glue_rte_c_score_eval": ("super_glue/rte", 15),  # 75 %
    "super_glue_cb_a_score_eval": ("super_glue/cb", 9),  # 45 %
    "super_glue_cb_b_score_eval": ("super_glue/cb", 11),  # 55 %
    "anli_a_r1_score_eval": ("anli_r1", 8),  # 40 %
    "anli_a_r2_score_eval": ("anli_r2", 7),  # 35 %
    "anli_a_r3_score_eval": ("anli_r3", 6),  # 30 %
    "anli_b_r3_score_eval": ("anli_r3", 8),  # 40 % -> r3 mean 35 %
}


def _records(task, correct):
    """N two-choice examples; choice 0 scores higher; the first `correct` have 0 right."""
    rows = []
    for i in range(N):
        right = 0 if i < correct else 1
        rows += [ChoiceScore(task, i, c, f"c{c}", -1.0 - c, 2, c == right).to_json()
                 for c in (0, 1)]
    return rows


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """results of runner._write_outputs over fake finished task records (T0_3B and T0)."""
    out = tmp_path_factory.mktemp("published_run")
    cfg = runner.ScoreRun(checkpoint_path="/ckpt/finetune", mixture_or_task_name="fake",
                          output_dir=str(out), published_model=("T0_3B", "T0"))
    fingerprint = {"checkpoint": cfg.checkpoint_path, "fake": True}
    tasks = []
    for task, (label, correct) in CORRECT.items():
        records = _records(task, correct)
        scores = [ChoiceScore.from_json(r) for r in records]
        result = aggregate.task_accuracy(aggregate.predict(scores))[task]
        report.write_task(out, task, records, {"task": task, "fingerprint": fingerprint,
                                               "result": result | {"dataset": label,
                                                                   "kind": "rank"}})
        tasks.append(runner.ScoreTask(task, label, "t", (), lambda: []))
    return out, runner._write_outputs(cfg, tasks, fingerprint, step=None)


def test_report_sets_published_figures_beside_yours(fake_run):
    out, results = fake_run
    assert results["convention"]["name"] == "t_zero"
    block = json.loads((out / report.RESULTS_JSON).read_text())["published"]
    assert block == results["published"] and block["models"] == ["T0_3B", "T0"]
    rows = block["datasets"]
    assert set(rows) == {"rte", "cb", "anli"}  # only datasets whose labels were all scored
    rte, cb, anli = rows["rte"], rows["cb"], rows["anli"]
    assert rte["measured"] == {"mean": pytest.approx(68.3333, abs=1e-4), "median": 70.0,
                               "num_templates": 3}
    assert rte["published"]["T0_3B"]["mean"] == 64.6
    assert rte["published"]["T0_3B"]["mean_difference"] == pytest.approx(68.3333 - 64.6, abs=1e-3)
    assert rte["published"]["T0"]["mean_difference"] == pytest.approx(68.3333 - 81.0, abs=1e-3)
    assert rte["published"]["T0"]["median"] is None  # not transcribed: no difference invented
    assert rte["published"]["T0"]["median_difference"] is None
    assert rte["published"]["T0"]["source"] == "https://huggingface.co/hamishivi/hypertask_T0_11B"
    assert cb["measured"]["mean"] == 50.0 and cb["measured"]["median"] == 50.0
    assert cb["published"]["T0_3B"]["mean_difference"] == pytest.approx(50.0 - 45.4)
    # ANLI as the cards give it: the mean of the three rounds' means over prompts.
    assert anli["measured"]["mean"] == pytest.approx((40.0 + 35.0 + 35.0) / 3, abs=1e-4)
    assert anli["measured"]["median"] is None and anli["measured"]["num_templates"] == 4
    assert anli["published"]["T0"]["mean_difference"] == pytest.approx(110 / 3 - 41.0, abs=1e-3)
    assert block["caveats"] == []


def test_csv_and_plot_carry_the_published_figures(fake_run):
    out, results = fake_run
    with (out / report.RESULTS_CSV).open() as f:
        table = [r for r in csv.DictReader(f) if r["level"] == "published"]
    assert {(r["dataset"], r["published_model"]) for r in table} == {
        (d, m) for d in ("rte", "cb", "anli") for m in ("T0_3B", "T0")}
    cb_t0 = next(r for r in table if r["dataset"] == "cb" and r["published_model"] == "T0")
    assert float(cb_t0["mean_pct"]) == 50.0 and float(cb_t0["published_mean_pct"]) == 70.1
    assert float(cb_t0["mean_difference_pct"]) == pytest.approx(-20.1)
    assert cb_t0["published_median_pct"] == "" and cb_t0["convention"] == "t_zero"
    png = pathlib.Path(out, "accuracy_boxplot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = published.format_table(results["published"])
    assert "RTE" in text and "64.6" in text and "-20.1" in text


def test_no_comparison_outside_the_held_out_suite_or_when_turned_off():
    table = published.load()
    mrpc = aggregate.dataset_summary({"t": {"accuracy": 0.5, "num_examples": 1}},
                                     {"t": "glue/mrpc"})
    assert published.report_block(mrpc, table, ["T0"], "t_zero", None) is None
    rte = aggregate.dataset_summary({"t": {"accuracy": 0.5, "num_examples": 1}},
                                    {"t": "super_glue/rte"})
    assert published.report_block(rte, table, [], "t_zero", None) is None
    block = published.report_block(rte, table, ["T0"], "lm_eval_harness", 8)
    assert len(block["caveats"]) == 2 and "lm_eval_harness" in block["caveats"][0]
