"""Shared test setup: 8 fake CPU devices, a persistent compile cache, paths to ../shared.

XLA_FLAGS must be set before JAX is imported anywhere, so it happens at the top of
this file, which pytest imports before any test module.
"""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No test reaches the Hugging Face Hub: the sources' Hub fallback (tasks/hub_sources.yaml) fails
# fast instead of waiting on the network; tests/data/offline_hub.py fills a cache where needed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# gcsfs reads this once, when first imported: if any test touches gs:// before the GCS emulator's
# settings are applied, the later emulator tests would each wait out 60 s gRPC bucket-type probes.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import pytest  # noqa: E402

# gcs_bucket / gcs_root: a real GCS API server on localhost (docs/storage-testing.md)
from tests.gcs.fixtures import gcs_bucket, gcs_emulator, gcs_root  # noqa: E402,F401

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
T5X_FIXTURE = SHARED / "fixtures" / "t5x" / "test_t5_tiny.checkpoint_0"

try:  # persistent compilation cache: repeated shapes across runs compile once
    import jax

    jax.config.update("jax_compilation_cache_dir", str(REPO / ".cache" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
except ImportError:  # pragma: no cover - jax is a hard dependency
    pass


@pytest.fixture(scope="session")
def shared_data_dir():
    """The real-example mirror in ../shared/data; tests skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data mirror not found at {SHARED_DATA} (needs ../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def t5x_fixture():
    """The real T5X tiny msgpack checkpoint; tests skip with a reason when absent."""
    if not T5X_FIXTURE.is_file():
        pytest.skip(f"T5X fixture not found at {T5X_FIXTURE} (needs ../shared beside the repo)")
    return T5X_FIXTURE


@pytest.fixture(scope="session")
def spm_model_path(tmp_path_factory):
    """A small SentencePiece model trained once per session on generated text."""
    from t0_jax.data.vocabularies import train_sentencepiece

    out = tmp_path_factory.mktemp("spm") / "test_spm.model"
    return str(train_sentencepiece(_spm_corpus(), out, vocab_size=800))


def _spm_corpus():
    words = ("the a premise hypothesis question answer yes no maybe true false sentence "
             "paraphrase equivalent news world sports business science goal solution "
             "context option what why who which does mean imply given following choose "
             "best correct wrong right left first second third because so then").split()
    # Every printable ASCII character appears, so real prompts (capitals, digits,
    # punctuation) tokenize without <unk> and decode back to the same text.
    import string

    lines = [" ".join([string.ascii_letters, string.digits, string.punctuation])] * 50
    for i in range(3000):
        lines.append(" ".join(words[(i * k + k * k) % len(words)] for k in range(1, 14)))
    return lines
