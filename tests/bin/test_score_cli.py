"""`t0-score` in-process: flags + gin/runs/score.gin → the four outputs, with values checked.

The checkpoint is a random Hugging Face T5 directory; the tasks are BIG-bench JSON files (one
multiple-choice, one generative) so this test also covers the BIG-bench path and greedy
generation. Log-likelihoods are checked against the t-zero protocol on PyTorch T5.
"""
import csv
import json

import numpy as np
import pytest

from t0_jax.bin import score, score_data
from t0_jax.scoring import runner
from t0_jax.scoring import scorer as scorer_module
from tests.scoring import bigbench_files
from tests.scoring.hf_peer import LmEvalSeq2SeqPeer, TZeroPeer, save_random_t5


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, spm_model_path):
    return save_random_t5(tmp_path_factory.mktemp("hf_t5"), spm_model_path)


def test_cli_writes_scores_results_csv_and_plot(hf_dir, tmp_path):
    tasks = bigbench_files.write_tasks(tmp_path / "bigbench")
    out = tmp_path / "out"
    code = score.main([
        "--gin_file=gin/runs/score.gin", f"--gin.CHECKPOINT_PATH={hf_dir}",
        f"--gin.MIXTURE_OR_TASK_NAME={tasks}", f"--gin.OUTPUT_DIR={out}",
        "--gin.SPLIT='validation'", "--gin_bindings=score_run.progress = False",
        "--gin_bindings=score_run.compilation_cache_dir = None"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    peer = TZeroPeer(hf_dir)
    for i, example in enumerate(bigbench_files.CHOICE_EXAMPLES):
        mine = sorted((r for r in rows if r["example"] == i), key=lambda r: r["choice"])
        choices = list(example["target_scores"])
        assert [r["choice_text"] for r in mine] == choices
        assert all(r["task"] == "bigbench_choice_task" for r in mine)
        flags = [v == 1 for v in example["target_scores"].values()]
        assert [r["is_correct"] for r in mine] == flags
        expected = peer.choice_log_likelihoods(bigbench_files.prompt(example), choices)
        np.testing.assert_allclose([r["log_likelihood"] for r in mine], expected, atol=1e-3)
        assert [r["num_tokens"] for r in mine] == [len(peer.sp.encode(c)) + 1 for c in choices]

    results = json.loads((out / "results.json").read_text())
    assert results["convention"]["name"] == "t_zero"  # the default, recorded
    assert "published" not in results  # BIG-bench files: no published T0 figure to set beside
    choice, gen = results["tasks"]["bigbench_choice_task"], results["tasks"]["bigbench_gen_task"]
    assert choice["kind"] == "rank" and choice["num_examples"] == 5
    assert choice["dataset"] == "bigbench/choice_task"
    assert gen["kind"] == "generation" and set(gen["metrics"]) == {"exact_match"}
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["target"] for g in generations] == ["news", "yes", "the"]
    assert gen["accuracy"] == np.mean([g["prediction"] == g["target"] for g in generations])

    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert sorted((r["level"], r["task"] or r["dataset"]) for r in table) == [
        ("dataset", "bigbench/choice_task"), ("dataset", "bigbench/gen_task"),
        ("task", "bigbench_choice_task"), ("task", "bigbench_gen_task")]
    task_row = next(r for r in table if r["task"] == "bigbench_choice_task")
    assert float(task_row["accuracy"]) == pytest.approx(choice["accuracy"])
    assert (out / "accuracy_boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "score_run.checkpoint_path" in (out / "config.gin").read_text()


def _convention_run(hf_dir, task_file, out, convention, n_examples):
    assert score.main([
        "--gin_file=gin/runs/score.gin", f"--gin.CHECKPOINT_PATH={hf_dir}",
        f"--gin.MIXTURE_OR_TASK_NAME={task_file}", f"--gin.OUTPUT_DIR={out}",
        f"--gin.SCORING_CONVENTION='{convention}'", f"--gin.MAX_EXAMPLES={n_examples}",
        "--gin_bindings=score_run.progress = False",
        "--gin_bindings=score_run.compilation_cache_dir = None"]) == 0
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    results = json.loads((out / "results.json").read_text())
    return {(r["example"], r["choice"]): r for r in rows}, results["convention"]["name"]


def test_both_conventions_match_their_cited_peers(hf_dir, tmp_path):
    """SCORING_CONVENTION t_zero and lm_eval_harness on the same BIG-bench examples (prompts
    end in "\nA: ", the trailing space lm-eval moves) against independent PyTorch peers on the
    same weights: t-zero's protocol on SentencePiece, lm-evaluation-harness's on transformers'
    tokenizer (tests/scoring/hf_peer.py cites the source of each)."""
    n = 3
    task_file = bigbench_files.write_tasks(tmp_path / "bb") / "choice_task" / "task.json"
    runs = {c: _convention_run(hf_dir, task_file, tmp_path / c, c, n)
            for c in ("t_zero", "lm_eval_harness")}
    assert {c: name for c, (_, name) in runs.items()} == {c: c for c in runs}  # recorded
    t_zero_peer = TZeroPeer(hf_dir)
    lm_eval_peer = LmEvalSeq2SeqPeer(hf_dir, model=t_zero_peer.model)
    gaps = []
    for i, example in enumerate(bigbench_files.CHOICE_EXAMPLES[:n]):
        prompt, choices = bigbench_files.prompt(example), list(example["target_scores"])
        expected = {"t_zero": t_zero_peer.choice_log_likelihoods(prompt, choices)}
        expected["lm_eval_harness"], lengths = lm_eval_peer.choice_log_likelihoods(prompt,
                                                                                   choices)
        for convention, (rows, _) in runs.items():
            got = [rows[(i, c)]["log_likelihood"] for c in range(len(choices))]
            np.testing.assert_allclose(got, expected[convention], rtol=0, atol=1e-3)
        assert [runs["lm_eval_harness"][0][(i, c)]["num_tokens"]
                for c in range(len(choices))] == lengths  # continuation tokens, no EOS
        gaps += list(np.abs(expected["t_zero"] - expected["lm_eval_harness"]))
    assert min(gaps) > 1e-2  # the two conventions do score different tokens


def test_cli_usage_errors_name_what_is_missing(capsys):
    assert score.main(["--gin_file=gin/runs/score.gin"]) == 2
    assert "CHECKPOINT_PATH" in capsys.readouterr().err
    assert score.main(["--bogus=1"]) == 2
    assert "unknown argument '--bogus=1'" in capsys.readouterr().err
    required = ["--gin_file=gin/runs/score.gin", "--gin.CHECKPOINT_PATH=/c",
                "--gin.MIXTURE_OR_TASK_NAME=t", "--gin.OUTPUT_DIR=/o"]
    assert score.main(required + ["--gin.SCORING_CONVENTION='lm_eval'"]) == 2
    assert "unknown scoring convention 'lm_eval'; SCORING_CONVENTION is one of 't_zero'" in (
        capsys.readouterr().err)
    assert score.main(required + ["--gin.PUBLISHED_MODEL='T0_11B'"]) == 2
    assert "PUBLISHED_MODEL ['T0_11B'] not in" in capsys.readouterr().err


MRPC = ["glue_mrpc_equivalent_score_eval", "glue_mrpc_paraphrase_score_eval"]


class _SpyScorer(runner.Scorer):
    """Records, per `score` call (one per task), the padded shapes it ran."""

    made: list = []

    def __post_init__(self):
        super().__post_init__()
        self.per_call = []
        _SpyScorer.made.append(self)

    def score(self, *args, **kwargs):
        self.shapes_seen = set()
        out = super().score(*args, **kwargs)
        self.per_call.append(set(self.shapes_seen))
        return out


def _cli_scores(hf_dir, data_dir, out, names: str, *flags: str) -> dict:
    code = score.main([
        "--gin_file=gin/runs/score.gin", f"--gin.CHECKPOINT_PATH={hf_dir}",
        f"--gin.MIXTURE_OR_TASK_NAME={names}", f"--gin.OUTPUT_DIR={out}",
        f"--gin.DATA_DIR={data_dir}", "--gin.MAX_EXAMPLES=8",
        "--gin_bindings=score_run.progress = False",
        "--gin_bindings=score_run.compilation_cache_dir = None", *flags])
    assert code == 0
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    return {(r["task"], r["example"], r["choice"]): r["log_likelihood"] for r in rows}


def test_list_comma_and_glob_forms_score_like_separate_runs(hf_dir, shared_data_dir, tmp_path,
                                                            monkeypatch):
    """One process for several tasks: the same scores as one run per task, and each padded
    shape compiled once for all of them (the compiled program is shared across tasks)."""
    monkeypatch.setattr(runner, "Scorer", _SpyScorer)
    separate = {}
    for task in MRPC:
        separate |= _cli_scores(hf_dir, shared_data_dir, tmp_path / task, task)
    forms = {"list": "['" + "', '".join(MRPC) + "']",  # (comma form: tests/scoring/test_hf_parity)
             "glob": "glue_mrpc_[ep]*_score_eval"}  # equivalent, paraphrase
    for form, names in forms.items():
        scorer_module.scoring_program.cache_clear()  # count this run's compilations alone
        _SpyScorer.made.clear()
        together = _cli_scores(hf_dir, shared_data_dir, tmp_path / form, names)
        assert together.keys() == separate.keys(), form
        np.testing.assert_allclose([together[k] for k in separate], list(separate.values()),
                                   rtol=0, atol=1e-6)
        (spy,) = _SpyScorer.made  # one scorer for both tasks
        union = set().union(*spy.per_call)
        assert len(spy.per_call) == 2 and spy.num_compiled() == len(union), form
    assert sum(map(len, spy.per_call)) > len(union)  # the tasks did share shapes


def test_unknown_name_or_glob_names_close_tasks(hf_dir, tmp_path, capsys):
    for names in ("glue_mrpc_equivalent_score_evall", "glue_mrpcc_*_score_eval"):
        with pytest.raises(KeyError, match="Did you mean: glue_mrpc_"):
            cfg = runner.ScoreRun(str(hf_dir), names, str(tmp_path / "out"),
                                  compilation_cache_dir=None, progress=False)
            runner.run(cfg, score_data.ScoreData(cfg))


@pytest.fixture
def mrpc_cache(tmp_path, spm_model_path, shared_data_dir):
    """MRPC[0] cached by t0-cache's Beam pipeline (in memory); seqio's global cache state is
    restored after the test."""
    seqio = pytest.importorskip("seqio")
    from t0_jax.data import cache_build, registry

    previous_vocab = registry.task_vocabulary().path
    previous_dirs = list(seqio.utils.get_global_cache_dirs())
    out = str(tmp_path / "cache")
    cache_build.cache_tasks([MRPC[0]], out, splits=["validation"], data_dir=str(shared_data_dir),
                            vocab_path=spm_model_path, min_shards=2, progress=lambda line: None,
                            pipeline_options=["--runner=DirectRunner", "--direct_num_workers=1",
                                              "--direct_running_mode=in_memory"])
    yield out
    registry.set_vocab_path(previous_vocab)
    seqio.utils.set_global_cache_dirs(previous_dirs)
    seqio.get_mixture_or_task(MRPC[0])._cache_dir = None  # seqio remembers the dir it found


def test_scoring_from_a_cache_equals_scoring_rendered_rows(hf_dir, shared_data_dir, mrpc_cache,
                                                           tmp_path):
    rendered = _cli_scores(hf_dir, shared_data_dir, tmp_path / "rendered", MRPC[0])
    cached = _cli_scores(hf_dir, "/nonexistent/data", tmp_path / "cached", MRPC[0],
                         "--gin.USE_CACHED_TASKS=True",
                         f"--seqio_additional_cache_dirs={mrpc_cache}")
    assert cached.keys() == rendered.keys()
    np.testing.assert_allclose([cached[k] for k in rendered], list(rendered.values()),
                               rtol=0, atol=1e-6)
    # A task that is not in the cache: one message naming it and the folder searched.
    assert score.main(["--gin_file=gin/runs/score.gin", f"--gin.CHECKPOINT_PATH={hf_dir}",
                       f"--gin.MIXTURE_OR_TASK_NAME={MRPC[1]}", f"--gin.OUTPUT_DIR={tmp_path}/x",
                       "--gin.USE_CACHED_TASKS=True",
                       f"--seqio_additional_cache_dirs={mrpc_cache}"]) == 2
