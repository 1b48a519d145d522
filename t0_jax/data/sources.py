"""Where raw examples come from: the JSONL mirror, then the Hugging Face Hub, then TFDS.

Mirror layout (the offline source, what `t0-data` writes, and what the tests use):
    DATA_DIR/<hf_name>[/<subset>]/<split>.jsonl      one JSON example per line
with the field names and value types of the Hugging Face dataset the promptsource templates
were written for (e.g. `super_glue/rte/validation.jsonl`, `anli/dev_r1.jsonl`: ANLI's rounds
are just split names). DATA_DIR is the `data_dir` argument, else `set_data_dir()`, else the
environment variable `T0_DATA_DIR`. It may be remote (`gs://bucket/mirror`, any scheme of
`t0_jax.storage`): a remote mirror file is fetched whole, once, by `storage.local_copy` (checked
against the store's size and checksum) into `$T0_STORAGE_CACHE` when set (kept, shared by the
processes of a host), else into a temporary folder of the process that is removed at exit (a run
on object storage leaves nothing on the host's disk; each render worker fetches its own copy),
keyed by the object's generation so a rewritten object is fetched again; the copy's line index
sits beside it. Every process then reads its copy by offset as below. A copy rather than sequential reads, because readers seek (shards, resumed
streams, random access) and a ranged read per example would be one round trip each.

When a split is not in the mirror, the Hub fallback reads it through the same table as `t0-data`
(`tasks/hub_sources.yaml`, `t0_jax/data/hub.py`: current repository, revision and files, then
the renames to the 2021 fields), then TFDS.

Streaming, not loading: `open_split` returns a `SplitReader` (len, `reader[i]`, `read(indices)`,
`shard(k, n)`) and no source ever holds a whole split in Python objects, so host memory stays
flat as datasets grow:
    mirror   a line index (the byte offset where each non-blank line starts, int64, plus the
             file size) is built once per file, saved as `.npy` under the index cache
             (`$T0_INDEX_CACHE_DIR`, default `~/.cache/t0_jax/line_index`, keyed by path, size
             and mtime) and memory-mapped; example i is one `pread` and one `json.loads`.
    HF       the memory-mapped Arrow table `datasets` opened from the Hub's parquet files,
             indexed per example and converted to the 2021 fields by the table row.
    TFDS     `tfds.data_source`: TFDS's own random-access reader (ArrayRecord-prepared data).
A `SplitReader` can be reopened from its `spec` (a small picklable record), which is how render
worker processes get their own reader without data crossing a process boundary.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Iterable, Iterator, Optional

import numpy as np

from t0_jax import storage

DATA_DIR_ENV = "T0_DATA_DIR"
INDEX_CACHE_ENV = "T0_INDEX_CACHE_DIR"
COPY_CACHE_ENV = "T0_STORAGE_CACHE"

# Datasets whose TFDS builder yields the same fields as the Hugging Face dataset the templates
# were written for (strings come back as bytes and are decoded). Extend with care.
TFDS_BUILDERS = {
    **{("glue", s): f"glue/{s}" for s in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli",
                                          "rte", "wnli")},
    **{("super_glue", s): f"super_glue/{s}" for s in ("boolq", "cb", "copa", "multirc", "rte",
                                                      "wic", "wsc.fixed")},
}

# Datasets that cannot be downloaded automatically; the message says how to get them.
MANUAL_DOWNLOAD = {
    "story_cloze": ("StoryCloze is distributed by manual download only: request it at "
                    "https://cs.rochester.edu/nlp/rocstories/ (the 2016 release), then run "
                    "`t0-data --datasets story_cloze/2016 --story_cloze_dir <its CSV folder> "
                    "--data_dir DATA_DIR`, which writes the Hugging Face `story_cloze/2016` "
                    "fields (input_sentence_1..4, sentence_quiz1, sentence_quiz2, "
                    "answer_right_ending, story_id) as JSONL"),
}

_SCAN_BLOCK = 1 << 20  # bytes read at a time while indexing lines: bounds the scan's memory
_JSON_SPACE = np.frombuffer(b" \t\r\n", np.uint8)

_data_dir: Optional[str] = None
_readers: dict = {}  # one reader per file version / HF split / TFDS split, shared by templates


class DataNotFoundError(FileNotFoundError):
    """No source could provide a split; the message lists every place that was tried."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class BadExampleError(ValueError):
    """A mirror line that is not one JSON object (the message names file and line number)."""


