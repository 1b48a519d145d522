"""Every shipped .gin file parses and binds with the configurables registered in t0_jax/bin.

Run files, experiments and partitioning files are bound all the way into `train(dry_run=True)`
(arguments, mesh, parameter layout and memory checks) with the tiny model; model files must
describe exactly the presets of t0_jax.model.config; experiment files carry the paper's
hyperparameters (REFERENCE.md §1) and name mixtures that the data package registers.
"""
import importlib
import pkgutil
import re

import gin
import pytest

import t0_jax.bin
from t0_jax import resources
from t0_jax.model.config import PRESETS, T5Config

GIN_DIR = resources.gin_dir()
ALL_FILES = sorted(str(p.relative_to(GIN_DIR)) for p in GIN_DIR.rglob("*.gin"))
TINY = ["T5Config.emb_dim = 8", "T5Config.num_heads = 4", "T5Config.head_dim = 3",
        "T5Config.mlp_dim = 16", "T5Config.num_encoder_layers = 2",
        "T5Config.num_decoder_layers = 2", "T5Config.vocab_size = 64"]
SMALL_RUN = ["BATCH_SIZE = 8", "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 8}",
             "NUM_MICROBATCHES = 1"]  # the T0 files accumulate 16 microbatches of 1024 rows
ON_8_CPUS = ["NUM_PARTITIONS = 2"]  # the T0 files' 16-way model axis needs a TPU slice
# The paper's T0 runs (t0_hparams.gin is their shared part); other experiment files (the demo,
# continuity overrides) are bound generically below.
T0_EXPERIMENTS = ["experiments/t0_train.gin", "experiments/t0p_train.gin",
                  "experiments/t0pp_train.gin", "experiments/t0_train_one_og_prompt.gin",
                  "experiments/t0_train_all_og_prompts.gin",
                  "experiments/t0_d_ablation_example.gin"]
AFTER_AN_EXPERIMENT = {"experiments/t0_continue_step.gin", "experiments/t0_hparams.gin"}
FILL_REQUIRED = {"MIXTURE_OR_TASK_NAME": "'x'", "TRAIN_STEPS": "2", "BATCH_SIZE": "8",
                 "TASK_FEATURE_LENGTHS": "{'inputs': 16, 'targets': 8}"}


@pytest.fixture(scope="module", autouse=True)
def _register_bin_configurables():
    """Import every t0_jax/bin module: their import registers the gin configurables."""
    for info in pkgutil.iter_modules(t0_jax.bin.__path__):
        importlib.import_module(f"t0_jax.bin.{info.name}")
    yield
    gin.clear_config()


def _parse(files, bindings=()):
    gin.clear_config()
    gin.add_config_file_search_path(str(GIN_DIR))
    gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False)


def _required_left():
    return re.findall(r"^(\w+) = %gin\.REQUIRED$", gin.config_str(), re.MULTILINE)


def _dry_run(tmp_path):
    train = gin.get_configurable("t0_jax.train.train")
    assert train(config_text="", dry_run=True) is None
    assert not (tmp_path / "never").exists()  # a dry run writes nothing


def _run_bindings(tmp_path):
    return [f"MODEL_DIR = '{tmp_path / 'never'}'", "INITIAL_CHECKPOINT_PATH = 'unused'"]


def _size(name):
    return re.match(r"models/t5_1_1_(?:lm100k_)?(\w+)\.gin", name).group(1)


@pytest.mark.parametrize("name", [f for f in ALL_FILES if f.startswith("models/")])
def test_model_files_are_the_presets(name):
    _parse(["runs/train.gin", name])
    config = gin.get_configurable("t0_jax.model.T5Config")()
    assert T5Config.from_dict(config.to_dict()) == PRESETS[_size(name)]


