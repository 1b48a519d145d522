"""The benchmark scripts' core functions run on toy sizes and return numbers that make sense.

Real peers, not mocks: the scoring comparison must find the same per-choice log-likelihoods as
the t-zero loop on `transformers` T5 (same random weights through our HF converter), and the
training comparison the same first-step loss as the PyTorch step on the same batch. Figures are
only checked for sanity (positive, finite); `make bench` measures them for real.
"""
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _toy_examples(rng, n, vocab=500):
    """(input ids, [choice ids + EOS]) with 2-4 choices, like bench.prompts.task_examples."""
    out = []
    for _ in range(n):
        inp = rng.integers(3, vocab, rng.integers(5, 30)).tolist()
        choices = [rng.integers(3, vocab, rng.integers(1, 5)).tolist() + [1]
                   for _ in range(rng.integers(2, 5))]
        out.append((inp, choices))
    return out


def test_scoring_measure_matches_tzero_loop(tmp_path):
    from bench import scoring

    torch.set_num_threads(1)
    hf_model = scoring.random_hf_model("tiny", seed=1)
    model, params, mesh = scoring.load_ours(hf_model, str(tmp_path / "hf"), "float32")
    rng = np.random.default_rng(0)
    tasks = {"a": _toy_examples(rng, 10), "b": _toy_examples(rng, 7)}
    r = scoring.measure(hf_model, model, params, mesh, tasks)
    assert r["examples"] == 17
    assert r["rows"] == sum(len(c) for v in tasks.values() for _, c in v)
    assert r["agreement"] == 1.0 and r["peer_sorted_vs_tzero_agreement"] == 1.0
    assert r["max_abs_delta_loglik"] < 1e-3
    for key in ("ours_examples_per_s", "tzero_examples_per_s", "sorted_examples_per_s",
                "vs_tzero", "vs_sorted"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert r["ours_first_pass_s"] >= r["ours_steady_s"] > 0
    assert r["compiled_shapes"] >= 1


@pytest.fixture(scope="module")
def training_result():
    from bench import training

    torch.set_num_threads(1)
    return training.compare_cpu("tiny", layers=None, lengths=(24, 8), batch=2, steps=1)


def test_training_compare_same_first_loss(training_result):
    r = training_result
    assert r["first_loss_rel_diff"] < 1e-4, (r["ours_losses"], r["hf_losses"])
    assert len(r["ours_losses"]) == len(r["hf_losses"]) == 2
    assert r["ours_tokens_per_s"] > 0 and r["hf_tokens_per_s"] > 0 and r["speedup"] > 0


def test_packed_batch_and_packing_stats():
    from bench import pipeline, training

    rng = np.random.default_rng(0)
    batch = training.packed_batch(rng, 3, 64, 16, 1000)
    seg = batch["encoder_segment_ids"]
    assert pipeline.packed_examples(batch) == int(seg.max(axis=1).sum())
    # decoder inputs are the targets shifted right within each segment (0 at segment start)
    starts = batch["decoder_positions"] == 0
    assert (batch["decoder_input_tokens"][starts] == 0).all()
    stats = pipeline.packing_stats([batch, batch])
    assert stats["rows"] == 6 and stats["examples"] == 2 * pipeline.packed_examples(batch)
    assert stats["encoder_real_fraction"] == 1.0 and stats["decoder_real_fraction"] == 1.0
    loose = training.unpacked_batch(rng, 4, 64, 16, 1000)  # one example per row, padded
    fraction = pipeline._unpacked_stats([loose])["encoder_real_fraction"]
    assert fraction == np.count_nonzero(loose["encoder_input_tokens"]) / (4 * 64)
    assert 0.25 <= fraction < 1.0


def test_registration_timer_runs_fresh_interpreter():
    from bench import registration

    seconds, out = registration.timed_python("import json; print(json.dumps({'x': 1}))")
    assert seconds > 0 and json.loads(out) == {"x": 1}
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        registration.timed_python("1 / 0")


def test_report_renders_measured_training(training_result):
    from bench import records, report

    result = {"machine": records.machine(), "device": "cpu", "torch_threads": 1,
              "jax_device": "cpu", "cpu": training_result}
    page = report.render({"training": result}, ["python -m bench.training"], [])
    assert "## Training step" in page and "GPU (bf16, 1024/256 packed, MFU): none" in page
    assert f"{training_result['speedup']:,.2f}×" in page
    assert "## Scoring" in page and "_not run in this session_" in page


def test_gpu_command_quick_mode_runs_without_tensorflow_seqio_gin(tmp_path):
    """`python -m bench.gpu --device cpu --quick` (what CI can run of `make bench-gpu`): both
    parts measure for real at toy sizes, the page's GPU section is rewritten in place, and
    no interpreter of the run (the command's, each part's) imported TensorFlow, seqio or gin."""
    import subprocess
    import sys

    from bench import gpu, report

    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Training step\n\nkept\n\n## Commands\n\n```\nx\n```\n")
    code = ("import json, sys\nfrom bench import gpu\n"
            f"rc = gpu.main(['--device', 'cpu', '--quick', '--out', {str(page)!r}, "
            f"'--json-dir', {str(tmp_path / 'json')!r}])\n"
            "print(json.dumps(sorted(m for m in ('tensorflow', 'seqio', 'gin') "
            "if m in sys.modules)))\nsys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=gpu.pathlib.Path(gpu.__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    record = json.loads((tmp_path / "json" / "gpu.json").read_text())
    assert record["heavy_modules"] == {"bench.gpu": [], "training": [], "scoring": []}
    train = record["parts"]["training"]["result"]["gpu"]["tiny"]
    assert (train["batch"], train["requested_batch"], train["halved"]) == (4, 4, False)
    assert train["lengths"] == [64, 16] and train["dtype"] == "bfloat16"
    assert 0 < train["tokens_per_s"] <= train["padded_tokens_per_s"]
    assert math.isfinite(train["final_loss"]) and train["tflops_per_s"] > 0
    score = record["parts"]["scoring"]["result"]["presets"]["tiny"]
    assert score["examples"] == 12 and score["agreement"] == 1.0
    assert score["max_abs_delta_loglik"] < 1e-3 and score["vs_tzero"] > 0
    text = page.read_text()
    section = report.section_lines(text, gpu.SECTION_TITLE)
    assert section and "Quick mode on the CPU" in "\n".join(section)
    assert f"| tiny | 1 M | 4 | {train['tokens_per_s']:,.0f} |" in text
    assert "## Training step\n\nkept" in text and text.index(gpu.SECTION_TITLE) < text.index(
        "## Commands")
    # a second render replaces the section instead of adding one
    again = report.with_section(text, gpu.SECTION_TITLE, [gpu.SECTION_TITLE, "", "new", ""])
    assert again.count(gpu.SECTION_TITLE) == 1 and "new" in again and "kept" in again
