"""The error convention of every console script (t0_jax/bin/cli.py), and a quiet start.

Each class of error a user can cause gets exit code 2, one message naming the offending thing
and what to do, and no traceback. Real console scripts (`python -m t0_jax.bin.<x>`) run in
subprocesses, started together so their interpreter starts overlap, for: missing checkpoint,
checkpoint/model mismatch, bad gin value, a run that does not fit in device memory, unwritable
output directory, malformed mirror line, malformed template file (a promptsource install whose
YAML is broken, put first on PYTHONPATH), and `--help` with empty stderr. The other classes
(unknown task/mixture, missing split, missing vocabulary, a MODEL_DIR held by another trainer,
a scoring write that fails mid-run) run through `main(argv)` in-process, where the same
`cli.run` decides the exit code and the text.
"""
import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest

from t0_jax.bin import cli, convert, score, tasks
from t0_jax.bin import train as train_cli

REPO = pathlib.Path(__file__).resolve().parents[2]
BROKEN_YAML = ("dataset: glue\nsubset: mrpc\ntemplates:\n  abc: !Template\n    name: broken\n"
               "    jinja: '{{sentence1}} ||| yes'\n   stray: [\n")


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the script itself must keep TensorFlow quiet
    env.update(extra)
    return env


def _start(module, *argv, env=None):
    return subprocess.Popen([sys.executable, "-m", f"t0_jax.bin.{module}", *map(str, argv)],
                            cwd=REPO, env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, t5x_fixture, spm_model_path):
    """The real tiny T5X checkpoint in our format, with a vocabulary."""
    out = tmp_path_factory.mktemp("tiny") / "t0"
    assert convert.main(["t5x-to-t0", str(t5x_fixture), str(out), "--vocab",
                         spm_model_path]) == 0
    return out


def _bad_mirror(root: pathlib.Path) -> pathlib.Path:
    """glue/mrpc/validation.jsonl whose 2nd line is cut off mid-object."""
    folder = root / "glue" / "mrpc"
    folder.mkdir(parents=True)
    good = json.dumps({"sentence1": "a b", "sentence2": "a b", "label": 1, "idx": 0})
    (folder / "validation.jsonl").write_text(good + "\n" + '{"sentence1": "cut off' + "\n")
    return root


def _fake_promptsource(root: pathlib.Path) -> pathlib.Path:
    folder = root / "promptsource" / "templates" / "glue" / "mrpc"
    folder.mkdir(parents=True)
    (root / "promptsource" / "__init__.py").write_text("")
    (folder / "templates.yaml").write_text(BROKEN_YAML)
    return root


def test_console_scripts_answer_user_errors_in_one_line(tmp_path, t5x_fixture, shared_data_dir,
                                                        spm_model_path):
    (tmp_path / "a_file").write_text("x")
    train_args = ["--gin_file=runs/train.gin", "--gin_file=experiments/tiny_demo.gin",
                  f"--gin.MODEL_DIR={tmp_path / 'run'}", f"--gin.DATA_DIR={shared_data_dir}",
                  f"--gin.VOCAB_PATH={spm_model_path}"]
    score_args = ["--gin_file=runs/score.gin", "--gin.MIXTURE_OR_TASK_NAME=glue_mrpc_x"]
    cases = {  # name: (process, what the message must name)
        "missing checkpoint": (_start("score", *score_args, f"--gin.OUTPUT_DIR={tmp_path}/o",
                                      f"--gin.CHECKPOINT_PATH={tmp_path}/no_such_ckpt"),
                               f"{tmp_path}/no_such_ckpt does not exist"),
        "unwritable output dir": (_start("score", *score_args, "--gin.CHECKPOINT_PATH=x",
                                         f"--gin.OUTPUT_DIR={tmp_path}/a_file/out"),
                                  f"OUTPUT_DIR {tmp_path}/a_file/out is not writable"),
        "checkpoint/model mismatch": (_start("convert", "t5x-to-t0", t5x_fixture,
                                             tmp_path / "c", "--preset", "small"),
                                      "does not match the T5 config"),
        "missing initial checkpoint, no VOCAB_PATH": (
            _start("train", "--gin_file=runs/finetune.gin", *train_args[1:-1],
                   f"--gin.INITIAL_CHECKPOINT_PATH={tmp_path}/no_such_t5",
                   env={k: v for k, v in _env().items() if k != "T0_VOCAB_PATH"}),
            f"INITIAL_CHECKPOINT_PATH={tmp_path}/no_such_t5 does not exist"),
        "bad gin value": (_start("train", *train_args, "--gin.BATCH_SIZE=0"),
                          "BATCH_SIZE=0 must be a positive integer"),
        "does not fit in device memory": (
            _start("train", *train_args, "--gin.TRAIN_STEPS=1",
                   "--gin_bindings=train.device_memory_bytes = 1000"), "Increase NUM_PARTITIONS"),
        "malformed mirror line": (_start("tasks", "render", "--task", "glue_mrpc_equivalent",
                                         "--split", "validation", "--data_dir",
                                         _bad_mirror(tmp_path / "mirror")),
                                  "glue/mrpc/validation.jsonl:2 is not valid JSON"),
        "malformed template file": (
            _start("tasks", "render", "--task", "glue_mrpc_equivalent", "--split",
                   "validation", "--data_dir", shared_data_dir,
                   env=_env(PYTHONPATH=f"{_fake_promptsource(tmp_path / 'ps')}:{REPO}")),
            "templates/glue/mrpc/templates.yaml is not valid YAML"),
    }
    failures = []
    for name, (proc, wanted) in cases.items():
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 2 or wanted not in err or "Traceback" in err or not \
                err.startswith("t0-") or "I0000" in err or "absl::InitializeLog" in err:
            failures.append(f"{name}: exit {proc.returncode}\n{err[-2000:]}")
    assert not failures, "\n\n".join(failures)


