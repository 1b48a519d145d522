"""The prefix-LM objective that made T5 into T5+LM, as a seqio task over the demo corpus.

T0 starts from the LM-adapted T5 v1.1 ("T5+LM"): T5 trained further on C4 with the prefix
language-modelling objective of Raffel et al. (2020). seqio 0.0.20 has no such preprocessor; this
module follows T5's own, `t5.data.preprocessors.prefix_lm` in
google-research/text-to-text-transfer-transformer (t5/data/preprocessors.py), which chains
  1. `select_random_chunk(max_length=65536)`: one random chunk of a long document (our documents
     are a few dozen tokens, far below 65,536, so the chunk is the whole document: skipped);
  2. `split_tokens_to_inputs_length`: cut the token sequence into consecutive segments of at
     most `sequence_length["inputs"]` tokens (one fewer when the inputs feature adds EOS; ours
     does not), the last one shorter (`split_tokens`);
  3. `denoise(noise_density=0.5, noise_mask_fn=random_prefix_noise_mask,
     inputs_fn=drop_nonnoise_tokens, targets_fn=drop_noise_tokens)`: a segment of L tokens is
     split after k tokens, k drawn uniformly from [min(1, L-1), L-1] (`random_prefix_noise_mask`:
     `stateless_uniform(minval=min(max_input_tokens, 1), maxval=max_input_tokens + 1)` with
     `max_input_tokens = L - 1`); inputs = the first k tokens, targets = the other L - k.
Then EOS is appended to the targets (seqio `append_eos_after_trim`), as for every task here.

`prefix_split` is the pure split; `num_prefix_tokens` the draw (per example, from seqio's
stateless per-example seeds); `register_corpus_task` registers `synth_corpus_prefix_lm` reading
`DATA_DIR/synth_corpus/train.jsonl` (t0_jax.data.corpus) with the registry's vocabulary.
"""
from __future__ import annotations

import functools
from typing import Mapping

import seqio
import tensorflow as tf

from t0_jax.data import corpus, registry, sources

TASK_NAME = "synth_corpus_prefix_lm"


def num_prefix_tokens(length: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """k ~ Uniform{min(1, L-1), ..., L-1} (int32 scalar): t5's random_prefix_noise_mask draw."""
    max_input_tokens = length - 1
    min_input_tokens = tf.minimum(max_input_tokens, 1)
    return tf.random.stateless_uniform([], seed=seed, minval=min_input_tokens,
                                       maxval=max_input_tokens + 1, dtype=tf.int32)


def prefix_split(tokens: tf.Tensor, k: tf.Tensor) -> dict:
    """{"inputs": tokens[:k], "targets": tokens[k:]} (t5: drop_nonnoise / drop_noise tokens with
    the first k positions as noise)."""
    return {"inputs": tokens[:k], "targets": tokens[k:]}


def split_tokens(dataset: tf.data.Dataset, max_tokens: int) -> tf.data.Dataset:
    """Each example's `targets` cut into consecutive segments of <= max_tokens (t5 split_tokens)."""
    def segments(features):
        tokens = features["targets"]                                   # [n]
        n = tf.size(tokens)
        count = (n + max_tokens - 1) // max_tokens
        padded = tf.pad(tokens, [[0, count * max_tokens - n]])
        lengths = tf.minimum(max_tokens, n - tf.range(count) * max_tokens)  # [count]
        rows = tf.RaggedTensor.from_tensor(tf.reshape(padded, [count, max_tokens]),
                                           lengths=lengths)           # [count, (<= max)]
        return tf.data.Dataset.from_tensor_slices({"targets": rows})
    return dataset.filter(lambda x: tf.size(x["targets"]) > 0).flat_map(segments)


def split_to_inputs_length(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
                           output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """t5's split_tokens_to_inputs_length: segments that fit the inputs feature (with its EOS)."""
    max_tokens = sequence_length["inputs"] - int(output_features["inputs"].add_eos)
    return split_tokens(dataset, max_tokens)


@seqio.map_over_dataset(num_seeds=1)
def random_prefix_split(features: Mapping[str, tf.Tensor], seed: tf.Tensor) -> dict:
    """Split `targets` at a uniformly drawn point into inputs (prefix) and targets (the rest)."""
    tokens = features["targets"]
    return prefix_split(tokens, num_prefix_tokens(tf.size(tokens), seed))


def _corpus_dataset(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
    del shuffle_files, seed  # one file; seqio shuffles the examples
    data_dir = sources.get_data_dir()
    if split != "train":
        raise ValueError(f"{TASK_NAME} has only a 'train' split (asked: {split!r}).")
    if not data_dir:
        raise ValueError(f"{TASK_NAME}: no DATA_DIR set; write the corpus with "
                         "t0_jax.data.corpus.write_corpus(DATA_DIR) and set DATA_DIR.")
    return tf.data.Dataset.from_tensor_slices({"text": corpus.read_corpus(data_dir)})


def register_corpus_task(num_documents: int) -> str:
    """Register `synth_corpus_prefix_lm` (idempotent). `num_documents`: the corpus size, which
    seqio reports as the number of input examples."""
    if TASK_NAME in seqio.TaskRegistry.names():
        return TASK_NAME
    source = seqio.FunctionDataSource(_corpus_dataset, splits=("train",),
                                      num_input_examples={"train": num_documents})
    preprocessors = [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
        seqio.preprocessors.tokenize,
        split_to_inputs_length,
        random_prefix_split,
        seqio.preprocessors.append_eos_after_trim,
    ]
    seqio.TaskRegistry.add(TASK_NAME, source, output_features=registry.output_features(),
                           preprocessors=preprocessors)
    return TASK_NAME
