"""The training input's saved state (t0_jax.data.pipeline.TrainIterator, used by
t0_jax.bin.train_data.PipelineSource): a checkpointable tf.data stream resumes exactly from its
saved state; one with a Python generator refuses to save (the trainer then replays)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from t0_jax.data import pipeline  # noqa: E402


def _dataset():
    ds = tf.data.Dataset.range(1000).shuffle(50, seed=3).map(lambda x: {"x": x * 2})
    return ds.batch(4, drop_remainder=True).repeat()


def test_restored_iterator_continues_the_stream(tmp_path):
    it = pipeline.TrainIterator(_dataset())
    [next(it) for _ in range(7)]
    it.save(str(tmp_path))
    want = [next(it)["x"] for _ in range(5)]
    restored = pipeline.TrainIterator.restored(_dataset(), str(tmp_path), 7)
    got = [next(restored)["x"] for _ in range(5)]
    assert restored.position == 12
    np.testing.assert_array_equal(np.stack(want), np.stack(got))
    replayed = pipeline.TrainIterator(_dataset(), 7)  # the fallback reaches the same batches
    np.testing.assert_array_equal(np.stack(want), np.stack([next(replayed)["x"]
                                                             for _ in range(5)]))


def test_generator_stage_cannot_be_saved(tmp_path):
    def gen():
        yield from range(100)

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec((), tf.int64))
    it = pipeline.TrainIterator(ds.map(lambda x: {"x": x}).batch(2))
    next(it)
    with pytest.raises(pipeline.InputStateError, match="GeneratorDataset|PyFunc"):
        it.save(str(tmp_path))