def test_initial_checkpoint_supplies_the_vocabulary(tiny_checkpoint, t5x_fixture, spm_model_path,
                                                    monkeypatch):
    """Without VOCAB_PATH the pipeline uses the initial checkpoint's spiece.model (ours keeps
    one); a T5X checkpoint without one leaves the default in place; VOCAB_PATH wins."""
    from t0_jax.bin import initial_checkpoint

    monkeypatch.delenv("T0_VOCAB_PATH", raising=False)
    found = initial_checkpoint.vocabulary(str(tiny_checkpoint), None)
    assert found == str(tiny_checkpoint / "spiece.model")
    assert pathlib.Path(found).read_bytes() == pathlib.Path(spm_model_path).read_bytes()
    assert initial_checkpoint.vocabulary(str(t5x_fixture), None) is None
    assert initial_checkpoint.vocabulary(str(tiny_checkpoint), "/my/spiece.model") == \
        "/my/spiece.model"


def test_help_prints_no_library_start_up_noise():
    procs = {name: _start(name, "--help") for name in ("score", "train")}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and f"t0-{name}" in out, (name, out, err)
        assert err == "", (name, err)


def _main(capsys, main, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_unknown_names_missing_split_and_vocabulary_exit_2(capsys, tiny_checkpoint, tmp_path,
                                                          shared_data_dir):
    base = ["--gin_file=runs/score.gin", f"--gin.CHECKPOINT_PATH={tiny_checkpoint}",
            f"--gin.OUTPUT_DIR={tmp_path / 'out'}", "--gin_bindings=score_run.progress = False"]
    code, err = _main(capsys, score.main, *base,
                      "--gin.MIXTURE_OR_TASK_NAME=glue_mrpc_equivalnt_score_eval")
    assert code == 2 and "unknown task or mixture 'glue_mrpc_equivalnt_score_eval'" in err
    assert "Did you mean: glue_mrpc_equivalent_score_eval" in err
    code, err = _main(capsys, score.main, *base, f"--gin.DATA_DIR={tmp_path}",
                      "--gin.MIXTURE_OR_TASK_NAME=glue_mrpc_equivalent_score_eval")
    assert code == 2 and f"{tmp_path}/glue/mrpc/validation.jsonl" in err
    code, err = _main(capsys, tasks.main, "list", "--mixture", "t0_trian")
    assert code == 2 and "Did you mean: t0_train" in err
    code, err = _main(capsys, tasks.main, "render", "--task", "glue_mrpc_equivalent", "--split",
                      "validation", "--data_dir", shared_data_dir, "--vocab_path",
                      tmp_path / "missing.model")
    assert code == 2 and f"{tmp_path}/missing.model" in err


def test_model_dir_held_by_another_trainer_exits_2(capsys, tmp_path, monkeypatch):
    from t0_jax.train import preemption

    def held(argv):
        raise preemption.RunLockedError(f"MODEL_DIR {tmp_path} is in use by another trainer "
                                        "(pid 12 on host-a); stop it first.")
    monkeypatch.setattr(train_cli, "run", held)
    code, err = _main(capsys, train_cli.main, "--gin_file=runs/train.gin")
    assert code == 2 and err == (f"t0-train: error: MODEL_DIR {tmp_path} is in use by another "
                                 "trainer (pid 12 on host-a); stop it first.\n")


def test_failed_results_write_keeps_finished_tasks(capsys, tiny_checkpoint, tmp_path,
                                                   monkeypatch):
    """The second task's write hits a full disk: exit 2, the first task's results intact; the
    rerun scores only the second."""
    from t0_jax.scoring import report
    from tests.scoring import bigbench_files

    names = bigbench_files.write_tasks(tmp_path / "bigbench")
    argv = ["--gin_file=runs/score.gin", f"--gin.CHECKPOINT_PATH={tiny_checkpoint}",
            f"--gin.MIXTURE_OR_TASK_NAME={names}", f"--gin.OUTPUT_DIR={tmp_path / 'out'}",
            "--gin_bindings=score_run.progress = False",
            "--gin_bindings=score_run.compilation_cache_dir = None"]
    real_write, written = report._atomic_write, []

    def full_disk(path, text):
        path = pathlib.PurePath(path)  # a path string (t0_jax.storage)
        if path.name.endswith(".jsonl") and path.parent.name == report.TASKS_DIR and written:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path.name)
        real_write(path, text)
    monkeypatch.setattr(report, "_atomic_write", full_disk)
    code, err = _main(capsys, score.main, *argv)
    assert code == 2 and "No space left on device" in err
    assert "the 1 task(s) finished before it are intact" in err
    finished = sorted(p.name for p in (tmp_path / "out" / "tasks").glob("*.done.json"))
    assert len(finished) == 1
    first = (tmp_path / "out" / "tasks" / finished[0]).read_text()
    monkeypatch.setattr(report, "_atomic_write", real_write)
    assert score.main(argv) == 0
    assert (tmp_path / "out" / "tasks" / finished[0]).read_text() == first  # not rescored
    assert len(list((tmp_path / "out" / "tasks").glob("*.done.json"))) == 2


