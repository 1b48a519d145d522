"""Greedy decoding equals transformers' greedy `generate`; checkpoint selection over step dirs.

Selection uses a step whose outcome is known: step 100 has a zero logits layer, so every token
has log-probability -log(V), choices of equal length tie, the first wins, and with the second
choice correct in every example of the task below its accuracy is exactly 0.
"""
import json
import math

import jax
import numpy as np
import pytest
import torch

from t0_jax.bin.score_data import ScoreData
from t0_jax.convert import auto, t0_format
from t0_jax.scoring import runner, selection
from t0_jax.scoring.generation import Generator
from tests.scoring.hf_peer import VOCAB_SIZE, save_random_t5


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, spm_model_path):
    return save_random_t5(tmp_path_factory.mktemp("hf_t5"), spm_model_path, seed=1)


def test_greedy_decode_matches_transformers_generate(hf_dir, tmp_path):
    import transformers

    cfg = runner.ScoreRun(str(hf_dir), "unused", str(tmp_path), compilation_cache_dir=None)
    model, params, mesh, _, _ = runner.load_model(cfg)
    rng = np.random.default_rng(0)
    inputs = [rng.integers(3, 800, n).astype(np.int32) for n in (5, 17, 9, 30, 3)]
    ours = Generator(model, params, mesh).generate(inputs, max_decode_len=8)
    torch.set_num_threads(1)
    peer = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
    for inp, mine in zip(inputs, ours):
        with torch.no_grad():
            out = peer.generate(torch.tensor([inp.tolist()]), max_new_tokens=8, do_sample=False,
                                num_beams=1)[0, 1:].numpy()  # drop the start token
        stop = np.flatnonzero(out == 1)
        expected = out[:stop[0]] if stop.size else out
        np.testing.assert_array_equal(mine, expected[expected != 0])


PAIRS = [("yes", "no"), ("true", "false"), ("left", "right"), ("first", "second"),
         ("world", "sports"), ("premise", "question"), ("answer", "context"), ("best", "wrong")]


def _write_choice_task(path):
    """Two choices of equal token count per example, the SECOND one correct: a zero-logit model
    gives both the same score and the tie goes to the first, so its accuracy is exactly 0."""
    examples = [{"input": f"question number {i}", "target_scores": {a: 0, b: 1}}
                for i, (a, b) in enumerate(PAIRS)]
    path.mkdir(parents=True)
    (path / "task.json").write_text(json.dumps({"examples": examples}))
    return path


def test_selection_scores_every_step_and_keeps_the_best(hf_dir, tmp_path):
    loaded = auto.load_checkpoint(hf_dir)
    zero_logits = jax.tree.map(np.asarray, loaded.params)
    zero_logits["decoder"]["logits_dense"]["kernel"] = np.zeros_like(
        zero_logits["decoder"]["logits_dense"]["kernel"])
    run_dir = tmp_path / "run"
    t0_format.save_checkpoint(run_dir / "100", zero_logits, loaded.config, loaded.vocab_path, 100)
    t0_format.save_checkpoint(run_dir / "200", loaded.params, loaded.config, loaded.vocab_path,
                              200)
    task = _write_choice_task(tmp_path / "second_is_right")
    out = tmp_path / "out"
    cfg = runner.ScoreRun(str(run_dir), str(task), str(out), compilation_cache_dir=None,
                          progress=False)
    report = runner.run(cfg, ScoreData(cfg))
    step_results = {s: json.loads((out / f"step_{s}" / "results.json").read_text())
                    for s in (100, 200)}
    rows = [json.loads(x) for x in (out / "step_100" / "scores.jsonl").read_text().splitlines()]
    for first, second in zip(rows[::2], rows[1::2]):
        assert first["num_tokens"] == second["num_tokens"]  # the premise of the tie
        assert first["log_likelihood"] == second["log_likelihood"] == pytest.approx(
            -first["num_tokens"] * math.log(VOCAB_SIZE), rel=1e-5)
    assert step_results[100]["tasks"]["bigbench_second_is_right"]["accuracy"] == 0.0
    late = step_results[200]["overall"]["median_of_medians"]
    assert late > 0 and report["best_step"] == 200  # (on a tie the earlier step would win)
    assert json.loads((out / selection.SELECTION_FILE).read_text()) == report
    assert report["steps"]["200"]["median_of_medians"] == late