def set_data_dir(path) -> None:
    """Use `path` as the mirror root for later calls that pass no `data_dir` (None unsets it)."""
    global _data_dir
    _data_dir = None if path is None else os.fspath(path)


def get_data_dir(data_dir=None) -> Optional[str]:
    """The mirror root in effect: argument, else `set_data_dir()`, else `$T0_DATA_DIR`."""
    for candidate in (data_dir, _data_dir, os.environ.get(DATA_DIR_ENV)):
        if candidate:
            return os.fspath(candidate)
    return None


def mirror_path(data_dir, hf_name: str, subset: Optional[str], split: str) -> pathlib.Path:
    """`data_dir/<hf_name>[/<subset>]/<split>.jsonl` for a LOCAL data_dir (see `mirror_file`)."""
    folder = pathlib.Path(data_dir, *hf_name.split("/"))
    if subset:
        folder = folder / subset
    return folder / f"{split}.jsonl"


def mirror_file(data_dir, hf_name: str, subset: Optional[str], split: str) -> str:
    """`data_dir/<hf_name>[/<subset>]/<split>.jsonl` as a string, local or remote (gs://...)."""
    parts = [*hf_name.split("/"), *([subset] if subset else []), f"{split}.jsonl"]
    return storage.join(os.fspath(data_dir), *parts)


def has_mirror_split(data_dir, hf_name: str, subset: Optional[str], split: str) -> bool:
    """Whether the mirror at `data_dir` (local or remote) holds that split's file."""
    return storage.isfile(mirror_file(data_dir, hf_name, subset, split))


def clear_cache() -> None:
    """Forget open readers (they are reopened, and mirror files re-stat'ed, on the next call)."""
    _readers.clear()


# ----------------------------------------------------------------------------- readers


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """What names one split: enough for another process to reopen the same reader."""

    hf_name: str
    subset: Optional[str]
    split: str
    data_dir: Optional[str]  # the mirror root resolved when the split was first opened


class SplitReader:
    """Random access to the examples of one split; subclasses implement `_example(i)`."""

    spec: SplitSpec
    description: str  # for messages: the file or dataset read

    def __len__(self) -> int:
        raise NotImplementedError

    def _example(self, index: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, index) -> dict:
        """Example `index` (0 <= index < len) as a fresh dict with Hugging Face field types."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} is out of range for {self.description} "
                             f"({len(self)} examples)")
        return self._example(index)

    def read(self, indices: Iterable[int]) -> Iterator[tuple]:
        """(index, example) for each index in `indices`, in that order."""
        for index in indices:
            yield int(index), self[index]

    def __iter__(self) -> Iterator[dict]:
        return (example for _, example in self.read(range(len(self))))

    def shard(self, shard_index: int, num_shards: int) -> "SplitShard":
        """This host's examples: i with i % num_shards == shard_index, under their global index."""
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index must be in [0, num_shards) with num_shards >= 1; got "
                             f"shard_index={shard_index}, num_shards={num_shards}.")
        return SplitShard(self, range(shard_index, len(self), num_shards))


@dataclasses.dataclass(frozen=True)
class SplitShard:
    """A host's share of a split; `indices` are global (the example's index in the full split).

    Interleaving keeps shards within one example of each other's size, needs only the count,
    and reads nothing outside the shard.
    """

    reader: SplitReader
    indices: range

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple]:
        return self.reader.read(self.indices)


