"""Hugging Face T5 (transformers `T5ForConditionalGeneration`) ⇄ T5X-named parameters.

The mapping is pure renaming plus transposes:
- `nn.Linear` weights are [out, in]; our kernels are [in, out] → every Linear is transposed
  (q/k/v: [heads*d_kv, d_model] → [embed, joined_kv]; o: [d_model, heads*d_kv] → [joined_kv,
  embed]; wi_0/wi_1/wo likewise; lm_head [vocab, d_model] → logits_dense [embed, vocab]).
- `relative_attention_bias` lives only in block 0's first sublayer, [buckets, heads]; ours is
  [heads, buckets].
- `shared.weight` [vocab, d_model] is the token embedding as is. Older files also store
  `encoder.embed_tokens` / `decoder.embed_tokens` copies: they must equal `shared` and are
  dropped.
Neither side scales attention logits by 1/sqrt(d_kv) at run time, and T5 v1.1 (untied lm_head)
does not rescale the decoder output, so no value changes on the way.

SRC and DST may be local or on object storage (`gs://...`). safetensors and torch read local
files (memory-mapped), so a remote weight file is fetched once through `storage.local_copy`
(checked by size and checksum); a remote DST is written into a local temporary folder and then
uploaded file by file with `storage.copytree`.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Iterator

import numpy as np

from t0_jax import storage
from t0_jax.convert import layout
from t0_jax.convert.loaded import (LoadedCheckpoint, cast_flat, resolve_dtype, tensor_progress,
                                    tensor_progress_bar)
from t0_jax.model.config import T5Config

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
VOCAB_FILE = "spiece.model"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # the Hub's usual shard size

# Copies of `shared.weight` kept by older files, and a bias HF itself ignores on load.
EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def _attention_names(hf: str, ours: str) -> dict[str, str]:
    names = {f"{hf}.{a}.weight": f"{ours}/{b}/kernel"
             for a, b in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))}
    return names


def _mlp_names(hf: str, ours: str) -> dict[str, str]:
    return {f"{hf}.DenseReluDense.{n}.weight": f"{ours}/mlp/{n}/kernel" for n in ("wi_0", "wi_1", "wo")}


def name_map(config: T5Config) -> dict[str, str]:
    """HF tensor name → T5X path, for every parameter of `config` (unscanned)."""
    names = {"shared.weight": "token_embedder/embedding",
             "lm_head.weight": "decoder/logits_dense/kernel",
             "encoder.final_layer_norm.weight": "encoder/encoder_norm/scale",
             "decoder.final_layer_norm.weight": "decoder/decoder_norm/scale"}
    for stack in ("encoder", "decoder"):
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        names[bias] = f"{stack}/relpos_bias/rel_embedding"
    for i in range(config.num_encoder_layers):
        hf, ours = f"encoder.block.{i}.layer", f"encoder/layers_{i}"
        names.update(_attention_names(f"{hf}.0.SelfAttention", f"{ours}/attention"))
        names[f"{hf}.0.layer_norm.weight"] = f"{ours}/pre_attention_layer_norm/scale"
        names.update(_mlp_names(f"{hf}.1", ours))
        names[f"{hf}.1.layer_norm.weight"] = f"{ours}/pre_mlp_layer_norm/scale"
    for i in range(config.num_decoder_layers):
        hf, ours = f"decoder.block.{i}.layer", f"decoder/layers_{i}"
        names.update(_attention_names(f"{hf}.0.SelfAttention", f"{ours}/self_attention"))
        names[f"{hf}.0.layer_norm.weight"] = f"{ours}/pre_self_attention_layer_norm/scale"
        names.update(_attention_names(f"{hf}.1.EncDecAttention",
                                      f"{ours}/encoder_decoder_attention"))
        names[f"{hf}.1.layer_norm.weight"] = f"{ours}/pre_cross_attention_layer_norm/scale"
        names.update(_mlp_names(f"{hf}.2", ours))
        names[f"{hf}.2.layer_norm.weight"] = f"{ours}/pre_mlp_layer_norm/scale"
    return names


def transposed(path: str) -> bool:
    """Every 2-D parameter except the embedding is stored transposed by HF."""
    return path != "token_embedder/embedding" and not path.endswith("/scale")


# ----------------------------------------------------------------------------- config.json


def hf_config_to_t5(hf: dict[str, Any], source: str, base: T5Config | None = None) -> T5Config:
    """transformers' T5Config fields → ours; T5 v1.0 (ReLU, tied logits) is refused clearly."""
    if hf.get("model_type", "t5") not in ("t5", "mt5"):
        raise layout.CheckpointFormatError(
            f"{source}: model_type {hf.get('model_type')!r} is not a T5 encoder-decoder.")
    if hf.get("feed_forward_proj", "relu") != "gated-gelu":
        raise layout.CheckpointFormatError(
            f"{source}: feed_forward_proj is {hf.get('feed_forward_proj', 'relu')!r}; t0_jax "
            "implements T5 v1.1 (gated-gelu). Use a T5 v1.1 / LM-adapted model such as "
            "google/t5-xl-lm-adapt or bigscience/T0_3B.")
    # transformers < 5 writes tie_word_embeddings=false for v1.1; transformers 5 always writes
    # true and records the v1.1 behaviour as scale_decoder_outputs=false instead.
    if hf.get("tie_word_embeddings", True) is not False and hf.get("scale_decoder_outputs") is not False:
        raise layout.CheckpointFormatError(
            f"{source}: tie_word_embeddings is not false, i.e. a T5 v1.0 model whose logits "
            "reuse the token embedding (scaled by d_model**-0.5). t0_jax implements T5 v1.1 "
            "with a separate lm_head; use a T5 v1.1 / LM-adapted checkpoint.")
    base = T5Config() if base is None else base
    return base.replace(
        vocab_size=int(hf["vocab_size"]), emb_dim=int(hf["d_model"]),
        num_heads=int(hf["num_heads"]), head_dim=int(hf["d_kv"]), mlp_dim=int(hf["d_ff"]),
        num_encoder_layers=int(hf["num_layers"]),
        num_decoder_layers=int(hf.get("num_decoder_layers") or hf["num_layers"]),
        relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)), scan_layers=False)


