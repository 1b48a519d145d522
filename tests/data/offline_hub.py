"""A Hugging Face Hub cache, filled by hand, laid out as huggingface_hub itself lays it out, so
the real `huggingface_hub` + `datasets` resolve our table offline (HF_HUB_OFFLINE=1).

Layout (huggingface_hub 2.4 `file_download`/`_snapshot_download`; the cache root is
$HF_HUB_CACHE, default $HF_HOME/hub):

    datasets--<org>--<name>/
        blobs/<sha256 of the file>                 the bytes (an LFS file's etag is its sha256)
        refs/<revision>                            text: the commit the revision points to
                                                   (refs/convert/parquet: refs/refs/convert/parquet)
        snapshots/<commit>/<repo path>             relative symlink to ../../blobs/<sha256>

Offline, `snapshot_download(repo, repo_type="dataset", revision=R)` reads refs/R and returns
snapshots/<commit>. The parquet files are written by `datasets` itself (`Dataset.to_parquet`),
so their schema carries the features (ClassLabel names) as the Hub's files do.

Rows: the first of each split is a real example as its dataset card/viewer shows it; the rest
follow the same schema, so that every split has the example count the catalogue records (what
t0-data checks). `ROWS_2021[...]` is the same examples as the 2021 `datasets` scripts gave them.
"""
from __future__ import annotations

import csv
import hashlib
import os
import pathlib

COUNTS = {("super_glue", "rte", "validation"): 277, ("super_glue", "cb", "validation"): 56,
          ("super_glue", "copa", "validation"): 100, ("super_glue", "wic", "validation"): 638,
          ("super_glue", "wsc.fixed", "validation"): 104, ("anli", None, "dev_r1"): 1000,
          ("anli", None, "dev_r2"): 1000, ("anli", None, "dev_r3"): 1200,
          ("winogrande", "winogrande_xl", "validation"): 1267,
          ("hellaswag", None, "validation"): 40, ("story_cloze", "2016", "validation"): 1871}

# (repo, revision, repository path of the split's parquet file) per (dataset, subset, split):
# the real layouts of tasks/hub_sources.yaml's verified rows.
REPO_FILES = {
    ("super_glue", "rte", "validation"): ("aps/super_glue", "refs/convert/parquet",
                                          "rte/validation/0000.parquet"),
    ("super_glue", "cb", "validation"): ("aps/super_glue", "refs/convert/parquet",
                                         "cb/validation/0000.parquet"),
    ("super_glue", "copa", "validation"): ("aps/super_glue", "refs/convert/parquet",
                                           "copa/validation/0000.parquet"),
    ("super_glue", "wic", "validation"): ("aps/super_glue", "refs/convert/parquet",
                                          "wic/validation/0000.parquet"),
    ("super_glue", "wsc.fixed", "validation"): ("aps/super_glue", "refs/convert/parquet",
                                                "wsc.fixed/validation/0000.parquet"),
    **{("anli", None, f"dev_r{r}"): ("facebook/anli", "main",
                                     f"plain_text/dev_r{r}-00000-of-00001.parquet")
       for r in (1, 2, 3)},
    ("winogrande", "winogrande_xl", "validation"): (
        "allenai/winogrande", "main", "winogrande_xl/validation-00000-of-00001.parquet"),
    ("hellaswag", None, "validation"): ("Rowan/hellaswag", "refs/convert/parquet",
                                        "default/validation/0000.parquet"),
}

STORY_CLOZE_CSV = "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"
_CSV_COLUMNS = ("InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3",
                "InputSentence4", "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2",
                "AnswerRightEnding")


def _features(key):
    """The `datasets` features of the 2021 dataset (and of the Hub's parquet files)."""
    from datasets import ClassLabel, Features, Sequence, Value

    text = Value("string")
    glue = {"idx": Value("int32")}
    name, subset, _ = key
    if name == "super_glue":
        return Features({
            "rte": {"premise": text, "hypothesis": text, **glue,
                    "label": ClassLabel(names=["entailment", "not_entailment"])},
            "cb": {"premise": text, "hypothesis": text, **glue,
                   "label": ClassLabel(names=["entailment", "contradiction", "neutral"])},
            "copa": {"premise": text, "choice1": text, "choice2": text, "question": text, **glue,
                     "label": ClassLabel(names=["choice1", "choice2"])},
            "wic": {"word": text, "sentence1": text, "sentence2": text,
                    "start1": Value("int32"), "start2": Value("int32"), "end1": Value("int32"),
                    "end2": Value("int32"), **glue, "label": ClassLabel(names=["False", "True"])},
            "wsc.fixed": {"text": text, "span1_index": Value("int32"),
                          "span2_index": Value("int32"), "span1_text": text, "span2_text": text,
                          **glue, "label": ClassLabel(names=["False", "True"])},
        }[subset])
    if name == "anli":
        return Features({"uid": text, "premise": text, "hypothesis": text,
                         "label": ClassLabel(names=["entailment", "neutral", "contradiction"]),
                         "reason": text})
    if name == "winogrande":
        return Features({"sentence": text, "option1": text, "option2": text, "answer": text})
    return Features({"ind": Value("int32"), "activity_label": text, "ctx_a": text, "ctx_b": text,
                     "ctx": text, "endings": Sequence(text), "source_id": text, "split": text,
                     "split_type": text, "label": text})


