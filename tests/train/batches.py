"""Deterministic synthetic packed batches for trainer tests (no TensorFlow, instant).

Batch k is a pure function of k, like the real pipeline is of its seed, so a source opened
with `skip` batches skipped continues exactly where an uninterrupted one would be. The
target repeats a slice of the input (learnable), and rows end in padding with loss weight 0.
"""
import numpy as np

VOCAB = 64
BATCH, INPUTS, TARGETS = 8, 16, 8
LENGTHS = {"inputs": INPUTS, "targets": TARGETS}


def synthetic_batch(k: int, rows: int = BATCH) -> dict:
    rng = np.random.default_rng(1000 + k)
    enc = rng.integers(2, VOCAB, (rows, INPUTS)).astype(np.int32)
    enc[:, -3:] = 0  # padding
    tgt = np.concatenate([enc[:, :TARGETS - 2], np.ones((rows, 1), np.int32),
                          np.zeros((rows, 1), np.int32)], axis=1)  # copy, EOS, pad
    dec_in = np.concatenate([np.zeros((rows, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_target_tokens": tgt,
            "decoder_input_tokens": dec_in,
            "decoder_loss_weights": (tgt > 0).astype(np.float32)}


class Source:
    """A BatchSource that records where it was (re)opened."""

    def __init__(self):
        self.opened_at = []

    def __call__(self, skip: int, shard_index: int, num_shards: int):
        self.opened_at.append(skip)
        rows = BATCH // num_shards

        def gen():
            k = skip
            while True:
                yield synthetic_batch(k, rows)
                k += 1
        return gen()


class StatefulSource(Source):
    """A BatchSource (open/save_state/restore_state) whose saved state is its position, as a
    tf.data iterator checkpoint is; records every batch index it produces."""

    def __init__(self):
        super().__init__()
        self.produced = []
        self.restored = []      # positions open() continued from a restored state
        self._position = 0
        self._pending_restore = None

    def open(self, batches_consumed, shard_index, num_shards):
        self.opened_at.append(batches_consumed)
        if self._pending_restore is not None:
            assert self._pending_restore == batches_consumed
            self.restored.append(batches_consumed)
            self._pending_restore = None
        self._position = batches_consumed
        rows = BATCH // num_shards

        def gen():
            while True:
                k = self._position
                self.produced.append(k)
                self._position += 1
                yield synthetic_batch(k, rows)
        return gen()

    def save_state(self, directory, step):
        with open(f"{directory}/position.txt", "w") as f:
            f.write(str(self._position))
        return True

    def restore_state(self, directory, step):
        try:
            with open(f"{directory}/position.txt") as f:
                self._pending_restore = int(f.read())
        except OSError:
            return False
        return True
