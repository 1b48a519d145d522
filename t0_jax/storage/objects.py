"""What a disk gives for free and an object store does not: exclusive create, completion
markers, and a verified local copy for readers that seek.

Completion markers: a folder is complete when its marker object exists; the marker is written
after everything else, so a run killed half-way leaves a folder that no reader trusts (there is
no atomic folder rename on GCS or S3 to rely on instead).
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional

from t0_jax.storage import paths


def create_exclusive(path: paths.PathLike, data: bytes) -> bool:
    """Create `path` holding `data` only if it does not exist yet; True when this call made it.

    Local: O_CREAT|O_EXCL. gs://: an upload with the `ifGenerationMatch=0` precondition (gcsfs's
    mode="create"), s3://: `If-None-Match: *`. Two hosts racing for the same path: exactly one wins.
    """
    if not paths.is_remote(path):
        local = paths._local(path)
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        try:
            fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    fs = paths._fs(path)
    try:
        fs.pipe_file(os.fspath(path), bytes(data), mode="create")
    except FileExistsError:
        return False
    except OSError as error:  # some stores answer the failed precondition as a generic 412
        if "412" in str(error) or "precondition" in str(error).lower():
            return False
        raise
    return True


def mark_complete(folder: paths.PathLike, name: str = "COMPLETED", payload: Optional[dict] = None) -> str:
    """Write the marker object LAST, after every file of `folder`; returns its path."""
    marker = paths.join(folder, name)
    paths.write_text(marker, json.dumps(payload or {}, sort_keys=True) + "\n")
    return marker


def is_complete(folder: paths.PathLike, name: str = "COMPLETED") -> bool:
    return paths.exists(paths.join(folder, name))


def read_marker(folder: paths.PathLike, name: str = "COMPLETED") -> Optional[dict]:
    """The marker's payload, {} for an empty marker, None when the folder is not complete."""
    marker = paths.join(folder, name)
    if not paths.exists(marker):
        return None
    text = paths.read_text(marker).strip()
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"text": text}


_SESSION_DIR: Optional[str] = None


def _session_dir() -> str:
    """A per-process temporary folder for local copies, removed at exit (so a run leaves
    nothing behind on a host's disk unless T0_STORAGE_CACHE asks to keep copies)."""
    global _SESSION_DIR
    if _SESSION_DIR is None:
        _SESSION_DIR = tempfile.mkdtemp(prefix="t0-storage-")
        atexit.register(shutil.rmtree, _SESSION_DIR, True)
    return _SESSION_DIR


def local_copy(path: paths.PathLike, cache_dir: Optional[str] = None) -> str:
    """A local file with the content of `path` (local paths are returned as they are).

    A remote file is downloaded once per process (or once per `cache_dir` / $T0_STORAGE_CACHE,
    keyed by its path and generation/etag) and checked against the store's size and checksum
    (md5 or crc32c, whichever the store reports); a mismatch raises instead of reading a
    truncated copy.
    """
    if not paths.is_remote(path):
        return paths._local(path)
    fs = paths._fs(path)
    info = fs.info(os.fspath(path))
    version = str(info.get("generation") or info.get("ETag") or info.get("etag") or info.get("mtime") or "")
    key = hashlib.sha1(f"{os.fspath(path)}@{version}".encode()).hexdigest()[:20]
    root = cache_dir or os.environ.get("T0_STORAGE_CACHE") or _session_dir()
    target = os.path.join(root, key, os.path.basename(os.fspath(path).rstrip("/")))
    if os.path.exists(target) and _matches(target, info):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")  # one per process
    os.close(fd)
    fs.get_file(os.fspath(path), tmp)
    if not _matches(tmp, info):
        os.remove(tmp)
        raise OSError(f"local copy of {path} does not match the stored object "
                      f"(size or checksum differ): retry, or check the object")
    os.replace(tmp, target)
    return target


def _matches(local: str, info: dict) -> bool:
    expected = info.get("size")
    if expected is not None and os.path.getsize(local) != int(expected):
        return False
    md5 = info.get("md5Hash")
    if md5:
        return _digest(local, hashlib.md5()) == base64.b64decode(md5)
    crc = info.get("crc32c")
    if crc:
        import google_crc32c

        checksum = google_crc32c.Checksum()
        with open(local, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                checksum.update(block)
        return checksum.digest() == base64.b64decode(crc)
    return True


def _digest(local: str, hasher) -> bytes:
    with open(local, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            hasher.update(block)
    return hasher.digest()