def test_verbose_and_t0_debug_show_the_traceback(capsys, monkeypatch):
    def body(argv):
        raise cli.UserError("bad input named here")
    assert cli.run("t0-x", body, ["--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("t0-x: error: bad input named here\n")
    monkeypatch.setenv("T0_DEBUG", "1")
    assert cli.run("t0-x", body, []) == 2
    assert "Traceback" in capsys.readouterr().err


def test_internal_bugs_keep_their_traceback():
    def body(argv):
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        cli.run("t0-x", body, [])
    with pytest.raises(AttributeError):  # an OSError-free AttributeError is not a user error
        cli.run("t0-x", lambda argv: None.missing, [])


def test_message_raised_inside_tf_data_is_unwrapped():
    """A reader error raised in a generator reaches the caller as a TensorFlow error whose
    text carries ours: the user sees our message alone."""
    tf = pytest.importorskip("tensorflow")
    from t0_jax.data import sources

    def examples():
        yield 1
        raise sources.BadExampleError("/data/glue/x.jsonl:7 is not valid JSON; fix that line.")
    ds = tf.data.Dataset.from_generator(examples, output_signature=tf.TensorSpec((), tf.int32))
    with pytest.raises(tf.errors.OpError) as caught:
        list(ds.as_numpy_iterator())
    assert cli.user_message(caught.value) == ("/data/glue/x.jsonl:7 is not valid JSON; fix "
                                              "that line.")


def test_os_errors_name_the_path_and_the_fix():
    error = PermissionError(errno.EACCES, "Permission denied", "/out/results.json")
    assert cli.user_message(error) == ("/out/results.json: Permission denied (check the "
                                       "permissions or pick another directory)")
    full = OSError(errno.ENOSPC, "No space left on device", "/ckpt/4")
    assert "the disk is full" in cli.user_message(full)
    assert cli.user_message(OSError(errno.EIO, "I/O error")) is None  # not the user's doing


def test_stderr_filter_drops_cpp_lines_only(tmp_path):
    code = ("import os, sys\n"
            "from t0_jax.bin import cli\n"
            "def body(argv):\n"
            "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called"
            " are written to STDERR\\n')\n"
            "    os.write(2, b'I0000 00:00:1796062744.450235   12319 port.cc:153] oneDNN on\\n')\n"
            "    os.write(2, b'E0000 00:00:1796062744.450235   12319 x.cc:1] a real error\\n')\n"
            "    print('ours', file=sys.stderr)\n"
            "    return 0\n"
            "sys.exit(cli.run('t0-x', body))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr == "E0000 00:00:1796062744.450235   12319 x.cc:1] a real error\nours\n"
