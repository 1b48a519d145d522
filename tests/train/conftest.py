"""A seqio cache of a real task, built once per session with the Beam pipeline (t0-cache's
engine, in-memory DirectRunner) for the training tests that read caches."""
import pytest

CACHED_TASK, CACHED_SPLIT = "glue_mrpc_paraphrase", "validation"  # 408 real examples


@pytest.fixture(scope="session")
def mrpc_cache(tmp_path_factory, spm_model_path, shared_data_dir):
    """The cache directory; the global seqio/registry state is restored afterwards."""
    seqio = pytest.importorskip("seqio")
    from t0_jax.data import cache_build, registry, sources

    previous_vocab = registry.task_vocabulary().path
    previous_dirs = list(seqio.utils.get_global_cache_dirs())
    previous_data = getattr(sources, "_data_dir", None)
    out = str(tmp_path_factory.mktemp("cache"))
    cache_build.cache_tasks([CACHED_TASK], out, splits=[CACHED_SPLIT],
                            data_dir=str(shared_data_dir), vocab_path=spm_model_path,
                            pipeline_options=["--runner=DirectRunner", "--direct_num_workers=1",
                                              "--direct_running_mode=in_memory"],
                            min_shards=2, progress=lambda line: None)
    registry.set_vocab_path(previous_vocab)
    sources.set_data_dir(previous_data)
    seqio.utils.set_global_cache_dirs(previous_dirs)
    seqio.get_mixture_or_task(CACHED_TASK)._cache_dir = None
    return out
