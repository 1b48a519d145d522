"""One path API for every file a user names: local paths, `gs://` and the other schemes fsspec knows.

Every room (data, train, scoring, convert, bin) reads and writes user-given paths through this
package, never with `pathlib`/`os` directly, so that MODEL_DIR, DATA_DIR, CACHE_DIRS, OUTPUT_DIR,
VOCAB_PATH and checkpoint paths may live on object storage, where the hosts of a pod or a GPU
cluster meet. Local paths keep their old behaviour (atomic replace, O_EXCL). Built on fsspec:
`gs://` through gcsfs (installed with t0-jax), `s3://` through s3fs (`pip install s3fs`), and
whatever else fsspec registers. No TensorFlow here: model/, train/ and scoring/ import it.

Object stores differ from a disk in three ways this API makes explicit:
  * no atomic rename of a folder: finished outputs are marked by `mark_complete` (a small
    object written LAST) and readers trust only `is_complete`;
  * no O_EXCL: `create_exclusive` uses the store's create-if-absent precondition (GCS
    `ifGenerationMatch=0`, S3 `If-None-Match: *`);
  * ranged reads are round trips: `local_copy` fetches a remote file once, checked by size and
    checksum, for readers that seek (the JSONL mirror's line index).
"""
import os as _os

# Orbax reaches gs:// through etils.epath, which picks TensorFlow's gfile whenever TensorFlow is
# installed (importing it into train/ at run time, and probing every bucket with a Storage
# Control gRPC call). One library for object storage: epath's fsspec backend, i.e. gcsfs, the
# library under this package. Set before epath first decides (it caches the answer); a user who
# sets EPATH_USE_TF keeps their choice.
_os.environ.setdefault("EPATH_USE_TF", "false")

from t0_jax.storage.paths import (  # noqa: E402
    absolute,
    basename,
    copy,
    copytree,
    dirname,
    exists,
    glob,
    isdir,
    isfile,
    is_remote,
    join,
    listdir,
    makedirs,
    open,  # noqa: A004 - deliberately shadows the builtin inside this namespace
    read_bytes,
    read_text,
    remove,
    rmtree,
    scheme,
    size,
    write_bytes,
    write_text,
)
from t0_jax.storage.objects import (  # noqa: E402
    create_exclusive, is_complete, local_copy, mark_complete, read_marker)

__all__ = [
    "absolute", "basename", "copy", "copytree", "create_exclusive", "dirname", "exists", "glob",
    "is_complete", "is_remote", "isdir", "isfile", "join", "listdir", "local_copy", "makedirs",
    "mark_complete", "open", "read_bytes", "read_marker", "read_text", "remove", "rmtree", "scheme", "size",
    "write_bytes", "write_text",
]