class MirrorReader(SplitReader):
    """One JSONL mirror file read by byte offset (see the module docstring)."""

    def __init__(self, path: pathlib.Path, spec: SplitSpec, description: Optional[str] = None,
                 index_dir: Optional[pathlib.Path] = None):
        # `path` is the local file read (a remote mirror's verified copy); `description` names
        # the mirror file the user wrote, for messages.
        self.path, self.spec, self.description = path, spec, description or str(path)
        self._starts = line_index(path, index_dir)  # [examples + 1] int64: line starts, then the file size
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return len(self._starts) - 1

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # never share a descriptor's offset state across processes
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _example(self, index: int) -> dict:
        start, end = int(self._starts[index]), int(self._starts[index + 1])
        raw = os.pread(self._descriptor(), end - start, start)  # the line and any blank ones after
        try:
            example = json.loads(raw)
        except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
            raise self._bad_line(start, f"is not valid JSON ({getattr(error, 'msg', error)})") \
                from error
        if not isinstance(example, dict):
            raise self._bad_line(start, f"is a JSON {type(example).__name__}, not an object")
        return example

    def _bad_line(self, start: int, problem: str) -> BadExampleError:
        line = _line_number(self.path, start)
        return BadExampleError(f"{self.description}:{line} {problem}; each line of a mirror file "
                               "must be one JSON object with the Hugging Face fields. Fix or "
                               "remove that line.")

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except (OSError, TypeError):  # already closed, or interpreter shutdown
                pass


class HuggingFaceReader(SplitReader):
    """A `datasets.Dataset` (memory-mapped Arrow table), read one example at a time and
    converted to the 2021 fields by `convert` (the hub table row's renames and casts)."""

    def __init__(self, dataset, spec: SplitSpec, convert=dict, where: str = ""):
        self.spec, self._dataset, self._convert = spec, dataset, convert
        self.description = f"Hugging Face dataset {_display(spec.hf_name, spec.subset)} " \
                           f"split '{spec.split}'" + (f" ({where})" if where else "")

    def __len__(self) -> int:
        return len(self._dataset)

    def _example(self, index: int) -> dict:
        return self._convert(dict(self._dataset[index]))


class TfdsReader(SplitReader):
    """A TFDS random-access data source; strings and arrays come back as Python values."""

    def __init__(self, source, spec: SplitSpec, builder: str):
        self.spec, self._source = spec, source
        self.description = f"TFDS `{builder}` split '{spec.split}'"

    def __len__(self) -> int:
        return len(self._source)

    def _example(self, index: int) -> dict:
        return _decode(self._source[index])


def open_split(hf_name: str, subset: Optional[str], split: str, data_dir=None) -> SplitReader:
    """A reader for one split, from the first source that has it (DataNotFoundError if none)."""
    root = get_data_dir(data_dir)
    spec = SplitSpec(hf_name, subset, split, root)
    tried = []
    if root is not None:
        path = mirror_file(root, hf_name, subset, split)
        if has_mirror_split(root, hf_name, subset, split):
            return _open_mirror(path, spec)
        tried.append(f"{'mirror' if storage.is_remote(root) else 'local mirror'}: {path} "
                     "(not found)")
    else:
        tried.append(f"local mirror: no data dir (pass data_dir, call set_data_dir() or set "
                     f"${DATA_DIR_ENV})")
    for opener in (_open_hf, _open_tfds):
        reader = opener(spec, tried)
        if reader is not None:
            return reader
    raise DataNotFoundError(_not_found_message(hf_name, subset, split, root, tried))


def reopen(spec: SplitSpec) -> SplitReader:
    """The reader `spec` names (in this process; cached like `open_split`)."""
    return open_split(spec.hf_name, spec.subset, spec.split, spec.data_dir)


