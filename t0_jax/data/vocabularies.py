"""SentencePiece vocabularies with T5's conventions (pad=0, eos=1, unk=2, no bos, 100 extra ids).

`get_vocabulary` returns the seqio vocabulary the tasks tokenize with. T0 used T5's
`cc_all.32000.100extra` model (32,000 pieces + 100 sentinel ids; the model's embedding is padded
to 32,128 rows). Offline machines cannot read the `gs://` default, so the path comes from the
argument, else `$T0_VOCAB_PATH`, and the file is checked up front: an unreadable vocabulary
fails here with a message instead of deep inside a tf.data pipeline.

The path may be local or on object storage (`gs://`, through `t0_jax.storage`): SentencePiece
reads a local file, so a remote model is fetched once per process (`storage.local_copy`, checked
by size and checksum). The vocabulary keeps the path as given: it pickles (Beam workers, gin)
and compares by that path, and each process that unpickles it makes its own local copy.

`train_sentencepiece` builds small models with the same id layout for tests and demos.
seqio is imported lazily: it costs seconds, and training a model does not need it.
"""
from __future__ import annotations

import functools
import os
import pathlib

from t0_jax import storage

VOCAB_PATH_ENV = "T0_VOCAB_PATH"
DEFAULT_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
EXTRA_IDS = 100
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class VocabularyNotFoundError(FileNotFoundError):
    """The SentencePiece model file cannot be read."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def vocabulary_path(path=None) -> str:
    """The model file in effect: `path`, else `$T0_VOCAB_PATH`, else T5's public model."""
    return os.fspath(path) if path else os.environ.get(VOCAB_PATH_ENV) or DEFAULT_VOCAB_PATH


def get_vocabulary(path=None, extra_ids: int = EXTRA_IDS):
    """A `seqio.SentencePieceVocabulary` for the model at `vocabulary_path(path)` (cached)."""
    return _vocabulary(vocabulary_path(path), extra_ids)


@functools.lru_cache(maxsize=None)
def _vocabulary(path: str, extra_ids: int):
    _check_readable(path)
    return _stored_vocabulary_class()(path, extra_ids=extra_ids)


@functools.lru_cache(maxsize=None)
def _stored_vocabulary_class():
    """seqio.SentencePieceVocabulary over a local copy of a file that may live anywhere
    (defined on first use: seqio costs seconds to import)."""
    import seqio

    class StoredSentencePieceVocabulary(seqio.SentencePieceVocabulary):
        def __init__(self, path: str, **kwargs):
            self.stored_path = os.fspath(path)
            super().__init__(storage.local_copy(self.stored_path), **kwargs)

        def __getstate__(self):  # the path as given: equal and portable across processes
            state = super().__getstate__()
            state["_sentencepiece_model_file"] = state.pop("stored_path")
            return state

        def __setstate__(self, state):
            super().__setstate__(state)
            self.stored_path = self._sentencepiece_model_file
            self._sentencepiece_model_file = storage.local_copy(self.stored_path)

    StoredSentencePieceVocabulary.__qualname__ = "StoredSentencePieceVocabulary"
    StoredSentencePieceVocabulary.__module__ = __name__
    return StoredSentencePieceVocabulary


def __getattr__(name: str):
    """`vocabularies.StoredSentencePieceVocabulary` on demand, so pickle finds the class."""
    if name == "StoredSentencePieceVocabulary":
        return _stored_vocabulary_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_readable(path: str) -> None:
    kind = "object" if storage.is_remote(path) else "file"
    try:
        readable, reason = storage.isfile(path), f"no such {kind}"
    except Exception as error:  # noqa: BLE001 - offline, no credentials, no filesystem plugin
        readable, reason = False, f"{type(error).__name__}: {str(error).splitlines()[0]}"
    if not readable:
        raise VocabularyNotFoundError(
            f"cannot read the SentencePiece vocabulary {path} ({reason}). Download T5's "
            f"{DEFAULT_VOCAB_PATH} (or use the `spiece.model` of a Hugging Face T5 checkpoint) "
            f"and set ${VOCAB_PATH_ENV} to the local file, or pass its path explicitly.")


def train_sentencepiece(lines, out_path, vocab_size: int) -> str:
    """Train a unigram model on `lines` with T5's special ids; returns the `.model` path.

    Deterministic (one thread, every sentence used, no shuffling), so tests that depend on
    token ids see the same model every run. `hard_vocab_limit=False` lets tiny corpora yield
    fewer pieces than asked for instead of failing.
    """
    import sentencepiece as spm

    out_path = pathlib.Path(out_path)
    prefix = out_path.with_suffix("") if out_path.suffix == ".model" else out_path
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines)), model_prefix=str(prefix), vocab_size=vocab_size,
        model_type="unigram", pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        hard_vocab_limit=False, character_coverage=1.0, num_threads=1,
        input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    return str(prefix) + ".model"
