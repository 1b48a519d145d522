"""The prefix-LM task splits as t5's `prefix_lm` does (t5/data/preprocessors.py: split_tokens to
the inputs length, then random_prefix_noise_mask: k ~ Uniform{1..L-1} prefix tokens are the
inputs, the rest the targets, EOS after the targets). `t5` itself is not installed (it pins
TensorFlow/mesh-tensorflow versions that conflict with ours), so the checks are a hand-computed
example and the distribution of split points over many seeds."""
import collections

import numpy as np
import pytest
import seqio
import tensorflow as tf

from t0_jax.data import corpus, prefix_lm, registry, sources


def test_hand_computed_split_and_segments():
    out = prefix_lm.prefix_split(tf.constant([5, 6, 7, 8, 9]), tf.constant(2))
    assert out["inputs"].numpy().tolist() == [5, 6]
    assert out["targets"].numpy().tolist() == [7, 8, 9]
    # split_tokens: consecutive segments of at most 4 tokens, the last one shorter; empty dropped
    ds = tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant(
        [list(range(1, 12)), [], [20, 21]])})
    ds = ds.map(lambda x: {"targets": x["targets"]})
    segments = [x["targets"].tolist() for x in prefix_lm.split_tokens(ds, 4).as_numpy_iterator()]
    assert segments == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11], [20, 21]]
    # the inputs feature has no EOS here, so segments are exactly the inputs length (t5 keeps
    # one position for EOS only when the inputs feature adds one)
    features = {"inputs": seqio.Feature(seqio.PassThroughVocabulary(50), add_eos=False)}
    one = tf.data.Dataset.from_tensors({"targets": tf.range(1, 10)})
    cut = prefix_lm.split_to_inputs_length(one, {"inputs": 4}, features)
    assert [len(x["targets"]) for x in cut.as_numpy_iterator()] == [4, 4, 1]


@pytest.mark.parametrize("length", [1, 2, 5])
def test_split_point_is_uniform_over_one_to_length_minus_one(length):
    draws = [int(prefix_lm.num_prefix_tokens(tf.constant(length), tf.constant([s, 7])))
             for s in range(1200)]
    counts = collections.Counter(draws)
    expected = range(max(1, 0), length) if length > 1 else [0]  # t5: min(1, L-1) .. L-1
    assert set(counts) == set(expected)
    for k in expected:  # uniform: each value within 4 standard deviations of 1200 / (L - 1)
        p = 1 / len(expected)
        assert abs(counts[k] - 1200 * p) <= 4 * np.sqrt(1200 * p * (1 - p)) + 1e-9


@pytest.fixture
def corpus_task(tmp_path, spm_model_path):
    vocab, data_dir = registry.task_vocabulary().path, sources._data_dir
    corpus.write_corpus(tmp_path, seed=0, num_documents=40)
    sources.set_data_dir(tmp_path)
    registry.set_vocab_path(spm_model_path)
    prefix_lm.register_corpus_task(40)
    yield seqio.get_mixture_or_task(prefix_lm.TASK_NAME), tmp_path
    registry.set_vocab_path(vocab)
    sources.set_data_dir(data_dir)


def test_task_splits_every_document_into_prefix_and_continuation(corpus_task):
    task, data_dir = corpus_task
    vocab = registry.task_vocabulary()
    lengths = {"inputs": 16, "targets": 128}
    examples = list(task.get_dataset(lengths, split="train", shuffle=False, seed=3)
                    .as_numpy_iterator())
    rebuilt, k_over_l = [], []
    for ex in examples:
        assert ex["targets"][-1] == 1 and 1 not in ex["targets"][:-1]  # EOS after the targets
        segment = ex["inputs"].tolist() + ex["targets"][:-1].tolist()
        assert len(segment) <= 16  # the inputs length (no EOS on inputs)
        k = len(ex["inputs"])  # t5: k in [min(1, L-1), L-1]; a 1-token segment is all target
        assert 1 <= k <= len(segment) - 1 or (len(segment) == 1 and k == 0)
        rebuilt.extend(segment)
        k_over_l.append(len(ex["inputs"]) / len(segment))
    documents = corpus.read_corpus(data_dir)
    assert rebuilt == [t for d in documents for t in vocab.encode(d)]  # nothing lost or reordered
    assert 0.35 < np.mean(k_over_l) < 0.65  # the split point is spread over the segment
