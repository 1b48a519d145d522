"""Training metrics: FLOPs/MFU accounting and the writers (TensorBoard events + JSONL).

FLOPs per packed sequence (REFERENCE.md §7), counted on the padded shapes the device computes:
    6 · (N_enc · L_in + N_dec · L_tgt)                       weight matmuls, forward + backward
  + 3 · 4 · joined_kv · (n_enc · L_in² + n_dec · (L_tgt² + L_tgt · L_in))   attention scores
where N_enc / N_dec are the encoder / decoder matmul parameters (the decoder's includes the
logits projection; the embedding lookup is a gather, not a matmul) and n_enc / n_dec the layer
counts. 6·N·(L_in+L_tgt) would overcount ~2×: each token only passes through its own stack.

TensorBoard events are written with tensorboard's RecordWriter: the usual writers
(`tf.summary`, `flax.metrics.tensorboard`, tensorboard's EventFileWriter through
`tensorboard.compat.tf`) import TensorFlow, which only t0_jax/data may import.

Where the files go (`AppendOnlyFile`): a local MODEL_DIR gets plain appended files, as before. On
object storage (`gs://`) there is no append, so the writer keeps the file's bytes in memory and
uploads the whole object at every flush (one PUT per log line, through `t0_jax.storage`):
readers — TensorBoard pointed at the bucket, `gcloud storage cat` — always see a whole file, and
a killed run loses at most the lines since its last flush. metrics.jsonl is read back first, so
a resumed run keeps the earlier lines as a local append would; the event file is new per run
(its name carries time, host and pid). Cost: the whole file per flush, ≈ 300 bytes per logged
step (3 MB after 10,000 log lines), small beside a training step.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Mapping, Optional

import jax
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from t0_jax import storage

# Dense bf16 peak FLOP/s per device (vendor datasheets), matched against `device_kind`.
PEAK_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("v5p", 459e12),
              ("v5 lite", 197e12), ("v5e", 197e12), ("v4", 275e12))


def matmul_params(abstract_params) -> tuple[int, int]:
    """(N_enc, N_dec): matmul parameters per stack (kernels only; norms and relpos are tiny)."""
    enc = dec = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        names = [str(getattr(k, "key", k)) for k in path]
        if names[-1] != "kernel":
            continue
        size = int(np.prod(leaf.shape))
        if names[0] == "encoder":
            enc += size
        elif names[0] == "decoder":
            dec += size
    return enc, dec


def flops_per_sequence(abstract_params, config, input_length: int, target_length: int) -> float:
    """Training FLOPs (forward + backward) of one [input_length, target_length] sequence."""
    n_enc, n_dec = matmul_params(abstract_params)
    dense = 6.0 * (n_enc * input_length + n_dec * target_length)
    j = config.joined_kv
    attention = 3.0 * 4.0 * j * (
        config.num_encoder_layers * input_length ** 2
        + config.num_decoder_layers * (target_length ** 2 + target_length * input_length))
    return dense + attention


def peak_flops_per_device(device_kind: Optional[str] = None) -> Optional[float]:
    """Known bf16 peak of the local device kind, or None (MFU is then not reported)."""
    kind = device_kind if device_kind is not None else jax.local_devices()[0].device_kind
    for key, value in PEAK_FLOPS:
        if key.lower() in kind.lower():
            return value
    return None


def host_token_counts(batch: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(non-pad input tokens, non-pad target tokens) of a host batch (token id 0 is pad)."""
    inputs = int(np.count_nonzero(batch["encoder_input_tokens"]))
    targets = int(np.count_nonzero(batch["decoder_target_tokens"]))
    return inputs, targets


def summarize(sums: Mapping[str, float], *, seconds: float, steps: int, tokens: int,
              step_flops: float, num_devices: int, peak_flops: Optional[float]) -> dict:
    """Per-interval scalars from summed step metrics (`sums` over `steps` steps)."""
    weight = max(sums["weight_sum"], 1.0)
    out = {"loss": sums["loss"] / steps,
           "cross_entropy": sums["cross_entropy_sum"] / weight,
           "z_loss": sums["z_loss_sum"] / weight,
           "accuracy": sums["correct_sum"] / weight,
           "grad_norm": sums["grad_norm"] / steps,
           "learning_rate": sums["learning_rate"] / steps,
           "steps_per_s": steps / seconds,
           "tokens_per_s": tokens / seconds,
           "target_tokens_per_s": sums["weight_sum"] / seconds}
    if peak_flops:
        out["mfu"] = step_flops * steps / seconds / (peak_flops * num_devices)
    return out


class AppendOnlyFile:
    """A file that only grows, on a disk (appended in place) or on object storage (kept in
    memory and uploaded whole at each `flush`; see the module docstring)."""

    def __init__(self, path: str, keep_existing: bool = True):
        self.path = path
        self._local = None if storage.is_remote(path) else storage.open(path, "ab")
        self._buffer = bytearray()
        if self._local is None and keep_existing and storage.exists(path):
            self._buffer += storage.read_bytes(path)
        self._dirty = True

    def write(self, data: bytes) -> None:
        if self._local is not None:
            self._local.write(data)
        else:
            self._buffer += data
            self._dirty = True

    def flush(self) -> None:
        if self._local is not None:
            self._local.flush()
        elif self._dirty:
            storage.write_bytes(self.path, bytes(self._buffer))
            self._dirty = False

    def close(self) -> None:
        self.flush()
        if self._local is not None:
            self._local.close()


class MetricsWriter:
    """Scalars → `MODEL_DIR/train/events.out.tfevents.*` and `MODEL_DIR/metrics.jsonl`.

    Only host 0 writes (`enabled=False` elsewhere); every call is a no-op then.
    """

    def __init__(self, model_dir: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._event_file = AppendOnlyFile(storage.join(model_dir, "train", name),
                                          keep_existing=False)
        self._events = RecordWriter(self._event_file)
        self._write_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self._jsonl = AppendOnlyFile(storage.join(model_dir, "metrics.jsonl"))

    def _write_event(self, event) -> None:
        self._events.write(event.SerializeToString())

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                  for k, v in sorted(scalars.items())]
        self._write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                          summary=summary_pb2.Summary(value=values)))
        line = json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
        self._jsonl.write((line + "\n").encode("utf-8"))
        self._events.flush()
        self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._events.close()
            self._jsonl.close()
