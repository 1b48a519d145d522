"""docs/benchmarks.md from the JSON the bench scripts wrote (one table per section).

Every table says what was measured, the target where the issue sets one and whether it was met;
numbers are copied from bench_out/*.json, never typed in, so the page always matches a run.
"""
from __future__ import annotations

import importlib
from typing import Optional


def _f(x, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def _ok(flag: Optional[bool]) -> str:
    return "—" if flag is None else ("**pass**" if flag else "**FAIL**")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows] + [""])


markdown_table = _table


def section_lines(page: str, title: str) -> list[str] | None:
    """The lines of `page`'s section whose heading is `title`, up to the next `## `."""
    lines = page.splitlines()
    if title not in lines:
        return None
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return lines[start:end]


def with_section(page: str, title: str, section: list[str]) -> str:
    """`page` with its `title` section replaced by `section` (inserted before `## Commands`,
    or appended, when it has none); every other line is kept."""
    lines = page.splitlines()
    old = section_lines(page, title)
    if old is not None:
        start = lines.index(title)
        lines[start:start + len(old)] = section
    else:
        at = lines.index("## Commands") if "## Commands" in lines else len(lines)
        lines[at:at] = section
    return "\n".join(lines).rstrip("\n") + "\n"


def replace_section(path, title: str, section: list[str]) -> None:
    """Rewrite one generated section of the page at `path` in place (a section produced
    elsewhere, e.g. on a GPU machine, without re-rendering the CPU sections)."""
    import pathlib  # noqa: PLC0415

    page = pathlib.Path(path)
    text = page.read_text() if page.is_file() else "# Benchmarks\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(with_section(text, title, section))


def _machine_line(result: dict) -> str:
    m = result["machine"]
    return (f"_Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['ram_gib']} GiB RAM), "
            f"load average {m['load_avg_1m']} (1 min) / {m['load_avg_5m']} (5 min) at the end; "
            f"jax {m['versions']['jax']}, torch {m['versions']['torch']}, transformers "
            f"{m['versions']['transformers']}._")


