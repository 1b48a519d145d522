"""`t0-experiments --quick` for real: the demo world, T5+LM pretrained with t0-train on the
prefix-LM task, every condition (p1, p_og, p_all, d1 and d2 choices) prompted-trained from that
checkpoint with 2 seeds, every model scored by t0-score on every held-out prompt; the report's
numbers are recomputed here from the scores.jsonl files. `make demo` then runs on the same
directory and reuses those checkpoints and scores (its T0 is p_all seed 0)."""
import json
import pathlib
import re
import time

import numpy as np
import pytest

from t0_jax.bin import demo, experiments


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from t0_jax.data import registry, sources

    vocab, data_dir = registry.task_vocabulary().path, sources._data_dir
    out = tmp_path_factory.mktemp("paper")
    start = time.perf_counter()
    report = experiments.run_experiments(experiments.quick_settings(out_dir=str(out)))
    seconds = time.perf_counter() - start
    print(f"t0-experiments --quick: {seconds:.0f} s wall, "
          f"{report['meta']['process_cpu_seconds']} s process CPU")
    yield out, report
    registry.set_vocab_path(vocab)
    sources.set_data_dir(data_dir)


def _accuracies(scores_jsonl):
    """Per-prompt accuracy from t0-score's rows, computed here independently."""
    best = {}
    for line in open(scores_jsonl):
        r = json.loads(line)
        key = (r["task"], r["example"])
        if key not in best or r["log_likelihood"] > best[key][0]:  # first max wins ties
            best[key] = (r["log_likelihood"], r["is_correct"])
    tasks = sorted({t for t, _ in best})
    return {t: np.mean([ok for (task, _), (_, ok) in best.items() if task == t]) for t in tasks}


