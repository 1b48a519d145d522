"""`make demo` with a real checkpoint (HF/T5X) on a local mirror, and its flags. The synthetic
demo (T5+LM then T0 on the generated world) runs in tests/test_experiments.py, on the
directory of `t0-experiments --quick`, whose runs it shares."""
import json
import pathlib

import pytest

from t0_jax.bin import demo


@pytest.fixture
def restore_data_globals():
    """The demo switches the task vocabulary and data dir (process-wide); put them back."""
    from t0_jax.data import registry, sources

    vocab, data_dir = registry.task_vocabulary().path, sources._data_dir
    yield
    registry.set_vocab_path(vocab)
    sources.set_data_dir(data_dir)


def test_checkpoint_mode_scores_what_the_mirror_has(tmp_path, restore_data_globals, t5x_fixture,
                                                    shared_data_dir, spm_model_path, capsys):
    """A real T5X checkpoint on the datasets of a T0 mixture found in the mirror; the others
    are named as missing. The mirror holds only GLUE/MRPC (linked from ../shared, not copied)."""
    mirror = tmp_path / "mirror"
    (mirror / "glue").mkdir(parents=True)
    (mirror / "glue" / "mrpc").symlink_to(shared_data_dir / "glue" / "mrpc")
    cfg = demo.DemoConfig(out_dir=str(tmp_path / "real"), checkpoint=str(t5x_fixture),
                          data_dir=str(mirror), vocab_path=spm_model_path,
                          mixture="t0_train_score_eval", max_eval_examples=3, progress=False)
    summary = demo.run_demo(cfg)
    tasks, missing = demo.available_tasks("t0_train_score_eval", mirror)
    results = json.loads(pathlib.Path(summary["results_json"]).read_text())
    assert set(results["tasks"]) == set(tasks) and tasks
    assert all(t.startswith("glue_mrpc_") for t in tasks)
    assert [r["dataset"] for r in summary["rows"]] == ["glue/mrpc"]
    assert summary["rows"][0]["chance"] == pytest.approx(0.5)  # MRPC templates: two choices
    assert "super_glue/rte" not in missing  # RTE is held out, not in t0_train_score_eval
    assert "imdb" not in missing  # excluded from t0_train_score_eval (tasks/selection.yaml)
    assert "cos_e/v1.11" in missing and summary["missing_datasets"] == sorted(missing)
    printed = capsys.readouterr().out
    assert "missing cos_e/v1.11" in printed and "make demo CHECKPOINT=" not in printed


def test_checkpoint_mode_needs_data(tmp_path, monkeypatch):
    monkeypatch.delenv("T0_DATA_DIR", raising=False)
    from t0_jax.data import sources

    monkeypatch.setattr(sources, "_data_dir", None)
    with pytest.raises(demo.DemoError, match="DATA_DIR"):
        demo.run_demo(demo.DemoConfig(out_dir=str(tmp_path), checkpoint="/nonexistent"))
    with pytest.raises(demo.DemoError, match="--checkpoint"):
        demo.run_demo(demo.DemoConfig(out_dir=str(tmp_path), data_dir=str(tmp_path)))


def test_cli_flags_map_to_the_config():
    cfg = demo.parse_args(["--out_dir=x", "--checkpoint=/c", "--data_dir=/d",
                           "--gin_bindings=LOG_PERIOD = 5", "--max_eval_examples=3",
                           "--pretrain_steps=7", "--finetune_steps=8"])
    assert (cfg.out_dir, cfg.checkpoint, cfg.data_dir) == ("x", "/c", "/d")
    assert cfg.gin_bindings == ("LOG_PERIOD = 5",) and cfg.max_eval_examples == 3
    assert (cfg.pretrain_steps, cfg.finetune_steps) == (7, 8)
    assert cfg.mixture == "t0_eval_score_eval"