def scoring_section(r: dict) -> list[str]:
    t = r["targets"]
    out = ["## Scoring (rank classification)", "",
           f"Device `{r['setup']['jax_device']}`, {r['dtype']}, torch threads "
           f"{r['setup']['torch_threads']}. Tasks ({len(r['tasks'])}): " +
           ", ".join(f"`{name}`" for name in r["tasks"]) + ", first examples of each "
           "(counts below). SentencePiece vocabulary trained on the rendered prompts "
           f"({r['vocab']['pieces']:,} pieces from {r['vocab']['lines']:,} lines; the real T5 "
           "vocabulary is not available offline); model embedding 32,128 rows as T5's. Random "
           "`transformers` weights, converted by `t0_jax.convert.hf` (same weights both sides).",
           ""]
    rows = []
    for preset, p in r["presets"].items():
        d = p["data"]
        for name, v in p["variants"].items():
            w = v["work"]
            rows.append([preset, name, f"{d['examples']} ({d['input_len_mean']} tok, "
                         f"{d['choices_per_example']} choices)",
                         _f(v["examples_per_s"], 2), _f(p["tzero_examples_per_s"], 2),
                         _f(p["sorted_examples_per_s"], 2),
                         f"{_f(v['vs_tzero'])}× {_ok(v['vs_tzero'] >= t['vs_tzero'])}",
                         f"{_f(v['vs_sorted'])}× {_ok(v['vs_sorted'] >= t['vs_sorted'])}",
                         f"{_f(v['compile_s'], 1)} / {v['compiled_shapes']}",
                         f"{_f(w['tzero_over_ours_flops'])}× / "
                         f"{_f(w['sorted_over_ours_flops'])}×"])
    out += _table(["model", "scorer options", "examples (mean input, choices)", "ours ex/s",
                   "t-zero loop ex/s", "sorted HF ex/s",
                   f"vs t-zero (≥ {t['vs_tzero']}×)", f"vs sorted HF (≥ {t['vs_sorted']}×)",
                   "compile s / shapes", "FLOPs t-zero / ours, sorted / ours"], rows)
    rows = [[preset, _f(p["num_params"] / 1e6, 0) + " M", f"{p['agreement']:.2%} "
             f"{_ok(p['passed']['agreement'])}", f"{p['max_abs_delta_loglik']:.1e}",
             f"{p['max_abs_loglik']:.0f}", f"{p['peer_sorted_vs_tzero_agreement']:.2%}"]
            for preset, p in r["presets"].items()]
    out += _table(["model", "params", "same prediction as t-zero loop (≥ 99%)",
                   "max abs Δ loglik", "max abs loglik", "sorted vs t-zero"], rows)
    out += ["Ours: steady-state pass (programs compiled); compile = first pass − steady pass. "
            "`default` = `t0-score`'s BatchingOptions on this backend (CPU: 8 examples / 32 "
            "choice rows per batch; inputs padded to multiples of 32, targets to multiples of "
            "4; cross-attention K/V projected once per example). FLOPs: matmul FLOPs of the "
            "padded shapes each side runs (`bench.scoring.work_report`), independent of "
            "machine load.", ""]
    for preset, p in r["presets"].items():
        w = p["variants"]["default"]["work"]
        out += [f"- {preset}: estimated TFLOPs — t-zero loop {w['tzero_tflops']:.2f}, sorted HF "
                f"{w['sorted_tflops']:.2f}, ours {w['ours_tflops']:.2f} (K/V per choice row "
                f"would be {w['ours_kv_per_row_tflops']:.2f}); encoder slots t-zero "
                f"{w['tzero_encoder_slots']:,} / ours {w['ours_encoder_slots']:,} / real "
                f"{w['real_encoder_tokens']:,}."]
    missed = [p for p in r["presets"].values()
              if not (p["passed"]["vs_tzero"] and p["passed"]["vs_sorted"])]
    if missed:
        out += ["", *SCORER_FINDINGS]
    return out + ["", _machine_line(r), ""]


SCORER_FINDINGS = (
    "**A target is missed.** Where the time goes, from the FLOP estimates above: encoder slots "
    "(padding) and the full-vocabulary log-softmax of every choice token, which both sides "
    "compute. Profile with `python -m bench.scoring --presets small --examples 24` and compare "
    "shapes (`compiled_shapes`) and padded slots before changing the scorer's BatchingOptions.",
)


def pipeline_section(r: dict) -> list[str]:
    p, u, t = r["packed"], r["unpacked"], r["trainer"]
    out = ["## Input pipeline", "",
           f"`t0_jax.data.pipeline.train_batches` on a mixture of every template of "
           f"{', '.join(r['datasets'])} ({r['split']} split of the real mirror: these prompts "
           f"are shorter than P3's average), {r['lengths']['inputs']}/"
           f"{r['lengths']['targets']}, {p['batch_size']} rows per batch, {p['batches']} "
           "batches after the first.", ""]
    out += _table(["", "packed", "unpacked"], [
        ["examples/s", _f(p["examples_per_s"], 0), _f(u["examples_per_s"], 0)],
        ["examples per row", _f(p["examples_per_row"], 1), "1"],
        ["real encoder tokens", f"{p['encoder_real_fraction']:.1%}",
         f"{u['encoder_real_fraction']:.1%}"],
        ["real decoder tokens", f"{p['decoder_real_fraction']:.1%}",
         f"{u['decoder_real_fraction']:.1%}"],
        ["start-up (first batch, s)", _f(p["startup_s"], 1), _f(u["startup_s"], 1)]])
    out += _table(["check", "measured", "target", "result"], [
        ["real encoder tokens (packed)", f"{p['encoder_real_fraction']:.1%}",
         f"≥ {r['target_encoder_fraction']:.0%}", _ok(r["passed"]["encoder_fraction"])],
        ["pipeline vs trainer consumption", f"{_f(p['examples_per_s'], 0)} vs "
         f"{_f(t['examples_per_s'], 2)} examples/s ({_f(r['pipeline_over_trainer'], 0)}×)",
         "> 1×", _ok(r["passed"]["faster_than_trainer"])]])
    out += [f"Trainer consumption: the {t['preset']} preset's train step on this CPU (fp32), "
            f"{t['batch']} packed rows per step ({_f(t['examples_per_step'], 1)} examples) in "
            f"{_f(t['step_s'], 1)} s. Packed examples are counted from `encoder_segment_ids`; "
            "the decoder fill is set by how long the targets are next to the inputs (rows "
            "close when their encoder side is full).", "", _machine_line(r), ""]
    return out


