"""SentencePiece vocabularies: T5 id layout, determinism, seqio wrapping, clear errors."""
import pytest
import sentencepiece as spm

from t0_jax.data import vocabularies

TEXT = "the premise does imply the hypothesis because the answer is yes"


def _pieces(path):
    processor = spm.SentencePieceProcessor(model_file=str(path))
    return [(processor.id_to_piece(i), processor.get_score(i))
            for i in range(processor.get_piece_size())]


def test_fixture_model_has_t5_special_ids(spm_model_path):
    processor = spm.SentencePieceProcessor(model_file=spm_model_path)
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (
        0, 1, 2, -1)
    assert [processor.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert processor.decode(processor.encode(TEXT)) == TEXT
    assert 3 < processor.get_piece_size() <= 800  # hard_vocab_limit=False: small corpus, fewer


def test_training_is_deterministic(tmp_path):
    lines = [f"sentence {i} says {'yes' if i % 2 else 'no'} to question {i % 7}" for i in range(500)]
    first = vocabularies.train_sentencepiece(lines, tmp_path / "a" / "m.model", vocab_size=60)
    second = vocabularies.train_sentencepiece(iter(lines), tmp_path / "b" / "m.model", 60)
    assert first.endswith("a/m.model") and _pieces(first) == _pieces(second)


def test_seqio_vocabulary_matches_sentencepiece_and_adds_extra_ids(spm_model_path):
    processor = spm.SentencePieceProcessor(model_file=spm_model_path)
    vocab = vocabularies.get_vocabulary(spm_model_path)
    assert vocab is vocabularies.get_vocabulary(spm_model_path)  # cached
    assert vocab.vocab_size == processor.get_piece_size() + 100
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert list(vocab.encode(TEXT)) == processor.encode(TEXT)
    assert vocab.decode(vocab.encode(TEXT)) == TEXT
    assert vocab.decode([vocab.vocab_size - 1]) == "<extra_id_0>"


def test_environment_variable_supplies_the_path(spm_model_path, monkeypatch):
    monkeypatch.setenv(vocabularies.VOCAB_PATH_ENV, spm_model_path)
    assert vocabularies.vocabulary_path() == spm_model_path
    assert vocabularies.get_vocabulary() is vocabularies.get_vocabulary(spm_model_path)


def test_unreadable_path_says_how_to_fix(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(vocabularies.VocabularyNotFoundError) as info:
        vocabularies.get_vocabulary(missing)
    assert str(missing) in str(info.value) and "T0_VOCAB_PATH" in str(info.value)


def test_default_is_t5_public_model(monkeypatch):
    """Online: the real 32,000-piece model (+100 extra ids); offline: the explained error.
    Without DNS for Cloud Storage the read is not tried: gcsfs retries a failing request for
    ≈50 s before giving up (the explained error for a missing object is checked against the
    emulator below)."""
    import socket

    monkeypatch.delenv(vocabularies.VOCAB_PATH_ENV, raising=False)
    assert vocabularies.vocabulary_path() == vocabularies.DEFAULT_VOCAB_PATH
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        return
    try:
        vocab = vocabularies.get_vocabulary()
    except vocabularies.VocabularyNotFoundError as error:
        assert vocabularies.DEFAULT_VOCAB_PATH in str(error) and "T0_VOCAB_PATH" in str(error)
    else:
        assert vocab.vocab_size == 32100


def test_vocabulary_in_a_bucket_reads_through_a_verified_local_copy(spm_model_path,
                                                                   gcs_bucket):
    """VOCAB_PATH on gs:// (fake-gcs-server, tests/gcs/): SentencePiece reads a local copy
    checked against the object; the vocabulary keeps and pickles the gs:// path, so a Beam
    worker that unpickles it fetches its own copy."""
    import pickle

    from t0_jax import storage

    with gcs_bucket.applied():
        remote = gcs_bucket.root("vocab") + "/spiece.model"
        storage.copy(spm_model_path, remote)
        vocab = vocabularies.get_vocabulary(remote)
        local = vocabularies.get_vocabulary(spm_model_path)
        assert list(vocab.encode(TEXT)) == list(local.encode(TEXT))
        assert vocab.vocab_size == local.vocab_size
        assert vocab.sentencepiece_model_file != remote  # a local copy ...
        with open(vocab.sentencepiece_model_file, "rb") as f:
            assert f.read() == gcs_bucket.read_object(remote)  # ... of the object's bytes
        state = pickle.dumps(vocab)
        assert remote.encode() in state and vocab.sentencepiece_model_file.encode() not in state
        again = pickle.loads(state)
        assert again == vocab and list(again.encode(TEXT)) == list(vocab.encode(TEXT))
        with pytest.raises(vocabularies.VocabularyNotFoundError, match="no such object"):
            vocabularies.get_vocabulary(remote + ".missing")