def _row(key, i: int) -> dict:
    """Example i of a split in the 2021 fields and types (i = 0: a real example)."""
    name, subset, split = key
    if (name, subset) == ("super_glue", "rte"):
        if i == 0:
            return {"premise": "Dana Reeve, the widow of the actor Christopher Reeve, has died of "
                    "lung cancer at age 44, according to the Christopher Reeve Foundation.",
                    "hypothesis": "Christopher Reeve had an accident.", "idx": 0, "label": 1}
        return {"premise": f"The committee met {i} times last year in Geneva.",
                "hypothesis": f"The committee met in Geneva {i % 7} times.", "idx": i,
                "label": i % 2}
    if (name, subset) == ("super_glue", "cb"):
        if i == 0:
            return {"premise": "Valence the void-brain, Valence the virtuous valet. Why couldn't "
                    "the figger choose his own portion of titanic anatomy to shaft? Did he think "
                    "he was helping?", "hypothesis": "Valence was helping", "idx": 0, "label": 1}
        return {"premise": f"B: I think it costs {i} dollars. A: Do you really think so?",
                "hypothesis": f"it costs {i} dollars", "idx": i, "label": i % 3}
    if (name, subset) == ("super_glue", "copa"):
        if i == 0:
            return {"premise": "The man turned on the faucet.",
                    "choice1": "The toilet filled with water.",
                    "choice2": "Water flowed from the spout.", "question": "effect", "idx": 0,
                    "label": 1}
        return {"premise": f"The girl found {i} coins.", "choice1": "She went shopping.",
                "choice2": "She lost her wallet.", "question": ("cause", "effect")[i % 2],
                "idx": i, "label": i % 2}
    if (name, subset) == ("super_glue", "wic"):
        if i == 0:
            return {"word": "board", "sentence1": "Room and board.",
                    "sentence2": "He nailed boards across the windows.", "start1": 9,
                    "start2": 11, "end1": 14, "end2": 17, "idx": 0, "label": 0}
        return {"word": "bank", "sentence1": f"She sat on the bank number {i}.",
                "sentence2": "The bank raised its rates.", "start1": 15, "start2": 4,
                "end1": 19, "end2": 8, "idx": i, "label": i % 2}
    if (name, subset) == ("super_glue", "wsc.fixed"):
        if i == 0:
            return {"text": "The city councilmen refused the demonstrators a permit because "
                    "they feared violence.", "span1_index": 0, "span2_index": 9,
                    "span1_text": "The city councilmen", "span2_text": "they", "idx": 0,
                    "label": 1}
        return {"text": f"Mark told Pete {i} lies about himself.", "span1_index": 2,
                "span2_index": 6, "span1_text": "Pete", "span2_text": "himself", "idx": i,
                "label": i % 2}
    if name == "anli":
        if i == 0:
            return {"uid": "7bb3e0b4-5ad9-4bd8-9da0-3f2e4b8c9a11",
                    "premise": "The Parma trolleybus system (Italian: \"Rete filoviaria di "
                    "Parma\" ) forms part of the public transport network of the city and "
                    "\"comune\" of Parma, in the region of Emilia-Romagna, northern Italy.",
                    "hypothesis": "The trolleybus system has over 2 urban routes",
                    "label": 1, "reason": ""}
        return {"uid": f"{split}-{i:05d}", "premise": f"Round {split} premise number {i}.",
                "hypothesis": f"There are {i % 5} premises.", "label": i % 3,
                "reason": "" if i % 2 else f"Because of {i}."}
    if name == "winogrande":
        if i == 0:
            return {"sentence": "Sarah was a much better surgeon than Maria so _ always got the "
                    "harder cases.", "option1": "Sarah", "option2": "Maria", "answer": "1"}
        return {"sentence": f"Ian gave Dennis {i} books because _ had finished reading.",
                "option1": "Ian", "option2": "Dennis", "answer": str(1 + i % 2)}
    if name == "hellaswag":
        if i == 0:
            return {"ind": 24, "activity_label": "Roof shingle removal",
                    "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
                    "ctx": "A man is sitting on a roof. he",
                    "endings": ["is using wrap to wrap a pair of skis.",
                                "is ripping level tiles off.",
                                "is holding a rubik's cube.",
                                "starts pulling up roofing on a roof."],
                    "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val",
                    "split_type": "indomain", "label": "3"}
        return {"ind": 100 + i, "activity_label": "Baking cookies",
                "ctx_a": f"A woman mixes {i} eggs.", "ctx_b": "she",
                "ctx": f"A woman mixes {i} eggs. she",
                "endings": [f"adds flour {k}." for k in range(4)],
                "source_id": f"activitynet~v_{i}", "split": "val", "split_type": "zeroshot",
                "label": str(i % 4)}
    if name == "story_cloze":
        if i == 0:
            return {"story_id": "138d5bfb-05cc-41e3-bf2c-fa85ebad14e2",
                    "input_sentence_1": "Rick grew up in a troubled household.",
                    "input_sentence_2": "He never found good support in family, and turned to "
                    "gangs.",
                    "input_sentence_3": "It wasn't long before Rick got shot in a robbery.",
                    "input_sentence_4": "The incident caused him to turn a new leaf.",
                    "sentence_quiz1": "He is happy now.", "sentence_quiz2": "He joined a gang.",
                    "answer_right_ending": 1}
        return {"story_id": f"story-{i:05d}", "input_sentence_1": f"Kim baked {i} pies.",
                "input_sentence_2": "She took them to the fair.",
                "input_sentence_3": "The judges tasted every one.",
                "input_sentence_4": "They announced the winner.",
                "sentence_quiz1": "Kim won a ribbon.", "sentence_quiz2": "Kim hated pie.",
                "answer_right_ending": 1 + i % 2}
    raise KeyError(key)