def t5_to_hf_config(config: T5Config, dtype: str = "float32") -> dict[str, Any]:
    """Our config → a config.json that `T5ForConditionalGeneration.from_pretrained` reads."""
    return {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "vocab_size": config.vocab_size, "d_model": config.emb_dim, "d_kv": config.head_dim,
        "d_ff": config.mlp_dim, "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers, "num_decoder_layers": config.num_decoder_layers,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon, "dropout_rate": config.dropout_rate,
        "initializer_factor": 1.0, "feed_forward_proj": "gated-gelu",
        "is_encoder_decoder": True, "tie_word_embeddings": False, "use_cache": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
        "torch_dtype": dtype,
    }


# ----------------------------------------------------------------------------- reading tensors


class HFTensors:
    """Lazy access to the tensors of an HF directory: shapes first, arrays one at a time.

    Handles `model.safetensors`, sharded safetensors (`model.safetensors.index.json`) and
    `pytorch_model.bin` (also sharded), the last through torch.load(weights_only=True).
    """

    def __init__(self, src: str | os.PathLike):
        self.src = os.fspath(src)
        self._where: dict[str, Any] = {}  # name -> open handle it lives in
        present = set(storage.listdir(self.src))
        if SAFETENSORS_FILE in present or SAFETENSORS_INDEX in present:
            self._open_safetensors(self._files(SAFETENSORS_FILE, SAFETENSORS_INDEX))
        elif BIN_FILE in present or BIN_INDEX in present:
            self._open_bins(self._files(BIN_FILE, BIN_INDEX))
        else:
            raise layout.CheckpointFormatError(
                f"{self.src} has no weights: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, "
                f"{BIN_FILE} or {BIN_INDEX} beside {CONFIG_FILE}.")

    def _files(self, single: str, index: str) -> list[str]:
        """Local paths of the weight files (remote ones fetched once, verified)."""
        if storage.isfile(storage.join(self.src, single)):
            names = [single]
        else:
            weight_map = json.loads(storage.read_text(storage.join(self.src, index)))["weight_map"]
            names = sorted(set(weight_map.values()))
        return [storage.local_copy(storage.join(self.src, name)) for name in names]

    def _open_safetensors(self, files: list[str]) -> None:
        from safetensors import safe_open  # noqa: PLC0415

        for f in files:
            try:
                handle = safe_open(f, framework="numpy")
            except Exception as e:  # noqa: BLE001 - safetensors' own error type (Rust)
                raise layout.CheckpointFormatError(
                    f"{f} is not a readable safetensors file ({e}); it is truncated or "
                    "damaged: download or convert it again.") from e
            for name in handle.keys():
                self._where[name] = handle

    def _open_bins(self, files: list[str]) -> None:
        try:
            import torch  # noqa: PLC0415
        except ImportError as e:
            raise layout.CheckpointFormatError(
                f"{self.src} stores its weights as {BIN_FILE} (PyTorch pickle), which needs "
                "torch: `pip install torch` (CPU is enough), or convert the model to "
                "safetensors first.") from e
        for f in files:
            try:
                state = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialization cannot be memory-mapped
                state = torch.load(str(f), map_location="cpu", weights_only=True)
            for name in state:
                self._where[name] = state

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: self._shape(n) for n in self._where}

    def _shape(self, name: str) -> tuple[int, ...]:
        handle = self._where[name]
        if isinstance(handle, dict):
            return tuple(handle[name].shape)
        return tuple(handle.get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        handle = self._where[name]
        if isinstance(handle, dict):
            return _torch_to_numpy(handle[name])
        return handle.get_tensor(name)


def _torch_to_numpy(t: Any) -> np.ndarray:
    """torch → numpy without a float32 detour (bfloat16 bits are reinterpreted, not rounded)."""
    import torch  # noqa: PLC0415

    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(resolve_dtype("bfloat16"))
    return t.numpy()


def read_hf_config(src: str | os.PathLike) -> dict[str, Any]:
    path = storage.join(src, CONFIG_FILE)
    if not storage.isfile(path):
        raise layout.CheckpointFormatError(
            f"{src} is not a Hugging Face model directory: {CONFIG_FILE} is missing.")
    try:
        return json.loads(storage.read_text(path))
    except ValueError as e:
        raise layout.CheckpointFormatError(f"{path} is not valid JSON ({e}); restore the "
                                           "model's config.json.") from e


def _check_hf_names(found: dict[str, tuple[int, ...]], names: dict[str, str],
                    config: T5Config, source: str) -> None:
    """All differences at once, in HF names (the names the user sees in their files)."""
    if "lm_head.weight" not in found:
        raise layout.CheckpointFormatError(
            f"{source} has no lm_head.weight: its logits are tied to the embedding (T5 v1.0). "
            "t0_jax implements T5 v1.1 with untied logits.")
    ours = layout.expected_shapes(config)
    expected = {hf: (ours[p][::-1] if transposed(p) else ours[p]) for hf, p in names.items()}
    if "shared.weight" not in found and EMBEDDING_COPIES[0] in found:
        found = {("shared.weight" if n == EMBEDDING_COPIES[0] else n): s for n, s in found.items()}
    kept = {n: s for n, s in found.items() if n not in EMBEDDING_COPIES + IGNORED}
    layout.check_shapes(kept, config, source, expected=expected)


def hf_to_t0_flat(tensors: HFTensors, config: T5Config, source: str,
                  progress: bool = False) -> dict[str, np.ndarray]:
    """Read, check and rename every tensor; returns flat T5X paths → numpy arrays."""
    names = name_map(config)
    found = tensors.shapes()
    _check_hf_names(found, names, config, source)
    flat = {}
    for hf_name, path in tensor_progress(names.items(), progress, "reading HF tensors", len(names)):
        stored = hf_name if hf_name in found else EMBEDDING_COPIES[0]  # shared.weight fallback
        array = tensors.get(stored)
        flat[path] = np.ascontiguousarray(array.T) if transposed(path) else array
    for copy in EMBEDDING_COPIES:
        if copy in found and not np.array_equal(tensors.get(copy), flat["token_embedder/embedding"]):
            raise layout.CheckpointMismatchError(
                f"{source}: {copy} differs from shared.weight; T5 ties them, so this file is "
                "inconsistent. Re-save it with transformers' save_pretrained.")
    return flat


def hf_to_t0(src: str | os.PathLike, dtype: Any = None, progress: bool = False) -> LoadedCheckpoint:
    """Load an HF T5 v1.1 directory as T5X-named numpy params (+ its spiece.model if any)."""
    src = os.fspath(src)
    source = f"Hugging Face checkpoint {src}"
    config = hf_config_to_t5(read_hf_config(src), source)
    flat = cast_flat(hf_to_t0_flat(HFTensors(src), config, source, progress), dtype)
    vocab = storage.join(src, VOCAB_FILE)
    return LoadedCheckpoint(params=layout.unflatten(flat), config=config,
                            vocab_path=vocab if storage.isfile(vocab) else None, step=None,
                            source_format="huggingface")


# ----------------------------------------------------------------------------- writing


def t0_to_hf_tensors(flat: dict[str, Any], config: T5Config,
                     dtype: Any = "float32") -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(HF name, thunk → contiguous numpy array) per tensor; thunks keep peak memory at a shard."""
    target = resolve_dtype(dtype)
    for hf_name, path in name_map(config).items():
        def make(path=path):
            array = np.asarray(flat[path])
            array = array.T if transposed(path) else array
            return np.ascontiguousarray(array.astype(target, copy=False))
        yield hf_name, make


def t0_to_hf(params: dict[str, Any], config: T5Config, dst: str | os.PathLike,
             vocab_path: str | os.PathLike | None = None, dtype: Any = "float32",
             max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, progress: bool = False) -> str:
    """Write config.json + (sharded) model.safetensors (+ spiece.model) for transformers."""
    if config.scan_layers:  # HF stores one tensor per layer
        from t0_jax.model.stacking import unscan_params  # noqa: PLC0415

        params, config = unscan_params(params), config.replace(scan_layers=False)
    flat = layout.flatten(params)
    layout.check_shapes(layout.shapes_of(flat), config, "parameters to export")
    dst = os.fspath(dst)
    if storage.is_remote(dst):  # safetensors writes local files: stage them, then upload
        with tempfile.TemporaryDirectory(prefix="t0-convert-") as staging:
            _write_hf_dir(flat, config, staging, vocab_path, dtype, max_shard_bytes, progress)
            storage.copytree(staging, dst)
        return dst
    _write_hf_dir(flat, config, dst, vocab_path, dtype, max_shard_bytes, progress)
    return dst


def _write_hf_dir(flat, config: T5Config, dst: str, vocab_path, dtype, max_shard_bytes: int,
                  progress: bool) -> None:
    """config.json, the weights (sharded when large) and the vocabulary into local `dst`."""
    os.makedirs(dst, exist_ok=True)
    itemsize = resolve_dtype(dtype).itemsize
    items = list(t0_to_hf_tensors(flat, config, dtype))
    shards = _plan_shards(items, flat, config, itemsize, max_shard_bytes)
    _write_shards(shards, dst, progress)
    storage.write_text(os.path.join(dst, CONFIG_FILE), json.dumps(
        t5_to_hf_config(config, str(resolve_dtype(dtype))), indent=2, sort_keys=True) + "\n")
    if vocab_path is not None:
        storage.copy(vocab_path, os.path.join(dst, VOCAB_FILE))


def _plan_shards(items, flat, config, itemsize, max_shard_bytes):
    """Greedy split in name order; one shard (model.safetensors) when everything fits."""
    names = name_map(config)
    shards, current, size = [], [], 0
    for hf_name, make in items:
        nbytes = int(np.prod(np.shape(flat[names[hf_name]]), dtype=np.int64)) * itemsize
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((hf_name, make, nbytes))
        size += nbytes
    shards.append(current)
    return shards


def _write_shards(shards, dst: str, show_progress: bool) -> None:
    from safetensors.numpy import save_file  # noqa: PLC0415

    bar = tensor_progress_bar(show_progress, "writing HF tensors", sum(len(s) for s in shards))
    weight_map, total_bytes = {}, 0
    for k, shard in enumerate(shards):
        fname = SAFETENSORS_FILE if len(shards) == 1 else \
            f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for hf_name, make, nbytes in shard:
            tensors[hf_name] = make()
            weight_map[hf_name] = fname
            total_bytes += nbytes
            bar.update(1)
        save_file(tensors, os.path.join(dst, fname), metadata={"format": "pt"})
    bar.close()
    if len(shards) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        storage.write_text(os.path.join(dst, SAFETENSORS_INDEX),
                           json.dumps(index, indent=2) + "\n")