def registration_section(r: dict) -> list[str]:
    out = ["## Registration", "",
           f"Fresh interpreter, median of {r['repeats']}: import `t0_jax.data.registry` and "
           f"`t0_jax.data.mixtures` (registers {r['tasks']:,} tasks including `_score_eval` "
           f"twins; {r['mixtures']} mixtures with {r['mixture_tasks']:,} task entries), list "
           "every task and every mixture's rates.", ""]
    out += _table(["figure", "seconds"], [
        ["registration, in-process, after `import seqio`", _f(r["registry_s"])],
        ["`import seqio` (in the same process)", _f(r["seqio_import_in_process_s"])],
        ["whole process with registration", _f(r["full_process_s"])],
        ["whole process, `import seqio` only", _f(r["seqio_only_process_s"])],
        ["added by registration (process walls; start-up noise can make it negative)",
         _f(r["added_process_s"])]])
    return out + [_machine_line(r), ""]


def memory_section(r: dict) -> list[str]:
    rows = [[c, _f(v["num_params"] / 1e6, 1) + " M", _f(v["baseline_rss_mib"], 0),
             _f(v["peak_rss_mib"], 0), _f(v["peak_rss_mib"] - v["baseline_rss_mib"], 0),
             _f(v["peak_device_bytes"] / 2**30, 2) if v.get("peak_device_bytes") else "—"]
            for c, v in r["cases"].items()]
    out = ["## Memory", "",
           "Peak host RSS per case, each in its own interpreter (`getrusage` max RSS). Scoring: "
           "64 examples × 3 choices, inputs 64–256 tokens; training: 3 steps at 256/64, "
           f"batch 8, fp32 on CPU. Device `{r['device']}`.", ""]
    out += _table(["case", "params", "RSS after imports (MiB)", "peak RSS (MiB)",
                   "peak − imports (MiB)", "device peak (GiB)"], rows)
    return out + [_machine_line(r), ""]


def _module_section(module: str):
    """`bench.<module>.section`, imported when its JSON is rendered (those modules import
    JAX/TensorFlow; this page's own sections need neither)."""

    def render(record: dict) -> list[str]:
        return importlib.import_module(f"bench.{module}").section(record)

    return render


SECTIONS = (("scoring", scoring_section), ("scoring_process", _module_section("scoring_process")),
            ("training", _module_section("training")), ("plans", _module_section("plans")),
            ("pipeline", pipeline_section), ("input_render", _module_section("input_render")),
            ("input_cache", _module_section("input_cache")),
            ("cache_scale", _module_section("cache_scale")),
            ("input_resume", _module_section("input_resume")),
            ("registration", registration_section), ("memory", memory_section))


def render(results: dict[str, dict], commands: list[str], notes: list[str]) -> str:
    """The whole page: header, commands, one section per benchmark that has results."""
    lines = ["# Benchmarks", "",
             "Generated by `make bench` (`python -m bench.run_all --out docs/benchmarks.md`) "
             "from bench_out/*.json; do not edit by hand. Each script also runs alone "
             "(`python -m bench.<name> --help`).", ""]
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    summary = []
    for name, fn in SECTIONS:
        if name in results:
            summary += fn(results[name])
        else:
            summary += [f"## {name.capitalize()}", "", "_not run in this session_", ""]
    lines += summary + ["## Commands", "", "```"] + commands + ["```", ""]
    return "\n".join(lines)