def test_quick_experiments_report_what_the_scores_say(quick_run):
    out, report = quick_run
    plan = experiments.load_plan()
    conds = experiments.conditions(plan)
    names = {c.name for c in conds}
    assert names == {"p1", "p_og", "p_all", "d1_a", "d1_b", "d2_a", "d2_b"}
    assert report["meta"]["seeds"] == [0, 1]
    # what each condition trained on: p1 ⊂ p_og ⊊ p_all, d choices as configured
    mixtures = report["meta"]["mixtures"]
    assert len(mixtures["p1"]) == 4 and len(mixtures["p_og"]) == 16
    assert len(mixtures["p_all"]) == 24 and set(mixtures["p1"]) < set(mixtures["p_og"])
    assert set(mixtures["p_og"]) < set(mixtures["p_all"])
    trained = ("synth_polarity", "synth_category", "synth_compare", "synth_rule")
    for c in conds:
        if c.group == "datasets":
            families = {f for t in mixtures[c.name] for f in trained if t.startswith(f + "_")}
            assert families == set(c.families) and len(mixtures[c.name]) == 6 * c.d
    # every run started from the one T5+LM checkpoint
    t5_lm = report["meta"]["t5_lm_checkpoint"]
    for run in report["meta"]["runs"]:
        config = (pathlib.Path(run["checkpoint"]).parent / "config.gin").read_text()
        assert f"INITIAL_CHECKPOINT_PATH = '{t5_lm}'" in config
    # the numbers, recomputed from t0-score's scores.jsonl files
    held_out_prompts = 10  # 5 templates x 2 held-out families, all with answer choices
    base = _accuracies(out / "scores" / "t5_lm" / "scores.jsonl")
    assert len(base) == held_out_prompts
    assert report["baseline"]["per_prompt"] == pytest.approx(base)
    for c in conds:
        for seed in (0, 1):
            folder = out / "scores" / c.name / f"seed_{seed}"
            mine = _accuracies(folder / "scores.jsonl")
            assert report["runs"][c.name][str(seed)]["per_prompt"] == pytest.approx(mine)
            theirs = json.loads((folder / "results.json").read_text())["tasks"]
            assert {t: r["accuracy"] for t, r in theirs.items()} == pytest.approx(mine)
            for family in plan.held_out_families:
                accs = [a for t, a in mine.items() if t.startswith(family + "_")]
                assert len(accs) == 5
                summary = report["runs"][c.name][str(seed)]["families"][family]
                assert summary["median"] == pytest.approx(np.median(accs))
                assert summary["iqr"] == pytest.approx(np.subtract(*np.percentile(accs,
                                                                                   [75, 25])))
    # comparisons and goals follow from those numbers (reported, not asserted)
    for family, row in report["fig4_t5_lm_vs_t0"].items():
        t0 = [report["runs"]["p_all"][s]["families"][family]["median"] for s in ("0", "1")]
        assert row["t0_median_per_seed"] == pytest.approx(t0)
        assert row["t5_lm_median"] == pytest.approx(np.median(
            [a for t, a in base.items() if t.startswith(family + "_")]))
        assert row["t0_above_t5_lm_every_seed"] == all(m > row["t5_lm_median"] for m in t0)
        assert row["chance"] == pytest.approx(0.5)
        d1 = report["fig7_datasets"][family]["1"]
        assert d1["conditions"] == ["d1_a", "d1_b"] and d1["median_mean"] == pytest.approx(
            np.mean([np.mean([report["runs"][c][s]["families"][family]["median"]
                              for s in ("0", "1")]) for c in ("d1_a", "d1_b")]))
        assert report["fig7_datasets"][family]["4"]["conditions"] == ["p_all"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["fig6_prompts"] == json.loads(json.dumps(report["fig6_prompts"]))
    text = (out / "report.md").read_text()
    assert "## T5+LM vs T0 (Fig. 4)" in text and "## More datasets (Fig. 7)" in text
    for path in report["figures"].values():
        assert pathlib.Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_reuses_the_runs_and_prints_t5lm_vs_t0(quick_run, capsys):
    """`make demo` on the quick experiments' directory with the same sizes: nothing is trained
    or scored again; the table shows T5+LM vs T0 per held-out family with chance."""
    out, report = quick_run
    q = experiments.QUICK
    summary = demo.run_demo(demo.DemoConfig(
        out_dir=str(out), pretrain_steps=q["pretrain_steps"],
        finetune_steps=q["finetune_steps"], max_eval_examples=q["max_eval_examples"],
        progress=False))
    printed = capsys.readouterr().out
    assert "already trained; reused" in printed
    rows = {r["dataset"]: r for r in summary["rows"]}
    assert set(rows) == {"synth_completion", "synth_same_kind"}
    for family, r in rows.items():
        assert r["t5_lm"]["median"] == report["fig4_t5_lm_vs_t0"][family]["t5_lm_median"]
        assert r["t0"]["median"] == report["runs"]["p_all"]["0"]["families"][family]["median"]
        assert r["chance"] == pytest.approx(0.5) and r["prompts"] == 5
        line = next(l for l in printed.splitlines() if l.startswith(family))
        assert re.search(rf"{r['t5_lm']['median']:.3f} \[.*{r['t0']['median']:.3f} \[", line)
    assert pathlib.Path(summary["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "make paper" in printed and "make demo CHECKPOINT=" in printed


def test_cli_settings():
    s = experiments.parse_args(["--quick", "--out_dir=x", "--seeds=3,4", "--only=p1"])
    assert s.quick and s.seeds == (3, 4) and s.only == ("p1",)
    assert s.finetune_steps == experiments.QUICK["finetune_steps"]
    full = experiments.parse_args(["--finetune_steps=7"])
    assert not full.quick and full.finetune_steps == 7
    assert full.pretrain_steps == experiments.FULL["pretrain_steps"]


def test_world_probe_frames_and_separation(quick_run):
    """bench.world_probe: its frames are the corpus's parallel sentences cut after the adjective;
    its --separation accuracy is t0-score's accuracy on the completion prompts (no ties)."""
    from bench import world_probe

    frames = world_probe.bank_frames()
    assert len(frames) >= 8
    for prefix, good, bad in frames:
        assert "{a}" in prefix and good != bad and "{a}" not in good + bad
    out, report = quick_run
    for model, per_prompt in (("t5_lm", report["baseline"]["per_prompt"]),
                              ("p_all/seed_0", report["runs"]["p_all"]["0"]["per_prompt"])):
        result = world_probe.separation(str(out), model)
        assert len(result) == 5
        for prompt, v in result.items():
            task = f"synth_completion_{prompt}_score_eval"
            assert v["accuracy"] == pytest.approx(per_prompt[task])
