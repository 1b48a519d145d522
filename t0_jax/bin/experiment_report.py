"""The experiments' report: numbers recomputed from t0-score's scores.jsonl files, tables, figures.

Reads OUT_DIR/scores/<condition>[/seed_<s>]/scores.jsonl (t0-score's per-choice rows; its own
report format is untouched) and writes OUT_DIR/report.json (every number), OUT_DIR/report.md
(tables) and the paper's figures, drawn like the paper's: per-prompt accuracy points and a box
per condition, one panel per held-out family (fig4_t5lm_vs_t0.png, fig6_prompts.png,
fig7_datasets.png). Accuracy per prompt = share of examples whose highest-scoring choice is
correct (the first maximum on ties, as t0-score); chance per prompt = mean of #correct/#choices.

The goals of issue 18 are reported, not asserted: T0 >= chance + 15 points and above T5+LM in
every seed; median up and spread (interquartile range over prompts) down from p1 to p_all.
No TensorFlow here: json, numpy, matplotlib.
"""
from __future__ import annotations

import collections
import json
import pathlib
from typing import Mapping, Optional, Sequence

import numpy as np

BASELINE = "t5_lm"
T0 = "p_all"                 # every trained template of every trained family (= d4)
GOAL_POINTS = 0.15


def prompt_scores(scores_jsonl) -> tuple[dict, dict]:
    """({task: accuracy}, {task: chance}) recomputed from t0-score's scores.jsonl rows."""
    examples: dict = collections.OrderedDict()
    with open(scores_jsonl, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            examples.setdefault((row["task"], row["example"]), []).append(row)
    correct, chance = collections.defaultdict(list), collections.defaultdict(list)
    for (task, _), rows in examples.items():
        best = rows[int(np.argmax([r["log_likelihood"] for r in rows]))]   # first max on ties
        correct[task].append(bool(best["is_correct"]))
        chance[task].append(sum(bool(r["is_correct"]) for r in rows) / len(rows))
    return ({t: float(np.mean(v)) for t, v in correct.items()},
            {t: float(np.mean(v)) for t, v in chance.items()})


def family_of(task: str, families: Sequence[str]) -> str:
    for family in sorted(families, key=len, reverse=True):
        if task.startswith(family + "_"):
            return family
    raise ValueError(f"task {task!r} belongs to none of the families {list(families)}")


def spread(values: Sequence[float]) -> dict:
    """median, quartiles, interquartile range, min, max of per-prompt accuracies."""
    v = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(v.min()), "max": float(v.max()), "prompts": int(v.size)}


def model_summary(per_prompt: Mapping[str, float], families: Sequence[str]) -> dict:
    """{family: spread of its prompts' accuracies}."""
    by_family = collections.defaultdict(list)
    for task, acc in sorted(per_prompt.items()):
        by_family[family_of(task, families)].append(acc)
    return {f: spread(by_family[f]) for f in families}


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- collecting


def collect(out: pathlib.Path, conditions: Sequence[Mapping], seeds: Sequence[int],
            families: Sequence[str]) -> dict:
    """Every model's per-prompt accuracies and family summaries, from the scores.jsonl files."""
    base_acc, chance = prompt_scores(out / "scores" / BASELINE / "scores.jsonl")
    families_info = {f: {"prompts": sorted(t for t in base_acc if family_of(t, families) == f),
                         "chance": _mean(c for t, c in chance.items()
                                         if family_of(t, families) == f)} for f in families}
    models = {BASELINE: {"per_prompt": base_acc, "families": model_summary(base_acc, families)}}
    runs: dict = {}
    for cond in conditions:
        runs[cond["name"]] = {}
        for seed in seeds:
            acc, _ = prompt_scores(out / "scores" / cond["name"] / f"seed_{seed}" / "scores.jsonl")
            if set(acc) != set(base_acc):
                raise ValueError(f"{cond['name']} seed {seed} was scored on other prompts than "
                                 f"T5+LM: {sorted(set(acc) ^ set(base_acc))}")
            runs[cond["name"]][str(seed)] = {"per_prompt": acc,
                                             "families": model_summary(acc, families)}
    return {"families": families_info, "baseline": models[BASELINE], "runs": runs}


def condition_stats(runs_of_condition: Mapping[str, dict], families: Sequence[str]) -> dict:
    """{family: mean/min/max over seeds of the per-seed median, mean IQR}."""
    out = {}
    for f in families:
        medians = [r["families"][f]["median"] for r in runs_of_condition.values()]
        iqrs = [r["families"][f]["iqr"] for r in runs_of_condition.values()]
        out[f] = {"median_mean": _mean(medians), "median_min": min(medians),
                  "median_max": max(medians), "median_per_seed": medians,
                  "iqr_mean": _mean(iqrs)}
    return out