def rows_2021(key, n=None) -> list:
    """The split's examples as the 2021 `datasets` gave them (n: the first n only)."""
    return [_row(key, i) for i in range(COUNTS[key] if n is None else n)]


def _commit(repo: str, revision: str) -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def add_to_cache(hub_cache: pathlib.Path, key, rows=None) -> str:
    """Put one split's parquet file into the Hub cache as a download would; returns its path."""
    import datasets

    repo, revision, repo_path = REPO_FILES[key]
    storage = hub_cache / ("datasets--" + repo.replace("/", "--"))
    commit = _commit(repo, revision)
    staged = hub_cache.parent / "staged" / repo / repo_path
    staged.parent.mkdir(parents=True, exist_ok=True)
    rows = rows_2021(key) if rows is None else rows
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    datasets.Dataset.from_dict(columns, features=_features(key)).to_parquet(str(staged))
    data = staged.read_bytes()
    blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    link = storage / "snapshots" / commit / repo_path
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.relpath(blob, link.parent), link)
    return str(link)


def fill_cache(hub_cache: pathlib.Path, keys) -> None:
    for key in keys:
        add_to_cache(hub_cache, key)


def write_story_cloze_csv(folder: pathlib.Path, n=None) -> pathlib.Path:
    """The manually obtained 2016 validation CSV (its real column names), same examples."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STORY_CLOZE_CSV
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_CSV_COLUMNS)
        for row in rows_2021(("story_cloze", "2016", "validation"), n):
            writer.writerow([row["story_id"], row["input_sentence_1"], row["input_sentence_2"],
                             row["input_sentence_3"], row["input_sentence_4"],
                             row["sentence_quiz1"], row["sentence_quiz2"],
                             str(row["answer_right_ending"])])
    return path


def offline_env(root: pathlib.Path) -> dict:
    """Environment variables that point huggingface_hub and datasets at `root`, offline."""
    return {"HF_HOME": str(root / "hf_home"), "HF_HUB_CACHE": str(root / "hub"),
            "HF_DATASETS_CACHE": str(root / "datasets"), "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def go_offline(monkeypatch, root: pathlib.Path) -> pathlib.Path:
    """In this process: the env above, and the module constants huggingface_hub and datasets
    read at import, where a test before imported them (else the env is what they will read).
    Returns the Hub cache root."""
    import sys

    for name, value in offline_env(root).items():
        monkeypatch.setenv(name, value)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = sys.modules.get("datasets.config")
    if config is not None:
        monkeypatch.setattr(config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(config, "HF_DATASETS_CACHE", root / "datasets")
    return root / "hub"
