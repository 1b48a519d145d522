"""Path operations on strings, whatever the scheme (local, gs://, s3://, ...), via fsspec.

A path is a plain `str` (or `os.PathLike` for local paths). Local paths go through `os` directly
(no fsspec in the hot path, same errors as before); a path with a scheme goes to the fsspec
filesystem registered for it. Remote listings are never served from fsspec's cache: another host
may have written since.
"""
from __future__ import annotations

import builtins
import os
import posixpath
import shutil
import tempfile
from typing import Union

PathLike = Union[str, os.PathLike]

_LOCAL_SCHEMES = ("", "file", "local")


def scheme(path: PathLike) -> str:
    """'gs', 's3', ... or '' for a local path (also for `file://`)."""
    text = os.fspath(path)
    if "://" not in text:
        return ""
    name = text.split("://", 1)[0].lower()
    return "" if name in _LOCAL_SCHEMES else name


def is_remote(path: PathLike) -> bool:
    return scheme(path) != ""


def _local(path: PathLike) -> str:
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return os.path.expanduser(text)


def absolute(path: PathLike) -> str:
    """Local: an absolute path string (what `pathlib.Path(p).absolute()` gave); remote: as is,
    without a trailing slash."""
    if is_remote(path):
        return os.fspath(path).rstrip("/")
    return os.path.abspath(_local(path))


def join(base: PathLike, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(os.fspath(base).rstrip("/"), *[str(p) for p in parts])
    return os.path.join(_local(base), *[str(p) for p in parts])


def filesystem(path: PathLike):
    """The fsspec filesystem for a remote path (imported lazily: local runs never need it)."""
    import fsspec

    fs, _ = fsspec.core.url_to_fs(os.fspath(path))
    return fs


def _fs(path: PathLike):
    fs = filesystem(path)
    fs.invalidate_cache()
    return fs


def exists(path: PathLike) -> bool:
    if not is_remote(path):
        return os.path.exists(_local(path))
    return _fs(path).exists(os.fspath(path))


def isdir(path: PathLike) -> bool:
    if not is_remote(path):
        return os.path.isdir(_local(path))
    return _fs(path).isdir(os.fspath(path))


def isfile(path: PathLike) -> bool:
    if not is_remote(path):
        return os.path.isfile(_local(path))
    return _fs(path).isfile(os.fspath(path))


def dirname(path: PathLike) -> str:
    """The folder holding `path`, in its scheme ("gs://b/run/ckpt" → "gs://b/run")."""
    if not is_remote(path):
        return os.path.dirname(_local(path))
    return posixpath.dirname(os.fspath(path).rstrip("/"))


def basename(path: PathLike) -> str:
    return posixpath.basename(os.fspath(path).rstrip("/")) if is_remote(path) else \
        os.path.basename(_local(path).rstrip(os.sep))


def makedirs(path: PathLike) -> None:
    """Create a folder and its parents; object stores have no folders, so nothing to do there."""
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)


def listdir(path: PathLike) -> list[str]:
    """Sorted base names directly under `path` ([] when it does not exist)."""
    if not is_remote(path):
        try:
            return sorted(os.listdir(_local(path)))
        except FileNotFoundError:
            return []
    fs = _fs(path)
    try:
        entries = fs.ls(os.fspath(path).rstrip("/"), detail=False)
    except FileNotFoundError:
        return []
    return sorted({posixpath.basename(e.rstrip("/")) for e in entries} - {""})


def glob(pattern: PathLike) -> list[str]:
    """Sorted matches, as full paths in the pattern's scheme."""
    if not is_remote(pattern):
        import glob as _glob

        return sorted(_glob.glob(_local(pattern)))
    prefix = scheme(pattern) + "://"
    return sorted(m if "://" in m else prefix + m for m in _fs(pattern).glob(os.fspath(pattern)))


def open(path: PathLike, mode: str = "rb", **kwargs):  # noqa: A001
    """A file object; for remote writes the object appears whole when the file is closed."""
    if not is_remote(path):
        if any(c in mode for c in "wax"):
            os.makedirs(os.path.dirname(os.path.abspath(_local(path))), exist_ok=True)
        return builtins.open(_local(path), mode, **kwargs)
    return _fs(path).open(os.fspath(path), mode, **kwargs)


def read_bytes(path: PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Readers see the old content or the new, never a half-written file: locally a temporary
    file beside the target then os.replace; remotely one upload (objects appear whole)."""
    if is_remote(path):
        _fs(path).pipe_file(os.fspath(path), bytes(data))
        return
    target = os.path.abspath(_local(path))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-" + os.path.basename(target))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a written file reads like any other
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def size(path: PathLike) -> int:
    if not is_remote(path):
        return os.path.getsize(_local(path))
    return int(_fs(path).size(os.fspath(path)))


def remove(path: PathLike, missing_ok: bool = True) -> None:
    """Delete one file (object)."""
    try:
        if not is_remote(path):
            os.remove(_local(path))
        else:
            _fs(path).rm_file(os.fspath(path))
    except FileNotFoundError:
        if not missing_ok:
            raise


def rmtree(path: PathLike) -> None:
    """Delete a folder (every object under the prefix); absent is fine."""
    if not is_remote(path):
        shutil.rmtree(_local(path), ignore_errors=True)
        return
    fs = _fs(path)
    if fs.exists(os.fspath(path)):
        fs.rm(os.fspath(path).rstrip("/"), recursive=True)


def copy(src: PathLike, dst: PathLike) -> None:
    """Copy one file across any two schemes (streamed, never whole in memory)."""
    if not is_remote(src) and not is_remote(dst):
        os.makedirs(os.path.dirname(os.path.abspath(_local(dst))), exist_ok=True)
        shutil.copyfile(_local(src), _local(dst))
        return
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 8 << 20)


def copytree(src: PathLike, dst: PathLike) -> None:
    """Copy every file under `src` to the same relative place under `dst`."""
    if not is_remote(src):
        root = _local(src)
        for folder, _, files in os.walk(root):
            rel = os.path.relpath(folder, root)
            for name in files:
                target = join(dst, name) if rel == "." else join(dst, *rel.split(os.sep), name)
                copy(os.path.join(folder, name), target)
        return
    fs = _fs(src)
    base = os.fspath(src).rstrip("/")
    bare = base.split("://", 1)[1]
    for found in fs.find(base):
        rel = found[len(bare):].lstrip("/") if found.startswith(bare) else posixpath.basename(found)
        copy(scheme(src) + "://" + found, join(dst, *rel.split("/")))
