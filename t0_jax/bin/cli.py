"""How every console script ends: one error convention and a quiet start, in one place.

    def main(argv=None) -> int:
        return cli.run("t0-score", _main, argv, doc=__doc__)

Exit codes (all commands): 0 done; 2 an error the user can fix (bad flag or gin value, unknown
task/mixture, missing data/split/vocabulary/checkpoint, a checkpoint that does not fit the model,
a malformed template file or mirror line, an unwritable output directory, a run that does not
fit in device memory, a MODEL_DIR another trainer holds, a failed checkpoint write): printed
as ONE line `PROG: error: <what, and what to do>`, no traceback; 1 an internal bug (Python's
traceback, as usual); 130 interrupted with Ctrl-C. `--verbose` (any position) or `T0_DEBUG=1`
also prints the traceback of a user error and keeps library start-up logs.

User-error classes are named here by module and class name and looked up only in modules
already imported, so this module imports neither TensorFlow nor JAX: a class whose module was
never imported cannot have been raised. Errors raised inside tf.data (a bad mirror line read by
a generator) reach us wrapped in a TensorFlow error whose text carries ours: it is unwrapped.

Quiet start: importing this module (first thing in every bin/ module) sets the environment
that keeps TensorFlow's and XLA's C++ start-up lines away; the lines absl prints before its
logging is initialised ignore that environment, so a script run also filters stderr (`StderrFilter`)
for C++ INFO/WARNING lines. Library loggers are set to WARNING (absl, which carries seqio and
Orbax notes, to ERROR), ours (t0_jax.*) to INFO.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import traceback
from typing import Callable, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before any TensorFlow import (C++ side)
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _skip_absent_tpu() -> None:
    """With libtpu installed (the `tpu`/`test` extras, for `--dry_run --topology`) on a host
    without TPU chips, JAX's first backend start would load libtpu, which prints a screen of
    warnings and then fails over to the CPU. Name the platforms there are instead; an explicit
    $JAX_PLATFORMS wins, and slice descriptions for ahead-of-time plans need no TPU backend."""
    import glob  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415

    if "JAX_PLATFORMS" in os.environ or importlib.util.find_spec("libtpu") is None:
        return
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return  # a TPU VM: let JAX find its chips
    gpu = any(importlib.util.find_spec(name) is not None
              for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    os.environ["JAX_PLATFORMS"] = "cuda,cpu" if gpu else "cpu"


_skip_absent_tpu()

EXIT_OK, EXIT_BUG, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "T0_DEBUG"
VERBOSE_FLAG = "--verbose"


class UserError(Exception):
    """Base for errors whose message already says what to change (exit 2, no traceback)."""


# (module, class name): user errors wherever they are defined. Add new ones here.
USER_ERRORS = (
    ("t0_jax.bin.cli", "UserError"),
    ("t0_jax.bin.gin_flags", "UsageError"),
    ("t0_jax.bin.demo", "DemoError"),
    ("t0_jax.train.trainer", "ConfigError"),
    ("t0_jax.train.memory_advice", "OutOfMemoryError"),
    ("t0_jax.train.topologies", "UnknownTopologyError"),
    ("t0_jax.train.topologies", "TopologyUnavailableError"),
    ("t0_jax.train.preemption", "RunLockedError"),
    ("t0_jax.train.preemption", "CheckpointWriteError"),
    ("t0_jax.parallel.sharding", "DoesNotFitError"),
    ("t0_jax.convert.layout", "CheckpointMismatchError"),
    ("t0_jax.convert.layout", "CheckpointFormatError"),
    ("t0_jax.data.registry", "UnknownNameError"),
    ("t0_jax.data.sources", "DataNotFoundError"),
    ("t0_jax.data.sources", "BadExampleError"),
    ("t0_jax.data.templates", "TemplateError"),
    ("t0_jax.data.vocabularies", "VocabularyNotFoundError"),
    ("t0_jax.data.catalogue", "CatalogueError"),
    ("t0_jax.data.caches", "CacheError"),
    ("t0_jax.data.caches", "CacheBuildError"),
    ("t0_jax.scoring.report", "ResultsWriteError"),
)
# OS errors a user causes with a path: missing, not allowed, full disk, read-only file system.
USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
               errno.EDQUOT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
_OS_HINTS = {errno.ENOTDIR: "a part of the path is a file, not a directory; pick another path",
             errno.EACCES: "check the permissions or pick another directory",
             errno.EPERM: "check the permissions or pick another directory",
             errno.EROFS: "the file system is read-only; pick another directory",
             errno.ENOSPC: "the disk is full; free space or pick another directory",
             errno.EDQUOT: "the disk quota is exceeded; free space or pick another directory"}
# what gin appends to an exception raised inside a configurable
_GIN_CALL_NOTE = re.compile(r"\n\s*In call to configurable '[^']*' \(.*\)\s*$")
# `  File ...` / `SomeError: message` lines inside a TensorFlow error's text
_WRAPPED = re.compile(r"^\s*(?:[\w.]+\.)?(\w+): (.+)$")


def user_error_types() -> tuple:
    """The user-error classes of the modules imported so far."""
    found = []
    for module_name, class_name in USER_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def user_message(error: BaseException) -> Optional[str]:
    """The one-line-or-so message for a user error, None for anything else (a bug)."""
    if isinstance(error, user_error_types()):
        return shorten_differences(_text(error))
    if isinstance(error, OSError) and _is_user_os_error(error):
        return _os_message(error)
    wrapped = _unwrap_tensorflow(error)
    if wrapped is not None:
        return wrapped
    cause = error.__cause__ or error.__context__
    if isinstance(error, (RuntimeError, ValueError)) and cause is not None and cause is not error:
        inner = user_message(cause)  # e.g. a prefetch thread re-raising a reader's error
        if inner is not None and inner in str(error):
            return inner
    return None


def _text(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]  # KeyError's str() adds quotes around the message
    text = _GIN_CALL_NOTE.sub("", text)
    return text.strip() or type(error).__name__


DIFFERENCE_KINDS = ("wrong shape:", "unexpected:", "missing:")  # convert/layout.py's lines


def shorten_differences(message: str, shown: int = 8) -> str:
    """A checkpoint/model mismatch lists every differing parameter (hundreds for another
    model size): keep the most telling few (wrong shapes first, then shallow paths such as the
    embedding); the traceback of `--verbose` still carries the whole list."""
    lines = message.splitlines()
    diffs = [x for x in lines if x.strip().startswith(DIFFERENCE_KINDS)]
    if len(diffs) <= shown:
        return message
    rank = [x.strip().split(":")[0] + ":" for x in diffs]
    order = sorted(range(len(diffs)), key=lambda i: (
        DIFFERENCE_KINDS.index(rank[i]), diffs[i].count("/"), diffs[i]))
    kept = [diffs[i] for i in order[:shown]]
    rest = f"  … and {len(diffs) - shown} more (--verbose lists them all)"
    others = [x for x in lines if x not in diffs]
    return "\n".join(others[:1] + kept + [rest] + others[1:])


def _is_user_os_error(error: OSError) -> bool:
    if isinstance(error, (FileNotFoundError, FileExistsError, PermissionError,
                          IsADirectoryError, NotADirectoryError)):
        return True
    return error.errno in USER_ERRNOS


def _os_message(error: OSError) -> str:
    if error.filename is None or error.strerror is None:
        return _text(error)
    where = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
    hint = _OS_HINTS.get(error.errno)
    return f"{where}: {error.strerror}" + (f" ({hint})" if hint else "")


def _unwrap_tensorflow(error: BaseException) -> Optional[str]:
    """Our message from inside a tf.errors.* text (`... BadExampleError: <ours>`), if there."""
    if not type(error).__module__.startswith("tensorflow"):
        return None
    names = {cls.__name__ for cls in user_error_types()} | {
        "FileNotFoundError", "PermissionError", "DataNotFoundError", "BadExampleError"}
    text = str(error)
    for line in text.splitlines():
        match = _WRAPPED.match(line)
        if match and match.group(1) in names:
            message = match.group(2)
            return re.sub(r"\s*\[\[\{\{node .*$", "", message).strip()
    return None


def check_writable_dir(path, what: str) -> None:
    """Create `path` and write a probe in it, so an unwritable output directory fails before any
    work (an OSError naming the path; printed as a user error)."""
    import pathlib  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from t0_jax import storage  # noqa: PLC0415

    if storage.is_remote(path):  # object storage: a probe object, written and removed
        probe = storage.join(path, f".write-probe-{os.getpid()}")
        try:
            storage.write_bytes(probe, b"")
            storage.remove(probe)
        except OSError as error:
            raise UserError(f"{what} {path} is not writable ({error}); check the bucket name "
                            "and your credentials (`gcloud auth application-default login`).") \
                from error
        return
    directory = pathlib.Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        hint = _OS_HINTS.get(error.errno, "pick another directory or fix its permissions")
        raise UserError(f"{what} {directory} is not writable ({error.filename}: {reason}); "
                        f"{hint}.") from error


def debug_requested(argv: Sequence[str]) -> bool:
    return VERBOSE_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run(prog: str, body: Callable[[list], int], argv: Optional[Sequence[str]] = None, *,
        doc: Optional[str] = None, exit_codes: Optional[dict] = None) -> int:
    """Call `body(argv)` under the convention; returns the exit code.

    `argv` None means a real command line (sys.argv; stderr is then filtered of C++ start-up
    lines); `doc` answers -h/--help for mains without argparse; `exit_codes` maps further
    exception classes to their own codes (their message is printed the same way).
    """
    script = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = debug_requested(argv)
    argv = [a for a in argv if a != VERBOSE_FLAG]
    if doc is not None and any(a in ("-h", "--help") for a in argv):
        print(doc.strip("\n"))
        return EXIT_OK
    configure_logging(verbose)
    if script and not verbose:
        sys.unraisablehook = _quiet_unraisable
    stderr_filter = StderrFilter() if script and not verbose else None
    try:
        if stderr_filter is not None:
            stderr_filter.start()
        return body(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - sorted into user errors and bugs below
        code = _own_code(error, exit_codes)
        message = user_message(error)
        if message is None and code is None:
            raise  # an internal bug: Python prints the traceback
        if verbose:
            traceback.print_exc()
        label = getattr(error, "label", "error")  # e.g. `t0-train: stopped: ...`
        print(f"{prog}: {label}: {message if message is not None else _text(error)}",
              file=sys.stderr, flush=True)
        return EXIT_USER if code is None else code
    finally:
        if stderr_filter is not None:
            stderr_filter.stop()


def _own_code(error: BaseException, exit_codes: Optional[dict]) -> Optional[int]:
    for cls, code in (exit_codes or {}).items():
        if isinstance(error, cls):
            return code
    return None


# ----------------------------------------------------------------------------- quiet start

QUIET_LOGGERS = ("apache_beam", "tensorflow", "jax", "orbax", "etils", "h5py",
                 "datasets", "urllib3", "filelock", "fsspec", "matplotlib", "PIL")


class _LibraryNoise(logging.Filter):
    """Warnings libraries print on import about optional parts we do not use."""

    NOISE = ("apitools not found", "Path not found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def configure_logging(verbose: bool = False) -> None:
    """Our INFO lines (t0_jax.*) with a timestamp; libraries only from WARNING on."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if verbose:
        return
    if root.level < logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    logging.getLogger("t0_jax").setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.ERROR)  # seqio/Orbax notes, not for users
    if not any(isinstance(f, _LibraryNoise) for f in root.filters):
        root.addFilter(_LibraryNoise())
    for handler in root.handlers:
        if not any(isinstance(f, _LibraryNoise) for f in handler.filters):
            handler.addFilter(_LibraryNoise())


