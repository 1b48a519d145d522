"""`t0-tasks`: look at the registered tasks and mixtures, and at what a template makes of data.

    t0-tasks list [--mixture NAME] [--json] [--data_dir DIR]
        every mixture with its task count and total rate, or one mixture's tasks and rates;
        --json prints {mixture: n_tasks} or {task: rate} (sorted keys). Count-based rates of the
        eval mixtures print as null unless --data_dir is given (then they are counted).
    t0-tasks render --task NAME --split SPLIT [--data_dir DIR] [--n N] [--json] [--vocab_path P]
        the first N raw examples and what the task makes of them: inputs, targets, answer
        choices (JSON lines with --json); --vocab_path adds token counts (inputs without EOS,
        targets with EOS).

Also runs as `python -m t0_jax.bin.tasks`. Exit codes: 0 ok, 2 unknown name (with the closest
names), missing data/vocabulary or bad arguments: one line, no traceback (`--verbose` or
T0_DEBUG=1 shows it; see t0_jax/bin/cli.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from t0_jax.bin import cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t0-tasks", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="mixtures, or the tasks and rates of one")
    listing.add_argument("--mixture", help="a mixture name (default: list every mixture)")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.add_argument("--data_dir", help="count eval mixtures' rates from this data mirror")
    render = commands.add_parser("render", help="raw examples -> rendered task examples")
    render.add_argument("--task", required=True, help="a task name (see `t0-tasks list`)")
    render.add_argument("--split", required=True, help="train, validation or test")
    render.add_argument("--data_dir", help="local mirror root (default: $T0_DATA_DIR)")
    render.add_argument("--n", type=int, default=3, help="how many examples (default 3)")
    render.add_argument("--json", action="store_true", help="JSON lines, one per example")
    render.add_argument("--vocab_path", help="SentencePiece model: also print token counts")
    return parser


def _list(args) -> None:
    from t0_jax.data import mixtures, sources

    if args.data_dir:
        sources.set_data_dir(args.data_dir)
    if not args.mixture:
        sizes = {name: len(mixtures.mixture_rates(name)) for name in mixtures.list_mixtures()}
        if args.json:
            print(json.dumps(sizes, sort_keys=True, indent=1))
            return
        for name, size in sizes.items():
            rates = mixtures.mixture_rates(name).values()
            total = _number(sum(rates)) if None not in rates else "(counted at read time)"
            print(f"{name:32s} {size:4d} tasks  total rate {total}")
        _print_skipped()
        return
    rates = mixtures.mixture_rates(args.mixture, resolve=bool(args.data_dir))
    if args.json:
        print(json.dumps(rates, sort_keys=True, indent=1))
        return
    for task, rate in rates.items():
        print(f"{_number(rate):>9s}  {task}")
    known = [rate for rate in rates.values() if rate is not None]
    print(f"{len(rates)} tasks" + (f", total rate {_number(sum(known))}" if known else ""))
    description = mixtures.rate_description(args.mixture)
    if description and not args.data_dir:
        print(f"rates: {description}; pass --data_dir to count them")


def _print_skipped() -> None:
    """Catalogue datasets registration skipped (no templates): said here, not on every run."""
    from t0_jax.data import catalogue, registry

    skipped = sorted(catalogue.display_name(*key) for key in registry.missing_templates())
    if skipped:
        print(f"skipped (no templates): {', '.join(skipped)}")


def _number(rate) -> str:
    if rate is None:
        return "-"
    return f"{int(rate):,}" if float(rate).is_integer() else f"{rate:,.3f}"


def _render(args) -> None:
    from t0_jax.data import registry, vocabularies

    info = registry.task_info(args.task)  # UnknownNameError before any data is read
    vocab = vocabularies.get_vocabulary(args.vocab_path) if args.vocab_path else None
    examples = registry.load_split(args.task, args.split, args.data_dir)
    shown = range(min(max(args.n, 0), len(examples)))
    for row in registry.iter_rendered(args.task, args.split, args.data_dir, indices=shown):
        record = {"index": row.index, "raw": row.example, "dropped": row.rendered is None}
        if row.rendered is not None:
            record.update(inputs=row.rendered.inputs, targets=row.rendered.targets,
                          answer_choices=row.rendered.answer_choices)
            if vocab is not None:
                record["inputs_tokens"] = len(vocab.encode(row.rendered.inputs))
                record["targets_tokens"] = len(vocab.encode(row.rendered.targets)) + 1  # EOS
        print(json.dumps(record, ensure_ascii=False, default=str) if args.json
              else _as_text(record, info, args.split))


def _as_text(record: dict, info, split: str) -> str:
    where = f"{info.name} [{split} #{record['index']}]"
    lines = [f"=== {where}", "raw: " + json.dumps(record["raw"], ensure_ascii=False, default=str)]
    if record["dropped"]:
        lines.append("DROPPED: the template does not render exactly (inputs ||| targets)")
        return "\n".join(lines)
    lines += ["--- inputs:", record["inputs"], "--- targets:", record["targets"]]
    if record["answer_choices"] is not None:
        lines.append("--- answer_choices: " + json.dumps(record["answer_choices"],
                                                         ensure_ascii=False))
    if "inputs_tokens" in record:
        lines.append(f"--- tokens: inputs {record['inputs_tokens']}, "
                     f"targets {record['targets_tokens']} (with EOS)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (tests call it in-process with `argv`)."""
    return cli.run("t0-tasks", _main, argv)


def _main(argv: list) -> int:
    args = _parser().parse_args(argv)
    try:
        _list(args) if args.command == "list" else _render(args)
    except ValueError as error:  # e.g. a split the task does not have
        if cli.user_message(error) is None:
            raise cli.UserError(str(error)) from error
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