def test_best_step_rule():
    overall = {10: {"median_of_medians": 0.5, "mean_accuracy": 0.7},
               20: {"median_of_medians": 0.6, "mean_accuracy": 0.6},
               30: {"median_of_medians": 0.6, "mean_accuracy": None}}
    assert selection.best_step(overall) == 20  # tie between 20 and 30: earliest
    assert selection.best_step(overall, "mean_accuracy") == 10
    with pytest.raises(ValueError, match="not one of"):
        selection.best_step(overall, "f1")


def _dot_operand_shapes(jaxpr, in_loop=False, out=None):
    """(inside a while loop?, operand shapes) of every dot_general in a jaxpr, sub-jaxprs too."""
    out = [] if out is None else out
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append((in_loop, [tuple(v.aval.shape) for v in eqn.invars]))
        loop = in_loop or eqn.primitive.name == "while"
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _dot_operand_shapes(inner, loop, out)
    return out


def test_greedy_decode_projects_cross_attention_kv_once_per_input():
    """The encoder output [b, Li, emb] enters a matmul (the K/V projections) only before the
    decoding loop; inside it, steps read the projected K/V from the cache."""
    from t0_jax.model.config import get_config
    from t0_jax.model.model import EncoderDecoderModel

    model = EncoderDecoderModel(get_config("tiny", vocab_size=64, dtype="float32"))
    b, li, emb = 3, 13, model.config.emb_dim
    tokens = jax.ShapeDtypeStruct((b, li), np.int32)
    jaxpr = jax.make_jaxpr(lambda p, t: model.greedy_decode(p, t, 5))(
        model.abstract_params(), tokens).jaxpr
    dots = _dot_operand_shapes(jaxpr)
    of_encoded = [loop for loop, shapes in dots if (b, li, emb) in shapes]
    assert of_encoded and not any(of_encoded)  # K/V projections exist, none inside the loop
    assert any(loop for loop, _ in dots)  # (the loop itself does run the decoder's matmuls)


def test_selection_renders_each_task_once_and_compiles_each_shape_once(
        hf_dir, shared_data_dir, tmp_path, monkeypatch):
    """Two steps of a real task: its rows are rendered for the first step only, and the second
    step runs the programs the first compiled (same shapes: no new compilation)."""
    from t0_jax.data import score_rows
    from t0_jax.scoring import scorer as scorer_module

    loaded = auto.load_checkpoint(hf_dir)
    run_dir = tmp_path / "run"
    for step in (10, 20):
        t0_format.save_checkpoint(run_dir / str(step), loaded.params, loaded.config,
                                  loaded.vocab_path, step)
    rendered, scorers = [], []
    real_rows, real_scorer = score_rows.task_rows, runner.Scorer
    monkeypatch.setattr(score_rows, "task_rows",
                        lambda name, *a, **k: rendered.append(name) or real_rows(name, *a, **k))
    monkeypatch.setattr(runner, "Scorer",
                        lambda *a, **k: scorers.append(real_scorer(*a, **k)) or scorers[-1])
    scorer_module.scoring_program.cache_clear()
    cfg = runner.ScoreRun(str(run_dir), "glue_mrpc_equivalent_score_eval",
                          str(tmp_path / "out"), data_dir=str(shared_data_dir), max_examples=6,
                          compilation_cache_dir=None, progress=False)
    report = runner.run(cfg, ScoreData(cfg))
    assert rendered == ["glue_mrpc_equivalent_score_eval"]
    first, second = scorers
    assert first.shapes_seen == second.shapes_seen
    assert second.num_compiled() == len(first.shapes_seen)
    steps = report["steps"]
    assert steps["10"]["mean_accuracy"] == steps["20"]["mean_accuracy"]  # same weights