# ----------------------------------------------------------------------------- comparisons


def fig4(data: dict, families: Sequence[str]) -> dict:
    """T5+LM vs T0 per held-out family, with the goal flags."""
    out = {}
    for f in families:
        chance = data["families"][f]["chance"]
        base = data["baseline"]["families"][f]["median"]
        t0 = [r["families"][f]["median"] for r in data["runs"][T0].values()]
        out[f] = {"chance": chance, "t5_lm_median": base,
                  "t5_lm_iqr": data["baseline"]["families"][f]["iqr"],
                  "t0_median_per_seed": t0, "t0_median_mean": _mean(t0),
                  "t0_iqr_mean": _mean(r["families"][f]["iqr"]
                                       for r in data["runs"][T0].values()),
                  "t0_above_t5_lm_every_seed": all(m > base for m in t0),
                  "t0_at_least_chance_plus_15_every_seed":
                      all(m >= chance + GOAL_POINTS for m in t0)}
    return out


def prompt_ablation(stats: dict, families: Sequence[str],
                    order=("p1", "p_og", "p_all")) -> dict:
    out = {}
    for f in families:
        rows = {c: stats[c][f] for c in order if c in stats}
        medians = [r["median_mean"] for r in rows.values()]
        iqrs = [r["iqr_mean"] for r in rows.values()]
        both = len(rows) >= 2  # None: the first and last condition were not both run
        out[f] = {"conditions": rows,
                  "median_rises_p1_to_all": medians[-1] > medians[0] if both else None,
                  "spread_narrows_p1_to_all": iqrs[-1] < iqrs[0] if both else None}
    return out


def dataset_ablation(stats: dict, conditions: Sequence[Mapping], families: Sequence[str]) -> dict:
    """{family: {d: mean over choices of the seed-mean median}} (d = 4 is p_all)."""
    by_d = collections.defaultdict(list)
    for cond in conditions:
        if cond["group"] == "datasets" or cond["name"] == T0:
            by_d[cond["d"]].append(cond["name"])
    out = {}
    for f in families:
        out[f] = {str(d): {"conditions": names,
                           "median_mean": _mean(stats[n][f]["median_mean"] for n in names),
                           "iqr_mean": _mean(stats[n][f]["iqr_mean"] for n in names)}
                  for d, names in sorted(by_d.items())}
    return out


def build_report(out: pathlib.Path, conditions: Sequence[Mapping], seeds: Sequence[int],
                 families: Sequence[str], meta: Optional[dict] = None) -> dict:
    data = collect(out, conditions, seeds, families)
    stats = {name: condition_stats(r, families) for name, r in data["runs"].items()}
    return {"families": data["families"], "baseline": data["baseline"], "runs": data["runs"],
            "conditions": {c["name"]: dict(c, stats=stats[c["name"]]) for c in conditions},
            "fig4_t5_lm_vs_t0": fig4(data, families) if T0 in stats else None,
            "fig6_prompts": prompt_ablation(stats, families),
            "fig7_datasets": dataset_ablation(stats, conditions, families),
            "meta": meta or {}}


# ----------------------------------------------------------------------------- output


def write_report(out: pathlib.Path, conditions: Sequence[Mapping], seeds: Sequence[int],
                 meta: Optional[dict] = None) -> dict:
    families = list((meta or {}).get("plan", {}).get("held_out_families") or [])
    report = build_report(out, conditions, seeds, families, meta)
    report["figures"] = draw_figures(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True),
                                     encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    return report


def _points(report: dict, name: str, family: str) -> list:
    if name == BASELINE:
        runs = [report["baseline"]]
    else:
        runs = report["runs"][name].values()
    prompts = report["families"][family]["prompts"]
    return [r["per_prompt"][t] for r in runs for t in prompts]