def _quiet_unraisable(unraisable) -> None:
    """After a failed Orbax restore, tensorstore completes its futures on the asyncio loop
    Orbax already closed; Python reports each as unraisable at exit. Nothing is lost."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


# C++ log lines (absl/glog form, INFO or WARNING) and absl's note printed before their first one.
_CPP_NOISE = re.compile(rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] |"
                        rb"WARNING: All log messages before absl::InitializeLog\(\))")


class StderrFilter:
    """Drops C++ INFO/WARNING lines from file descriptor 2 while a command runs.

    TensorFlow 2.21 and XLA log through absl before absl's logging is initialised, which
    ignores TF_CPP_MIN_LOG_LEVEL; only the file descriptor sees those lines. Everything else
    (Python's own stderr included) passes through unchanged, line by line.
    """

    def __init__(self):
        self._saved: Optional[int] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        try:
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            self._saved = os.dup(2)
        except OSError:
            return  # no usable stderr: nothing to filter
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, args=(read_fd, self._saved),
                                        name="t0-stderr-filter", daemon=True)
        self._thread.start()

    @staticmethod
    def _pump(read_fd: int, out_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [line + b"\n" for line in lines if not _CPP_NOISE.match(line)]
                if pending and not pending.startswith((b"I", b"W")):
                    kept.append(pending)  # a progress bar redrawn with \r: pass it on now
                    pending = b""
                _write_all(out_fd, b"".join(kept))
            if not _CPP_NOISE.match(pending):
                _write_all(out_fd, pending)

    def stop(self) -> None:
        """Restore fd 2; the pump drains what is left (child processes may keep the pipe open:
        then it is left to drain on its own)."""
        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # the pipe's last writer goes: the pump sees EOF and drains
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(self._saved)
        self._saved = None


def _write_all(fd: int, data: bytes) -> None:
    """Best effort: a closed stderr must not stop the pump (a full pipe would block writers)."""
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass
