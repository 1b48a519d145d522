"""`t0-convert`: move checkpoints between T5X, Hugging Face and our Orbax format.

    t0-convert hf-to-t0  SRC DST [--dtype D] [--vocab FILE]
        a transformers T5 v1.1 directory (config.json + model.safetensors, sharded safetensors
        or pytorch_model.bin) → our format; its spiece.model is carried along.
    t0-convert t5x-to-t0 SRC DST [--preset NAME | --config JSON] [--with_optimizer_state]
                                 [--dtype D] [--vocab FILE]
        a T5X checkpoint (msgpack file, or a checkpoint_<step>/ directory in tensorstore form)
        → our format. The model size is read off the shapes unless --preset/--config says it;
        the step is always kept, Adafactor's v_row/v_col/v only with --with_optimizer_state.
    t0-convert t0-to-hf  SRC DST [--dtype float32|bfloat16|float16] [--max_shard_size 5GB]
        any readable checkpoint (ours, a trainer step or run directory, T5X, HF) → a directory
        that transformers.T5ForConditionalGeneration.from_pretrained loads.

SRC and DST may be local paths or `gs://` (any fsspec scheme; see t0_jax/storage).
Also runs as `python -m t0_jax.bin.convert`. Exit codes: 0 ok, 2 the checkpoint cannot be read
or does not fit its config (the message lists every difference), DST exists, or bad arguments:
one message, no traceback (`--verbose` or T0_DEBUG=1 shows it; see t0_jax/bin/cli.py).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Optional, Sequence

from t0_jax import storage
from t0_jax.bin import cli

DTYPES = ("float32", "bfloat16", "float16")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t0-convert", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"hf-to-t0": "Hugging Face T5 directory -> t0_jax Orbax directory",
             "t5x-to-t0": "T5X checkpoint (msgpack or tensorstore) -> t0_jax Orbax directory",
             "t0-to-hf": "any readable checkpoint -> Hugging Face T5 directory"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("src", help="checkpoint to read")
        sub.add_argument("dst", help="directory to write (must not exist unless --overwrite)")
        sub.add_argument("--dtype", choices=DTYPES,
                         default="float32" if name == "t0-to-hf" else None,
                         help="cast parameters (default: " +
                         ("float32)" if name == "t0-to-hf" else "keep the stored dtype)"))
        sub.add_argument("--vocab", help="SentencePiece .model to carry into DST "
                         "(default: the one found beside SRC, if any)")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing DST")
        sub.add_argument("--preset", help="model preset (tiny…xxl) the checkpoint must match; "
                         "for T5X it replaces the config read off the shapes")
        sub.add_argument("--config", help="JSON file with T5Config fields (or a model_config "
                         "item with a 'config' key); like --preset")
    commands.choices["t5x-to-t0"].add_argument(
        "--with_optimizer_state", action="store_true",
        help="also keep Adafactor's v_row/v_col/v (T5X semantics) for resuming")
    commands.choices["t0-to-hf"].add_argument(
        "--max_shard_size", default="5GB", help="split model.safetensors above this (e.g. 2GB)")
    return parser


def parse_size(text: str) -> int:
    """'5GB' / '500MB' / '123' → bytes (decimal units, as the Hugging Face Hub uses)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*", text.upper())
    if m is None:
        raise ValueError(f"--max_shard_size {text!r} is not a size like 5GB, 500MB or 1000000.")
    scale = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
             "T": 1e12, "TB": 1e12}[m.group(2)]
    return int(float(m.group(1)) * scale)


def _requested_config(args):
    from t0_jax.model.config import T5Config, get_config

    if args.preset and args.config:
        raise ValueError("give --preset or --config, not both.")
    if args.preset:
        return get_config(args.preset)
    if args.config:
        data = json.loads(storage.read_text(args.config))
        return T5Config.from_dict(data["config"] if "config" in data else data)
    return None


def _occupied(dst: str) -> bool:
    return storage.isfile(dst) or bool(storage.listdir(dst))


def _check_dst(dst: str, overwrite: bool) -> None:
    """Refuse to write into something that exists, before spending time on the read."""
    if _occupied(dst) and not overwrite:
        raise FileExistsError(f"{dst} already exists; pick a new directory or pass "
                              "--overwrite to replace it.")


def _clear_dst(dst: str) -> None:
    """--overwrite: removed only once SRC has been read successfully."""
    if storage.isfile(dst):
        storage.remove(dst)
    else:
        storage.rmtree(dst)


def run(args) -> str:
    """Load SRC (format checked against the subcommand), write DST; returns the summary."""
    from t0_jax.convert import auto, hf, t0_format

    fmt, _ = auto.resolve(args.src)
    wanted = {"hf-to-t0": ("huggingface",), "t5x-to-t0": ("t5x",)}.get(args.command, ())
    if wanted and fmt not in wanted:
        raise ValueError(f"{args.src} looks like a {fmt} checkpoint, not {wanted[0]}; use the "
                         f"matching subcommand (`t0-convert --help`).")
    dst = args.dst
    _check_dst(dst, args.overwrite)
    loaded = auto.load_checkpoint(args.src, args.dtype, config=_requested_config(args),
                                  with_optimizer_state=getattr(args, "with_optimizer_state", False),
                                  progress=True)
    print(f"read {args.src}\n  {loaded.summary()}", flush=True)
    _clear_dst(dst)
    vocab = args.vocab or loaded.vocab_path
    if args.command == "t0-to-hf":
        hf.t0_to_hf(loaded.params, loaded.config, dst, vocab_path=vocab, dtype=args.dtype,
                    max_shard_bytes=parse_size(args.max_shard_size), progress=True)
    else:
        t0_format.save_checkpoint(dst, loaded.params, loaded.config, vocab_path=vocab,
                                  step=loaded.step, opt_state_t5x=loaded.opt_state)
    note = "" if vocab else " (no vocabulary: pass --vocab to carry a spiece.model along)"
    summary = f"wrote {dst}{note}"
    print(summary, flush=True)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run("t0-convert", _main, argv)


def _main(argv: list) -> int:
    args = _parser().parse_args(argv)
    try:
        run(args)
    except ValueError as error:  # bad --preset/--config/--max_shard_size, wrong subcommand
        if cli.user_message(error) is None:
            raise cli.UserError(f"{args.command}: {error}") from error
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