@pytest.mark.parametrize("name", T0_EXPERIMENTS)
def test_t0_experiments_have_the_paper_hyperparameters(name, tmp_path):
    _parse(["runs/finetune.gin", name])
    expected = {"TRAIN_STEPS": 12200, "BATCH_SIZE": 1024, "PACK": True,
                "TASK_FEATURE_LENGTHS": {"inputs": 1024, "targets": 256},
                "LEARNING_RATE": 1e-3, "LR_SCHEDULE": "constant", "DROPOUT_RATE": 0.1,
                "ACTIVATION_DTYPE": "bfloat16", "Z_LOSS": 1e-4,
                "LOSS_NORMALIZING_FACTOR": 233472, "OPTIMIZER_CONTINUITY": "reset"}
    assert {k: gin.query_parameter(f"%{k}") for k in expected} == expected
    assert _required_left() == ["INITIAL_CHECKPOINT_PATH", "MODEL_DIR"]
    assert T5Config.from_dict(gin.get_configurable("t0_jax.model.T5Config")().to_dict()) == (
        PRESETS["xl" if "d_ablation" in name else "xxl"].replace(
            dropout_rate=0.1, scan_layers=True, remat_policy="full"))
    mixture = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
    if isinstance(mixture, str):  # the d-ablation registers its own mixture when bound
        from t0_jax.data import mixtures
        assert mixture in mixtures.list_mixtures()
    _parse(["runs/finetune.gin", name], _run_bindings(tmp_path) + SMALL_RUN + TINY + ON_8_CPUS)
    _dry_run(tmp_path)


@pytest.mark.parametrize("name", [f for f in ALL_FILES if f.startswith(
    ("runs/", "partitioning/", "experiments/")) and f != "runs/score.gin"
    and f not in T0_EXPERIMENTS])
def test_run_partitioning_and_other_experiment_files_bind(name, tmp_path):
    if name.startswith("partitioning/") or name in AFTER_AN_EXPERIMENT:
        files = ["runs/finetune.gin", "experiments/t0_train.gin", name,
                 "models/t5_1_1_tiny.gin"]
        extra = SMALL_RUN + TINY + ([] if name == "partitioning/model_parallel.gin"
                                    else ON_8_CPUS)
    else:  # a run file, or an experiment that brings its own model (demo) or the tiny one
        files = ["runs/train.gin", "models/t5_1_1_tiny.gin"] + (
            [name] if name.startswith("experiments/") else [])
        _parse(files)
        extra = [f"{k} = {FILL_REQUIRED[k]}" for k in _required_left() if k in FILL_REQUIRED]
    _parse(files, _run_bindings(tmp_path) + extra)
    assert not _required_left()
    _dry_run(tmp_path)
    if name == "partitioning/fsdp.gin":
        assert gin.query_parameter("%PARTITION_RULES") == "fsdp"
    if name == "partitioning/model_parallel.gin":
        assert gin.query_parameter("%NUM_PARTITIONS") == 8
    if name == "experiments/t0_continue_step.gin":
        assert gin.query_parameter("%OPTIMIZER_CONTINUITY") == "restore"
        assert gin.query_parameter("%TRAIN_STEPS") == 1_112_200


def test_every_other_gin_file_parses_and_binds():
    """Files owned by other entry points (runs/score.gin, ...) with their REQUIRED filled."""
    others = [f for f in ALL_FILES if f == "runs/score.gin" or not f.startswith(
        ("models/", "runs/", "partitioning/", "experiments/"))]
    for name in others:
        _parse([name])
        bindings = [f"{macro} = 'x'" for macro in _required_left()]
        _parse([name], bindings)
        assert not _required_left()
        if "score_run" in gin.config_str():
            from t0_jax.bin import score
            assert score.score_run().checkpoint_path == "x"


def test_every_file_is_covered():
    covered = {f for f in ALL_FILES if f.startswith(("models/", "runs/", "partitioning/",
                                                      "experiments/"))}
    assert covered == set(ALL_FILES), "a gin file outside models/runs/partitioning/experiments"
    assert {"runs/train.gin", "runs/finetune.gin", "partitioning/fsdp.gin",
            "experiments/t0_train.gin"} <= covered