def draw_figures(report: dict, out: pathlib.Path) -> dict:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    families = list(report["families"])
    d_names = {d: v["conditions"] for d, v in
               (report["fig7_datasets"][families[0]].items() if families else ())}
    figures = {"fig4_t5lm_vs_t0.png": [("T5+LM", [BASELINE]), ("T0 (p_all)", [T0])],
               "fig6_prompts.png": [(c, [c]) for c in ("p1", "p_og", "p_all")
                                    if c in report["runs"]],
               "fig7_datasets.png": [(f"d={d}", names) for d, names in d_names.items()]}
    paths = {}
    for file, groups in figures.items():
        if len(groups) < 2:  # e.g. make demo: T5+LM vs T0 only
            continue
        fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6),
                                 squeeze=False)
        for ax, family in zip(axes[0], families):
            values = [[v for n in names for v in _points(report, n, family)]
                      for _, names in groups]
            ax.boxplot(values, widths=0.5, showfliers=False)
            for i, vals in enumerate(values, start=1):
                jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else [0.0]
                ax.scatter(np.full(len(vals), i) + jitter, vals, s=12, alpha=0.7, zorder=3)
            ax.axhline(report["families"][family]["chance"], color="grey", ls="--", lw=1)
            ax.set_xticks(range(1, len(groups) + 1), [g for g, _ in groups])
            ax.set_title(family)
            ax.set_ylabel("accuracy per prompt")
            ax.set_ylim(0, 1)
        fig.tight_layout()
        fig.savefig(out / file, dpi=110)
        plt.close(fig)
        paths[file] = str(out / file)
    return paths


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(report: dict) -> str:
    meta, families = report["meta"], list(report["families"])
    lines = ["# T0 in miniature: held-out generalization, prompt and dataset ablations", "",
             f"Command: `{meta.get('command', '')}`; seeds {meta.get('seeds')}; wall time "
             f"{meta.get('wall_seconds')} s. Accuracy per prompt, recomputed from t0-score's "
             "scores.jsonl; median and interquartile range (IQR) over the prompts of each "
             "held-out family; per-seed values, then their mean.", ""]
    fig4_rows = report.get("fig4_t5_lm_vs_t0") or {}
    lines += ["## T5+LM vs T0 (Fig. 4)", "",
              "| family | chance | T5+LM median | T0 median per seed | T0 mean | T0 > T5+LM every "
              "seed | T0 >= chance+15 every seed |", "|---|---|---|---|---|---|---|"]
    for f, r in fig4_rows.items():
        lines.append(f"| {f} | {_f(r['chance'])} | {_f(r['t5_lm_median'])} | "
                     f"{', '.join(_f(m) for m in r['t0_median_per_seed'])} | "
                     f"{_f(r['t0_median_mean'])} | {r['t0_above_t5_lm_every_seed']} | "
                     f"{r['t0_at_least_chance_plus_15_every_seed']} |")
    lines += ["", "## More prompts per dataset (Fig. 6)", "",
              "| family | condition | median per seed | median mean | IQR mean |",
              "|---|---|---|---|---|"]
    for f, r in report["fig6_prompts"].items():
        for c, s in r["conditions"].items():
            lines.append(f"| {f} | {c} | {', '.join(_f(m) for m in s['median_per_seed'])} | "
                         f"{_f(s['median_mean'])} | {_f(s['iqr_mean'])} |")
        lines.append(f"| {f} | median rises p1 → p_all: {r['median_rises_p1_to_all']}; "
                     f"spread narrows: {r['spread_narrows_p1_to_all']} | | | |")
    lines += ["", "## More datasets (Fig. 7)", "",
              "| family | d | conditions (family choices) | median mean | IQR mean |",
              "|---|---|---|---|---|"]
    for f, by_d in report["fig7_datasets"].items():
        for d, s in by_d.items():
            lines.append(f"| {f} | {d} | {', '.join(s['conditions'])} | {_f(s['median_mean'])}"
                         f" | {_f(s['iqr_mean'])} |")
    lines += ["", "## Conditions", "", "| condition | families | prompts | mixture |",
              "|---|---|---|---|"]
    for name, c in report["conditions"].items():
        lines.append(f"| {name} | {', '.join(c['families'])} | {c['prompts']} | {c['mixture']} |")
    lines += ["", "Figures: " + ", ".join(f"`{pathlib.Path(p).name}`"
                                          for p in report.get("figures", {}).values()), ""]
    return "\n".join(lines)


def summary_text(report: dict) -> str:
    """The console table: per held-out family, T5+LM vs T0 (and the ablations' medians)."""
    lines = [f"{'held-out family':18s} {'chance':>6s} {'T5+LM':>6s}   {'T0 median per seed':24s}"
             f" {'p1':>6s} {'p_og':>6s} {'p_all':>6s} {'d=1':>6s} {'d=2':>6s}"]
    for f, r in (report.get("fig4_t5_lm_vs_t0") or {}).items():
        p = report["fig6_prompts"][f]["conditions"]
        d = report["fig7_datasets"][f]
        lines.append(f"{f:18s} {_f(r['chance']):>6s} {_f(r['t5_lm_median']):>6s}   "
                     f"{', '.join(_f(m) for m in r['t0_median_per_seed']):24s} "
                     + " ".join(f"{_f(p.get(c, {}).get('median_mean')):>6s}"
                                for c in ("p1", "p_og", "p_all"))
                     + " " + " ".join(f"{_f(d.get(k, {}).get('median_mean')):>6s}"
                                      for k in ("1", "2")))
    return "\n".join(lines)
