"""pytest fixtures for the GCS emulator (registered in tests/conftest.py).

    gcs_bucket  (session)  a running GcsEmulator (tests/gcs/emulator.py): .bucket, .env,
                           .settings, .applied(), .root(label), .list_objects(), .read_object()
    gcs_root    (function) a fresh "gs://<bucket>/<test name>-<hex>" prefix for one test
    gcs_emulator (session) the same object as gcs_bucket, under the name some tests use

The session fixture FAILS, never skips, when the server cannot start: the storage tests are
part of CI and must not pass by not running.
"""
import pytest

from tests.gcs.emulator import EmulatorError, start_emulator


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
    """fake-gcs-server with one bucket, the TLS proxy for TensorFlow, and their environment."""
    emulator, error = start_emulator(tmp_path_factory.mktemp("gcs-emulator")), None
    try:
        running = emulator.__enter__()
    except EmulatorError as exc:
        error = str(exc)
    if error is not None:
        pytest.fail(f"the GCS emulator could not start (tests/gcs/emulator.py): {error}",
                    pytrace=False)
    try:
        yield running
    finally:
        emulator.__exit__(None, None, None)


@pytest.fixture
def gcs_root(gcs_bucket, request):
    """A gs:// prefix of this test's own, empty when the test starts."""
    return gcs_bucket.root(request.node.name)


@pytest.fixture(scope="session")
def gcs_emulator(gcs_bucket):
    """Another name for gcs_bucket (the object is the running emulator as a whole)."""
    return gcs_bucket
