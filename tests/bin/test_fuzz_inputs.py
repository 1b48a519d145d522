"""Bad input of every kind a user hands the commands: a clear error each time, never a hang.

Mirror lines (truncated, not JSON, a list, an empty object, fields of the wrong type), template
files (a YAML syntax error, a wrong structure) and templates (jinja that does not parse, jinja
that fails on an example), checkpoints (a truncated or header-only safetensors file, a broken
config.json, an Orbax directory missing an item, its manifest or its array files, a truncated
T5X msgpack, a T5X checkpoint of another size). Built in tmp from the real T5X fixture and the
MRPC mirror. Each case runs `main(argv)` in-process (the console scripts' own entry; the
subprocess contract is in test_errors.py) under an alarm, so a hang fails the test: exit code
2, the offending file (and line or template) named, no traceback.
"""
import contextlib
import json
import pathlib
import shutil
import signal

import pytest

from t0_jax.bin import convert, tasks
from t0_jax.data import templates

GOOD = {"sentence1": "The cat sat.", "sentence2": "A cat was sitting.", "label": 1, "idx": 0}


@contextlib.contextmanager
def _deadline(seconds=120):
    def hang(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _answer(capsys, main, *argv):
    with _deadline():
        code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _mirror(root: pathlib.Path, bad_line: str) -> pathlib.Path:
    folder = root / "glue" / "mrpc"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text(json.dumps(GOOD) + "\n" + bad_line + "\n")
    return folder / "validation.jsonl"


@pytest.mark.parametrize("line, problem", [
    ('{"sentence1": "The cat', "is not valid JSON"),
    ("sentence1,sentence2,label", "is not valid JSON"),
    ("[1, 2, 3]", "is a JSON list, not an object"),
])
def test_malformed_mirror_lines_name_file_and_line(capsys, tmp_path, line, problem):
    path = _mirror(tmp_path, line)
    for task in ("glue_mrpc_equivalent", "glue_mrpc_equivalent_score_eval"):
        code, err = _answer(capsys, tasks.main, "render", "--task", task, "--split",
                            "validation", "--data_dir", tmp_path)
        assert code == 2 and f"{path}:2 {problem}" in err, err


def test_missing_fields_are_named_and_mistyped_labels_marked(capsys, tmp_path):
    """No field at all: the missing field is named. A label of the wrong type matches no
    answer: the target is P3's `<NO LABEL>` marker, as promptsource renders it."""
    _mirror(tmp_path / "empty", "{}")
    code, err = _answer(capsys, tasks.main, "render", "--task", "glue_mrpc_equivalent",
                        "--split", "validation", "--data_dir", tmp_path / "empty")
    assert code == 2 and "example has no field 'label'" in err and "sentence1" in err
    _mirror(tmp_path / "typed", json.dumps(dict(GOOD, label="yes", idx=1)))
    with _deadline():
        assert tasks.main(["render", "--task", "glue_mrpc_equivalent", "--split", "validation",
                           "--data_dir", str(tmp_path / "typed"), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["dropped"] for r in rows] == [False, False]
    assert rows[0]["targets"] == "equivalent" and rows[1]["targets"] == templates.NO_LABEL


@pytest.mark.parametrize("text, problem", [
    ("dataset: glue\ntemplates:\n  a: !Template\n    name: x\n   jinja: [\n", "is not valid YAML"),
    ("dataset: glue\ntemplates: [1, 2]\n", "has no `templates:` mapping"),
    ("dataset: glue\ntemplates:\n  a: !Template\n    name: x\n", "has no `jinja` string"),
])
def test_malformed_template_files_name_the_file(tmp_path, text, problem):
    path = tmp_path / "templates.yaml"
    path.write_text(text)
    with _deadline(), pytest.raises(templates.TemplateError) as caught:
        templates.load_template_file(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize("jinja, problem", [
    ("{{ sentence1 ||| yes", "is not valid jinja (line 1"),
    ("{% if label %}{{ sentence1 }} ||| yes", "is not valid jinja (line 1"),
    ("{{ sentence1 | no_such_filter }} ||| yes", "No filter named 'no_such_filter'"),
    ("{{ sentence1.missing_method() }} ||| yes", "failed on an example (UndefinedError"),
    ("{{ sentence1 - label }} ||| yes", "failed on an example (TypeError"),
])
def test_jinja_errors_name_the_template(tmp_path, jinja, problem):
    path = tmp_path / "templates.yaml"
    path.write_text("dataset: glue\nsubset: mrpc\ntemplates:\n  u1: !Template\n"
                    f"    name: broken one\n    jinja: {json.dumps(jinja)}\n")
    (template,) = templates.load_template_file(path)
    with _deadline(), pytest.raises(templates.TemplateError) as caught:
        templates.render(template, GOOD)
    message = str(caught.value)
    assert "template 'broken one'" in message and str(path) in message and problem in message


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, t5x_fixture):
    """The real tiny T5X checkpoint, converted to ours and to Hugging Face."""
    root = tmp_path_factory.mktemp("ckpt")
    with _deadline(300):
        assert convert.main(["t5x-to-t0", str(t5x_fixture), str(root / "t0")]) == 0
        assert convert.main(["t0-to-hf", str(root / "t0"), str(root / "hf")]) == 0
    return root


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def test_damaged_hugging_face_directories(capsys, checkpoints, tmp_path):
    weights = (checkpoints / "hf" / "model.safetensors").read_bytes()
    for name, size in (("half", len(weights) // 2), ("header_only", 5)):
        src = _copy(checkpoints / "hf", tmp_path / name)
        (src / "model.safetensors").write_bytes(weights[:size])
        code, err = _answer(capsys, convert.main, "hf-to-t0", src, tmp_path / f"{name}_out")
        assert code == 2, err
        assert f"{src}/model.safetensors is not a readable safetensors file" in err
    src = _copy(checkpoints / "hf", tmp_path / "config")
    (src / "config.json").write_text('{"d_model": 8,')
    code, err = _answer(capsys, convert.main, "hf-to-t0", src, tmp_path / "config_out")
    assert code == 2 and f"{src}/config.json is not valid JSON" in err
    assert not (tmp_path / "half_out").exists()  # nothing half-written


# Orbax closes its event loop while tensorstore still completes futures of the failed read
# (the console scripts hide that exit-time note: bin/cli.py `_quiet_unraisable`).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("victim, problem", [
    ("params", "is not a checkpoint this code can read"),
    ("model_config", "is not a checkpoint this code can read"),
    ("params/manifest.ocdbt", "files of this Orbax checkpoint are missing or damaged"),
    ("params/d", "files of this Orbax checkpoint are missing or damaged"),
])
def test_orbax_directory_missing_files(capsys, checkpoints, tmp_path, victim, problem):
    src = _copy(checkpoints / "t0", tmp_path / "t0")
    target = src / victim
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    code, err = _answer(capsys, convert.main, "t0-to-hf", src, tmp_path / "out")
    assert code == 2 and str(src) in err and problem in err, err


def test_t5x_checkpoints_truncated_or_of_another_size(capsys, t5x_fixture, tmp_path):
    truncated = tmp_path / "truncated.checkpoint"
    truncated.write_bytes(t5x_fixture.read_bytes()[:100_000])
    code, err = _answer(capsys, convert.main, "t5x-to-t0", truncated, tmp_path / "a")
    assert code == 2 and f"{truncated} is not a T5X msgpack checkpoint" in err

    from flax import serialization
    tree = serialization.msgpack_restore(t5x_fixture.read_bytes())
    del tree["optimizer"]["target"]["encoder"]["layers_1"]  # a model with one encoder layer
    smaller = tmp_path / "smaller.checkpoint"
    smaller.write_bytes(serialization.msgpack_serialize(tree))
    code, err = _answer(capsys, convert.main, "t5x-to-t0", smaller, tmp_path / "b",
                        "--preset", "tiny")
    assert code == 2 and f"T5X checkpoint {smaller} does not match the T5 config" in err
    assert "missing: encoder/layers_1/attention/key/kernel" in err
    code, err = _answer(capsys, convert.main, "t5x-to-t0", t5x_fixture, tmp_path / "c",
                        "--preset", "small")
    assert code == 2 and "wrong shape: token_embedder/embedding: found (32128, 8)" in err
    assert "… and 182 more (--verbose lists them all)" in err and err.count("\n") < 15