def _open_mirror(path: str, spec: SplitSpec) -> MirrorReader:
    """A reader of a mirror file; a remote one is read from its verified local copy."""
    remote = storage.is_remote(path)
    local = pathlib.Path(storage.local_copy(path, cache_dir=copy_cache_dir()) if remote else path)
    index_dir = local.parent if remote else None  # a copy's index lives (and goes) with it
    stat = local.stat()
    key = ("mirror", path if remote else str(local.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _readers:
        for stale in [k for k in _readers if k[:2] == key[:2]]:  # the file changed
            del _readers[stale]
        _readers[key] = MirrorReader(local, spec, description=path, index_dir=index_dir)
    return _readers[key]


def copy_cache_dir() -> Optional[str]:
    """Where local copies of remote mirror files are kept: `$T0_STORAGE_CACHE`, else None (a
    temporary folder of this process, removed at exit: see `storage.local_copy`)."""
    return os.environ.get(COPY_CACHE_ENV) or None


def _open_hf(spec: SplitSpec, tried) -> Optional[SplitReader]:
    """The split from the Hub as it is now, through tasks/hub_sources.yaml (see data/hub.py)."""
    from t0_jax.data import hub  # noqa: PLC0415 - yaml only; datasets is imported on use

    source = hub.source_for(spec.hf_name, spec.subset)
    if source is None:
        tried.append(f"Hugging Face Hub: {_display(spec.hf_name, spec.subset)} has no row in "
                     f"{hub.table_path()}")
        return None
    if source.manual:
        tried.append(f"Hugging Face Hub: {source.display} is not on the Hub ({source.manual} "
                     "download)")
        return None
    try:
        import datasets  # noqa: F401, PLC0415 - pinned in setup.py; absent in a trimmed install
    except ImportError:
        tried.append("Hugging Face `datasets`: not installed (pip install datasets)")
        return None
    key = ("hf", source.repo, source.revision, source.files, spec.split)
    if key not in _readers:
        row = f"tasks/hub_sources.yaml row '{source.display}'" + (
            "" if source.verified else ", an unverified row")
        try:
            fetched = hub.load_split(source, spec.split)
        except Exception as error:  # offline and not cached, moved repository, network...
            tried.append(f"Hugging Face Hub {source.where} ({row}): {type(error).__name__}: "
                         f"{error}")
            return None
        _readers[key] = HuggingFaceReader(fetched.dataset, spec, source.convert,
                                          f"{source.where} commit {fetched.commit[:12]}")
    return _readers[key]


def _open_tfds(spec: SplitSpec, tried) -> Optional[SplitReader]:
    builder = TFDS_BUILDERS.get((spec.hf_name, spec.subset))
    if builder is None:
        tried.append(f"TFDS: no builder known to match the Hugging Face fields of "
                     f"{_display(spec.hf_name, spec.subset)}")
        return None
    tfds_dir = pathlib.Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()
    if not (tfds_dir / builder).is_dir():  # not prepared: skip the slow tensorflow_datasets import
        tried.append(f"TFDS `{builder}`: not prepared under {tfds_dir} (set $TFDS_DATA_DIR or run "
                     f"`tfds build {builder} --file_format=array_record`)")
        return None
    key = ("tfds", builder, spec.split, str(tfds_dir))
    if key not in _readers:
        try:
            import tensorflow_datasets as tfds

            source = tfds.data_source(builder, split=spec.split, download=False,
                                      data_dir=str(tfds_dir))
        except Exception as error:  # not installed, TFRecord-prepared, unknown split...
            tried.append(f"TFDS `{builder}` split {spec.split!r} (random access needs the "
                         f"ArrayRecord format: `tfds build {builder} --file_format=array_record`)"
                         f": {type(error).__name__}: {error}")
            return None
        _readers[key] = TfdsReader(source, spec, builder)
    return _readers[key]


def _decode(value):
    """numpy/bytes values from TFDS as the Python types Hugging Face would give."""
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "tolist"):
        return _decode(value.tolist())
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


# ----------------------------------------------------------------------------- line index


def index_cache_dir() -> pathlib.Path:
    """Where line indices are kept: `$T0_INDEX_CACHE_DIR`, else `~/.cache/t0_jax/line_index`."""
    configured = os.environ.get(INDEX_CACHE_ENV)
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path("~/.cache/t0_jax/line_index").expanduser()


def line_index(path, cache_dir: Optional[pathlib.Path] = None) -> np.ndarray:
    """Byte offsets of the non-blank lines of `path`, then its size: int64 [lines + 1].

    Read from the index cache (memory-mapped, so every process shares the pages) when a file of
    the same path, size and mtime was indexed before; else scanned and saved there. An
    unwritable cache only costs a rescan next time.
    """
    path = pathlib.Path(path)
    stat = path.stat()
    key = f"{path.resolve()}\x00{stat.st_size}\x00{stat.st_mtime_ns}"
    cached = (cache_dir or index_cache_dir()) / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npy")
    try:
        return np.load(cached, mmap_mode="r")
    except (OSError, ValueError):
        pass
    starts = scan_line_starts(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".tmp", delete=False) as out:
            np.save(out, starts)
        os.replace(out.name, cached)  # atomic: concurrent workers never read half a file
    except OSError:
        pass
    return starts


def scan_line_starts(path) -> np.ndarray:
    """One pass over the bytes of `path` (1 MiB at a time): starts of non-blank lines + size."""
    found = []
    line_start, line_has_text, offset = 0, False, 0
    with open(path, "rb") as handle:
        while block := handle.read(_SCAN_BLOCK):
            data = np.frombuffer(block, np.uint8)
            newlines = np.flatnonzero(data == 10)
            text_before = np.concatenate(([0], np.cumsum(~np.isin(data, _JSON_SPACE),
                                                         dtype=np.int64)))  # [len + 1]
            if len(newlines):
                local_starts = np.concatenate(([0], newlines[:-1] + 1))  # segment starts
                has_text = text_before[newlines] > text_before[local_starts]
                has_text[0] |= line_has_text  # the first segment continues the open line
                starts = np.concatenate(([line_start], offset + local_starts[1:]))
                found.append(starts[has_text])
                line_start = offset + int(newlines[-1]) + 1
                line_has_text = bool(text_before[-1] > text_before[newlines[-1] + 1])
            else:
                line_has_text = line_has_text or bool(text_before[-1])
            offset += len(data)
    if line_has_text:  # a last line without a newline
        found.append(np.array([line_start]))
    return np.concatenate(found + [np.array([offset])]).astype(np.int64)


def _line_number(path, offset: int) -> int:
    """1-based line number of the line starting at byte `offset` (counts newlines before it)."""
    count, done = 0, 0
    with open(path, "rb") as handle:
        while done < offset:
            block = handle.read(min(_SCAN_BLOCK, offset - done))
            if not block:
                break
            count += block.count(b"\n")
            done += len(block)
    return count + 1


# ----------------------------------------------------------------------------- messages


def _display(hf_name, subset) -> str:
    return f"'{hf_name}'" + (f" subset '{subset}'" if subset else " (no subset)")


def _not_found_message(hf_name, subset, split, root, tried) -> str:
    example_root = root or "DATA_DIR"
    lines = [f"no examples found for dataset {_display(hf_name, subset)} split '{split}'. Tried:"]
    lines += [f"  - {attempt}" for attempt in tried]
    manual = MANUAL_DOWNLOAD.get(hf_name)
    target = mirror_file(example_root, hf_name, subset, split)
    name = hf_name + (f"/{subset}" if subset else "")
    fix = (f"{manual} to {target}." if manual else
           f"To fix: run `t0-data --datasets {name} --data_dir {example_root}` (the Hub as it "
           f"is now, through tasks/hub_sources.yaml; needs network), or write the split as JSON "
           f"lines (Hugging Face field names and types) to {target} and pass data_dir / set "
           f"${DATA_DIR_ENV}.")
    return "\n".join(lines + [fix])
