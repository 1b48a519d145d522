"""`t0-tasks list/render`, called in-process through `main(argv)`."""
import json
import subprocess
import sys

import pytest

from t0_jax.bin import tasks


def _run(capsys, *argv):
    code = tasks.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_all_mixtures_json(capsys):
    code, out, _ = _run(capsys, "list", "--json")
    sizes = json.loads(out)
    assert code == 0
    assert {k: sizes[k] for k in ("t0_train", "t0+_train", "t0++_train", "t0_eval_score_eval",
                                  "bias_fairness_eval_score_eval")} == {
        "t0_train": 313, "t0+_train": 392, "t0++_train": 464, "t0_eval_score_eval": 116,
        "bias_fairness_eval_score_eval": 16}
    assert list(sizes) == sorted(sizes)


def test_list_one_mixture(capsys):
    code, out, _ = _run(capsys, "list", "--mixture", "t0_train", "--json")
    rates = json.loads(out)
    assert code == 0 and len(rates) == 313 and sum(rates.values()) == 17_277_798
    assert list(rates) == sorted(rates)
    assert rates["glue_mrpc_equivalent"] == 3668
    code, out, _ = _run(capsys, "list", "--mixture", "t0_train")
    assert out.splitlines()[-1] == "313 tasks, total rate 17,277,798"
    assert "    3,668  glue_mrpc_equivalent\n" in out


def test_list_eval_mixture_rates(capsys, shared_data_dir):
    from t0_jax.data import sources

    code, out, _ = _run(capsys, "list", "--mixture", "t0_eval_score_eval", "--json")
    assert code == 0 and len(json.loads(out)) == 116 and set(json.loads(out).values()) == {None}
    try:  # counting reads every task's validation split; the mirror lacks anli
        code, out, err = _run(capsys, "list", "--mixture", "t0_eval_score_eval", "--data_dir",
                              str(shared_data_dir))
    finally:
        sources.set_data_dir(None)
    assert code == 2 and "no examples found for dataset" in err and out == ""


def test_unknown_names_exit_2_with_suggestions(capsys):
    code, out, err = _run(capsys, "list", "--mixture", "t0_trian")
    assert code == 2 and "Did you mean: t0_train" in err and "Traceback" not in err
    code, out, err = _run(capsys, "render", "--task", "glue_mrpc_equivalnt", "--split", "train")
    assert code == 2 and "glue_mrpc_equivalent" in err and out == ""


def test_render_json_lines_on_the_mirror(capsys, shared_data_dir):
    code, out, _ = _run(capsys, "render", "--task", "glue_mrpc_equivalent", "--split",
                        "validation", "--data_dir", str(shared_data_dir), "--n", "3", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    with open(shared_data_dir / "glue" / "mrpc" / "validation.jsonl", encoding="utf-8") as f:
        raw = [json.loads(next(f)) for _ in range(3)]
    assert code == 0 and [line["raw"] for line in lines] == raw
    for line, example in zip(lines, raw):
        assert line["answer_choices"] == ["not equivalent", "equivalent"]
        assert line["targets"] == line["answer_choices"][example["label"]]
        assert example["sentence1"] in line["inputs"] and not line["dropped"]


def test_render_text_with_token_counts(capsys, shared_data_dir, spm_model_path):
    from t0_jax.data import vocabularies

    code, out, _ = _run(capsys, "render", "--task", "piqa_pick_correct_choice_index_score_eval",
                        "--split", "validation", "--data_dir", str(shared_data_dir), "--n", "1",
                        "--vocab_path", spm_model_path)
    assert code == 0
    assert out.startswith("=== piqa_pick_correct_choice_index [validation #0]")
    target = out.split("--- targets:\n")[1].splitlines()[0]
    assert target == "1"  # label 0 -> choice "1"
    tokens = len(vocabularies.get_vocabulary(spm_model_path).encode(target)) + 1
    assert f"targets {tokens} (with EOS)" in out


def test_render_missing_split_explains(capsys, tmp_path):
    code, out, err = _run(capsys, "render", "--task", "glue_mrpc_equivalent", "--split", "test",
                          "--data_dir", str(tmp_path))
    assert code == 2 and "glue/mrpc/test.jsonl" in err and "Traceback" not in err
    code, out, err = _run(capsys, "render", "--task", "glue_mrpc_equivalent", "--split", "dev",
                          "--data_dir", str(tmp_path))
    assert code == 2 and "has no split 'dev'" in err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "t0_jax.bin.tasks", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "render" in result.stdout and "list" in result.stdout
    with pytest.raises(SystemExit) as caught:
        tasks.main(["list", "--bogus"])
    assert caught.value.code == 2
