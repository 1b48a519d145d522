"""Apache Beam's test-side settings for fake-gcs-server, in every Python process of a test.

The GCS emulator fixture (tests/gcs/emulator.py) puts this folder first on PYTHONPATH and sets
T0_TEST_GCS_EMULATOR=1, so Python runs this file at start-up in every process it launches:
`t0-cache` subprocesses and Beam's multi_processing SDK workers (which inherit the environment).
Without that variable this file does nothing but chain to any other sitecustomize.

Two settings, both applied only when the Beam module in question is imported (so a process that
never imports Beam pays nothing):
1. GcsIO.copy_batch / delete_batch run one object at a time: fake-gcs-server has no JSON batch
   endpoint, and Beam's file sinks finalize (rename temp shards) through batch requests, which
   fail against it with "Bad response: not multi-part".
2. Beam's credential lookup is skipped (`_Credentials` marked initialised with no credentials, so
   GcsIO uses an anonymous client): `--no_auth` does not skip it, and on a machine without
   credentials it retries google.auth.default() for ~25 s in every process.
Why and how this was found: docs/storage-testing.md.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

ENABLE_VAR = "T0_TEST_GCS_EMULATOR"


def _copy_batch_one_by_one(self, src_dest_pairs):
    """Same contract as GcsIO.copy_batch: [(src, dest, http error code or None)]."""
    from google.api_core.exceptions import GoogleAPICallError, NotFound

    results = []
    for src, dest in src_dest_pairs:
        try:
            self.copy(src, dest)
            results.append((src, dest, None))
        except NotFound:
            results.append((src, dest, 404))
        except GoogleAPICallError as exc:
            results.append((src, dest, exc.code or 500))
    return results


def _delete_batch_one_by_one(self, paths):
    """Same contract as GcsIO.delete_batch: [(path, http error code or None)]; 404 is success."""
    from google.api_core.exceptions import GoogleAPICallError, NotFound

    results = []
    for path in list(paths):
        try:
            self.delete(path)
            results.append((path, None))
        except NotFound:
            results.append((path, None))
        except GoogleAPICallError as exc:
            results.append((path, exc.code or 500))
    return results


def _patch_gcsio(module):
    cls = module.GcsIO
    saved = cls.copy_batch, cls.delete_batch
    cls.copy_batch, cls.delete_batch = _copy_batch_one_by_one, _delete_batch_one_by_one

    def undo():
        cls.copy_batch, cls.delete_batch = saved
    return undo


def _patch_auth(module):
    cls = module._Credentials
    saved = cls._credentials_init, cls._credentials
    cls._credentials_init, cls._credentials = True, None

    def undo():
        cls._credentials_init, cls._credentials = saved
    return undo


_PATCHES = {"apache_beam.io.gcp.gcsio": _patch_gcsio,
            "apache_beam.internal.gcp.auth": _patch_auth}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the Beam modules through the other finders and patches them right after they run."""

    def __init__(self):
        self.undo = []

    def find_spec(self, name, path, target=None):
        if name not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                original = spec.loader.exec_module

                def exec_module(module, _original=original, _patch=_PATCHES[name]):
                    _original(module)
                    self.undo.append(_patch(module))
                spec.loader.exec_module = exec_module
                return spec
        return None


def install():
    """Apply the settings to modules already imported and to those imported later.

    Returns a function that removes the hook and restores what was patched (used by the
    in-process context manager; a subprocess keeps the settings until it exits).
    """
    hook = _PatchOnImport()
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            hook.undo.append(patch(sys.modules[name]))
    sys.meta_path.insert(0, hook)

    def uninstall():
        if hook in sys.meta_path:
            sys.meta_path.remove(hook)
        while hook.undo:
            hook.undo.pop()()
    return uninstall


def _chain_next_sitecustomize():
    """Run the sitecustomize this file shadows (e.g. a distribution's), if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if os.environ.get(ENABLE_VAR) == "1" and __name__ == "sitecustomize":
    install()
if __name__ == "sitecustomize":
    _chain_next_sitecustomize()
