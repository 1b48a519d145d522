"""T5X-style command lines shared by the gin mains (`t0-train`, `t0-score`).

`--gin_file` (repeatable), `--gin_bindings='NAME = value'`, `--gin.NAME=value` (values that are
not gin literals are taken as strings, so paths need no quotes), `--gin_search_paths=a,b`,
`--seqio_additional_cache_dirs=a,b` (T5X's flag: binds `CACHE_DIRS = ['a', 'b']`).
Files resolve against the given search paths, then the repository root and the shipped gin/.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
from typing import Sequence

import gin

from t0_jax import resources

# T5X's flag for seqio cache dirs (t0-cache output, a P3 download): sets the gin macro CACHE_DIRS.
CACHE_DIRS_FLAG = "--seqio_additional_cache_dirs"
_VALUED = ("--gin_file", "--gin_bindings", "--gin_search_paths", CACHE_DIRS_FLAG)


class UsageError(ValueError):
    """Bad flags or an incomplete gin configuration: printed with the usage, exit status 2."""


@dataclasses.dataclass
class GinFlags:
    gin_files: list
    gin_bindings: list
    gin_search_paths: list
    switches: set = dataclasses.field(default_factory=set)  # e.g. {"dry_run"}
    options: dict = dataclasses.field(default_factory=dict)  # e.g. {"topology": "v4-128"}

    def __getattr__(self, name):  # flags.dry_run → whether --dry_run was given
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self.__dict__.get("options", {}):
            return self.__dict__["options"][name]
        return name in self.__dict__.get("switches", set())


def gin_value(value: str) -> str:
    """Gin syntax (literals, %MACRO, @ref, containers) as given; anything else as a string."""
    stripped = value.strip()
    if stripped[:1] in ("%", "@", "(", "[", "{", "'", '"'):
        return stripped
    try:
        ast.literal_eval(stripped)
        return stripped
    except (ValueError, SyntaxError):
        return repr(value)


def parse_flags(argv: Sequence[str], usage: str, example_file: str,
                switches: Sequence[str] = (), options: Sequence[str] = ()) -> GinFlags:
    """Split argv into gin files, bindings, search paths, boolean `--switches` and valued
    `--options=value` (an option not given reads as False)."""
    flags = GinFlags([], [], [])
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            raise UsageError(usage)
        name, eq, value = arg.partition("=")
        if not eq and (name in _VALUED or name[2:] in options) and args:
            value, eq = args.pop(0), "="
        if name == "--gin_file" and eq:
            flags.gin_files.append(value)
        elif name == "--gin_bindings" and eq:
            flags.gin_bindings.append(value)
        elif name == "--gin_search_paths" and eq:
            flags.gin_search_paths += [p for p in value.split(",") if p]
        elif name.startswith("--gin.") and eq:
            flags.gin_bindings.append(f"{name[len('--gin.'):]} = {gin_value(value)}")
        elif name == CACHE_DIRS_FLAG and eq:
            flags.gin_bindings.append(f"CACHE_DIRS = {[p for p in value.split(',') if p]!r}")
        elif name[2:] in options and name.startswith("--") and eq:
            flags.options[name[2:]] = value
        elif name[2:] in switches and name.startswith("--") and not eq:
            flags.switches.add(name[2:])
        else:
            raise UsageError(f"unknown argument {arg!r}.\n{usage}")
    if not flags.gin_files:
        raise UsageError(f"give at least one --gin_file (e.g. {example_file}).\n{usage}")
    return flags


class _QuietGinSearch(logging.Filter):
    """gin logs an ERROR for every search-path prefix a file is NOT under; only the final
    'not found anywhere' (an IOError we report) matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


def parse_gin(flags: GinFlags) -> None:
    """Fresh gin state from the files and bindings (not finalized: mains check REQUIRED)."""
    root = logging.getLogger()
    if not any(isinstance(f, _QuietGinSearch) for f in root.filters):
        root.addFilter(_QuietGinSearch())
    gin.clear_config()
    for path in flags.gin_search_paths + [str(resources.gin_dir().parent),
                                          str(resources.gin_dir())]:
        gin.add_config_file_search_path(path)
    try:
        gin.parse_config_files_and_bindings(flags.gin_files, flags.gin_bindings,
                                            finalize_config=False)
    except (IOError, ValueError) as e:
        raise UsageError(f"gin configuration error: {e}") from e
