"""`train(...)`: the training loop, with plain arguments (gin binds it only in t0_jax/bin).

Order of work, so that a configuration that cannot work fails before any compute:
  1. check the arguments (lengths, batch vs data axis and microbatches, continuity, rules);
  2. build the mesh and the state layout (shapes + shardings, nothing allocated) and check that
     the state fits on one device;
  3. restore the newest finalized checkpoint in MODEL_DIR, else load INITIAL_CHECKPOINT_PATH,
     else initialise randomly — every array directly in its shards;
  4. open the batch source at the resume position (its saved input state when it has one);
  5. loop: one jitted, donated step per batch; metrics to TensorBoard + JSONL (host 0); an
     async Orbax save every `checkpoint_period` steps and at the end.

The trainer receives its batches (`batch_source`, see input_source.py); it never imports the
task layer — t0_jax/bin/train_data.py wires the seqio pipeline in. Resume is exact: each
checkpoint carries every host's input position (input_feed.py), restored without replaying the
consumed batches, or, for a source that cannot save its state, the deterministic stream is
re-opened skipping them; dropout keys are a function of the absolute step, and the restored
arrays are the saved bytes. A non-finite loss stops the
run before that state can be saved, so the newest checkpoint is always a good one.

MODEL_DIR and INITIAL_CHECKPOINT_PATH may be local or `gs://` (any fsspec scheme): every file
goes through `t0_jax.storage` or Orbax, both of which speak object storage (checkpoints.py,
metrics.py, preemption.py say how each file is written there).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Callable, Mapping, Optional, Union

import jax
import numpy as np

from t0_jax import storage
from t0_jax.model import axes as axes_lib
from t0_jax.model.config import T5Config
from t0_jax.model import stacking
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.optim import adafactor as adafactor_lib
from t0_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from t0_jax.train import checkpoints, input_feed, metrics as metrics_lib, preemption, steps
from t0_jax.train.finite import NonFiniteLossError  # noqa: F401 - part of this API
from t0_jax.train.finite import finite_or_raise, params_finite_or_raise
from t0_jax.train.input_source import BatchFunction, BatchSource, as_batch_source
from t0_jax.train import memory_advice
from t0_jax.train.memory_advice import OutOfMemoryError
from t0_jax.train.progress import Progress
from t0_jax.train.state import (OPTIMIZER_CONTINUITY, TrainState, abstract_with_shardings,
                                init_state_fn, make_optimizer, state_from_params, state_layout)

log = logging.getLogger(__name__)

PARTITION_RULES = {"default": axes_lib.DEFAULT_RULES, "fsdp": axes_lib.FSDP_RULES}
StepCallback = Callable[[int, Mapping[str, float]], None]


class ConfigError(ValueError):
    """A training configuration that cannot work; raised before any compute."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    step: int
    batches_consumed: int
    metrics: dict
    model_dir: str


def check_arguments(*, train_steps: int, batch_size: int, task_feature_lengths: Mapping,
                    optimizer_continuity: str, partition_rules: str, num_microbatches: int,
                    checkpoint_period: int, log_period: int, loss_normalizing_factor) -> None:
    """Everything checkable from the arguments alone."""
    if sorted(task_feature_lengths) != ["inputs", "targets"]:
        raise ConfigError(f"TASK_FEATURE_LENGTHS={dict(task_feature_lengths)} must have exactly "
                          "the keys 'inputs' and 'targets', e.g. {'inputs': 1024, 'targets': 256}.")
    if any(int(v) <= 0 for v in task_feature_lengths.values()):
        raise ConfigError(f"TASK_FEATURE_LENGTHS={dict(task_feature_lengths)} must be positive.")
    for name, value in (("TRAIN_STEPS", train_steps), ("BATCH_SIZE", batch_size),
                        ("train.num_microbatches", num_microbatches),
                        ("train.checkpoint_period", checkpoint_period),
                        ("train.log_period", log_period)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"{name}={value!r} must be a positive integer.")
    if optimizer_continuity not in OPTIMIZER_CONTINUITY:
        raise ConfigError(f"OPTIMIZER_CONTINUITY={optimizer_continuity!r} must be one of "
                          f"{OPTIMIZER_CONTINUITY}.")
    if partition_rules not in PARTITION_RULES:
        raise ConfigError(f"PARTITION_RULES={partition_rules!r} must be one of "
                          f"{sorted(PARTITION_RULES)} (see gin/partitioning/).")
    if batch_size % num_microbatches:
        raise ConfigError(f"BATCH_SIZE={batch_size} is not divisible by "
                          f"train.num_microbatches={num_microbatches}.")
    if isinstance(loss_normalizing_factor, str) and (
            loss_normalizing_factor != steps.NUM_REAL_TARGET_TOKENS):
        raise ConfigError(f"LOSS_NORMALIZING_FACTOR={loss_normalizing_factor!r}: use None, a "
                          f"number (T5X: 233472) or '{steps.NUM_REAL_TARGET_TOKENS}'.")


def check_mesh(mesh, batch_size: int, num_microbatches: int) -> None:
    """The batch (and each microbatch) must split evenly over the data axis and the hosts."""
    data = mesh.shape["data"]
    micro = batch_size // num_microbatches
    if micro % data:
        what = (f"BATCH_SIZE={batch_size}" if num_microbatches == 1 else
                f"the microbatch size BATCH_SIZE/num_microbatches={micro}")
        raise ConfigError(f"{what} is not divisible by the data axis of the mesh ({data} = "
                          f"{mesh.devices.size} devices / NUM_PARTITIONS={mesh.shape['model']}); "
                          f"use a multiple of {data}.")
    if batch_size % jax.process_count():
        raise ConfigError(f"BATCH_SIZE={batch_size} is not divisible by the "
                          f"{jax.process_count()} hosts.")


def _load_initial(path: str, model: EncoderDecoderModel, optimizer, layout,
                  continuity: str) -> tuple[TrainState, int]:
    """Fine-tuning start: parameters from any supported checkpoint; step and Adafactor state
    either restored (fidelity with Mesh-TF's continued step) or reset to a fresh step 0."""
    from t0_jax.convert import auto  # noqa: PLC0415 - only needed when fine-tuning
    from t0_jax.convert import layout as convert_layout  # noqa: PLC0415

    fmt, _ = auto.resolve(path)
    shardings = layout.shardings.params if fmt == "t0_jax" else None  # straight into shards
    try:
        loaded = auto.load_checkpoint(path, config=model.config, shardings=shardings,
                                      with_optimizer_state=continuity == "restore"
                                      and not checkpoints.has_trainer_opt_state(path))
    except convert_layout.CheckpointMismatchError as e:
        raise _checkpoint_mismatch(path, model.config, e) from e
    start = int(loaded.step or 0) if continuity == "restore" else 0
    opt_state = None
    if continuity == "restore":
        target = abstract_with_shardings(layout).opt_state
        if checkpoints.has_trainer_opt_state(path):
            opt_state = checkpoints.restore_opt_state(path, target)
        elif getattr(loaded, "opt_state", None):
            if model.config.scan_layers:
                raise ConfigError(
                    f"INITIAL_CHECKPOINT_PATH={path}: its Adafactor state is per layer and "
                    "cannot continue in scanned layers (the two forms factor their slots "
                    "differently); set SCAN_LAYERS=False (experiments/t0_continue_step.gin "
                    "does) or OPTIMIZER_CONTINUITY='reset'.")
            opt_state = adafactor_lib.state_from_t5x(
                loaded.opt_state["param_states"], start, loaded.params, model.params_axes())
    log.info("initial checkpoint %s (%s): step %d, optimizer state %s", path,
             getattr(loaded, "source_format", "?"), start,
             "restored" if opt_state is not None else "fresh")
    params = _in_model_form(loaded.params, model.config.scan_layers)
    try:
        state = state_from_params(params, optimizer, layout, step=start, opt_state=opt_state)
    except ValueError as e:  # names the first parameter or slot that differs
        raise ConfigError(f"INITIAL_CHECKPOINT_PATH={path}: {e}") from e
    return state, start


def _in_model_form(params, scanned: bool):
    """Per-layer (T5X, Hugging Face) or scanned parameters in the model's form (SCAN_LAYERS)."""
    return stacking.scan_params(params) if scanned else stacking.unscan_params(params)


def _checkpoint_mismatch(path: str, config: T5Config, error: Exception) -> ConfigError:
    """The loader's list of differences, shortened to its first lines, with the gin fix."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    kinds = ("wrong shape", "unexpected", "missing")  # a wrong shape tells the size best
    diffs = sorted((x for x in lines[1:] if x.startswith(kinds)),
                   key=lambda x: [x.startswith(k) for k in kinds].index(True))
    shown = "; ".join(diffs[:3]) + (f"; … {len(diffs) - 3} more" if len(diffs) > 3 else "")
    return ConfigError(
        f"INITIAL_CHECKPOINT_PATH={path} holds a different model than MODEL_CONFIG "
        f"(emb_dim={config.emb_dim}, num_heads={config.num_heads}, mlp_dim={config.mlp_dim}, "
        f"layers={config.num_encoder_layers}+{config.num_decoder_layers}, vocab_size="
        f"{config.vocab_size}): {shown or lines[0]}. Give the models/*.gin file of the "
        "checkpoint's size after the experiment file (T0-3B: models/t5_1_1_lm100k_xl.gin, "
        "T0-11B: models/t5_1_1_lm100k_xxl.gin); nothing was loaded.")


def _vocab_reference(model_dir: str, vocab_path: Optional[str]) -> Optional[str]:
    """Copy the vocabulary into MODEL_DIR once; step directories refer to it relatively, so a
    step directory (or the whole MODEL_DIR, moved) stands alone for `t0-score`. Either may be
    local or on object storage."""
    vocab_path = vocab_path or os.environ.get("T0_VOCAB_PATH")
    if not vocab_path or not _is_file(vocab_path):
        return None
    if jax.process_index() == 0:
        dst = storage.join(model_dir, "spiece.model")
        if not storage.exists(dst):
            storage.copy(vocab_path, dst)
    return "../spiece.model"


def _is_file(path: str) -> bool:
    """A readable file; an unreachable store (T5's gs:// default offline) counts as absent."""
    try:
        return storage.exists(path) and not storage.isdir(path)
    except Exception:  # noqa: BLE001 - no network or no credentials: no vocabulary to copy
        return False


class _Window:
    """Sums of per-step metrics between two log lines."""

    def __init__(self):
        self.sums: dict = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.steps += 1


def _log_interval(writer, progress, window: _Window, step: int, *, step_flops: float,
                  num_devices: int, peak_flops: Optional[float]) -> dict:
    seconds = max(time.perf_counter() - window.start, 1e-9)
    tokens = window.sums.get("input_tokens", 0.0) + window.sums.get("target_tokens", 0.0)
    scalars = metrics_lib.summarize(window.sums, seconds=seconds, steps=window.steps,
                                    tokens=tokens, step_flops=step_flops,
                                    num_devices=num_devices, peak_flops=peak_flops)
    writer.write(step, scalars)
    return scalars


def train(*, model_dir: str, train_steps: int, task_feature_lengths: Mapping[str, int],
          batch_size: int, model_config: T5Config,
          batch_source: Union[BatchSource, BatchFunction, None] = None,
          initial_checkpoint_path: Optional[str] = None, vocab_path: Optional[str] = None,
          seed: int = 0, num_partitions: int = 1, partition_rules: str = "default",
          learning_rate: float = 1e-3, lr_schedule: str = "constant", warmup_steps: int = 10_000,
          optimizer_continuity: str = "reset", z_loss: float = 1e-4,
          loss_normalizing_factor=None, num_microbatches: int = 1,
          checkpoint_period: int = 1000, keep_checkpoints: Optional[int] = 3,
          async_checkpointing: bool = True, log_period: int = 100,
          peak_flops_per_device: Optional[float] = None,
          device_memory_bytes: Optional[int] = None, progress_bar: bool = True,
          config_text: str = "", step_callback: Optional[StepCallback] = None,
          lock_lease_seconds: float = preemption.DEFAULT_LEASE_S,
          dry_run: bool = False) -> Optional[TrainResult]:
    """Train (or fine-tune) until the absolute step `train_steps`; rerun to resume.

    `train_steps` is absolute: with `optimizer_continuity="restore"` from a checkpoint at step
    1,100,000, 12,200 fine-tuning steps end at 1,112,200. `batch_source`: a BatchSource
    (input_source.py; t0_jax.bin.train_data builds the seqio one) or a plain
    `(skip_batches, shard_index, num_shards) -> iterator` (resumed by replay).
    `step_callback(step, metrics)` runs after every step on every host. `dry_run` stops after
    the checks that need no data and no compute (arguments, mesh, layout, memory) and returns
    None.
    """
    model_config = T5Config.from_dict(model_config.to_dict())  # e.g. gin's subclass → plain
    check_arguments(train_steps=train_steps, batch_size=batch_size,
                    task_feature_lengths=task_feature_lengths,
                    optimizer_continuity=optimizer_continuity, partition_rules=partition_rules,
                    num_microbatches=num_microbatches, checkpoint_period=checkpoint_period,
                    log_period=log_period, loss_normalizing_factor=loss_normalizing_factor)
    try:
        mesh = mesh_lib.make_mesh(num_partitions)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    check_mesh(mesh, batch_size, num_microbatches)
    program = _program(model_config, mesh, partition_rules, learning_rate, lr_schedule,
                       warmup_steps)
    layout = program.layout
    sharding_lib.check_fits(layout.abstract.params, layout.shardings.params,
                            sharding_lib.shard_bytes(layout.abstract.opt_state,
                                                     layout.shardings.opt_state),
                            device_memory=device_memory_bytes)
    if dry_run:
        return None
    if batch_source is None:
        raise ConfigError("train() needs a batch_source (t0_jax.bin.train_data.train builds "
                          "one from MIXTURE_OR_TASK_NAME).")
    batch_source = as_batch_source(batch_source)
    root = storage.absolute(model_dir)  # a string: local, or gs://... (never pathlib)
    storage.makedirs(root)
    # SIGTERM from here on: finish the step, save, stop; a second trainer on MODEL_DIR stops here
    lock, watch = preemption.start_run(root, lock_lease_seconds)
    host0, ckpt = jax.process_index() == 0, None
    try:
        if host0 and config_text:
            storage.write_text(storage.join(root, "config.gin"), config_text)
        ckpt = checkpoints.Checkpointer(root, keep=keep_checkpoints,
                                        async_save=async_checkpointing)
        state, batches_consumed, resumed = _start_state(
            ckpt, program, initial_checkpoint_path, optimizer_continuity, seed, train_steps)
        return _loop(state, batches_consumed, ckpt=ckpt, program=program,
                     batch_source=batch_source, resumed=resumed, root=root,
                     train_steps=train_steps, seed=seed, z_loss=z_loss,
                     loss_normalizing_factor=loss_normalizing_factor,
                     num_microbatches=num_microbatches, checkpoint_period=checkpoint_period,
                     log_period=log_period, config_text=config_text,
                     vocab=_vocab_reference(root, vocab_path),
                     step_flops=batch_size * metrics_lib.flops_per_sequence(
                         layout.abstract.params, model_config, task_feature_lengths["inputs"],
                         task_feature_lengths["targets"]),
                     peak_flops=peak_flops_per_device or metrics_lib.peak_flops_per_device(),
                     progress_bar=progress_bar and host0, step_callback=step_callback,
                     watch=watch)
    finally:  # an in-flight save completes (and is then a good checkpoint); lock released
        preemption.end_run(lock, watch, ckpt)


class _Program:
    """Model, optimizer, layout and their compiled functions for one configuration.

    Cached per configuration (`_program`), so calling `train` again in the same process
    (resume after an interruption, notebooks, tests) reuses the compiled step and init.
    """

    def __init__(self, model_config, mesh, partition_rules, learning_rate, lr_schedule,
                 warmup_steps):
        self.model = EncoderDecoderModel(model_config)
        self.optimizer = make_optimizer(self.model.params_axes(), learning_rate, lr_schedule,
                                        warmup_steps)
        self.layout = state_layout(self.model, self.optimizer, mesh,
                                   PARTITION_RULES[partition_rules])
        self._init_fn = None

    @property
    def init_fn(self):
        if self._init_fn is None:
            self._init_fn = init_state_fn(self.model, self.optimizer, self.layout)
        return self._init_fn

    @functools.lru_cache(maxsize=4)
    def step_fn(self, seed, z_loss, loss_normalizing_factor, num_microbatches):
        return steps.jit_train_step(self.layout, model=self.model, optimizer=self.optimizer,
                                    dropout_seed=seed, z_loss=z_loss,
                                    loss_normalizing_factor=loss_normalizing_factor,
                                    num_microbatches=num_microbatches)


@functools.lru_cache(maxsize=4)
def _program(*key) -> _Program:
    return _Program(*key)


def _start_state(ckpt, program: "_Program", initial_checkpoint_path, continuity, seed,
                 train_steps):
    """Newest finalized checkpoint in MODEL_DIR, else the initial checkpoint, else random;
    returns (state, batches consumed, whether MODEL_DIR's checkpoint was restored)."""
    model, optimizer, layout = program.model, program.optimizer, program.layout
    latest = ckpt.latest_step()
    if latest is not None:
        state, meta = ckpt.restore(latest, abstract_with_shardings(layout))
        log.info("resuming from %s (%d batches consumed)",
                 checkpoints.step_directory(ckpt.directory, latest), meta["batches_consumed"])
        return state, int(meta["batches_consumed"]), True
    if initial_checkpoint_path:
        state, start = _load_initial(initial_checkpoint_path, model, optimizer, layout,
                                     continuity)
        if start >= train_steps:
            raise ConfigError(
                f"TRAIN_STEPS={train_steps} is an absolute step, but the initial checkpoint is "
                f"already at step {start} (OPTIMIZER_CONTINUITY='restore'); set TRAIN_STEPS to "
                f"{start} + the number of fine-tuning steps (T0: 1100000 + 12200 = 1112200).")
        return state, 0, False
    return program.init_fn(jax.random.PRNGKey(seed)), 0, False


def _out_of_memory(error, step: int, ckpt, program: "_Program", batch,
                   num_microbatches: int) -> OutOfMemoryError:
    """The run-time out-of-memory as one message: the newest checkpoint (kept) and the knobs
    that lower the step's memory (t0_jax.train.memory_advice)."""
    ckpt.wait()  # an in-flight save completes: it is the checkpoint a rerun resumes from
    last = ckpt.latest_step()
    mesh = program.layout.mesh
    rules = "fsdp" if tuple(program.layout.rules) == tuple(axes_lib.FSDP_RULES) else "default"
    advice = memory_advice.memory_advice(
        program.model.config, batch_size=int(batch["encoder_input_tokens"].shape[0]),
        num_microbatches=num_microbatches, num_partitions=mesh.shape["model"],
        partition_rules=rules, num_devices=mesh.devices.size)
    where = str(checkpoints.step_directory(ckpt.directory, last)) if last is not None else None
    return memory_advice.out_of_memory_error(error, step=step, last_checkpoint=where,
                                             advice=advice)


def _loop(state: TrainState, batches_consumed: int, *, ckpt, program: "_Program",
          batch_source: BatchSource, resumed: bool, root: str, train_steps: int,
          seed: int, z_loss: float, loss_normalizing_factor, num_microbatches: int,
          checkpoint_period: int, log_period: int, config_text: str, vocab: Optional[str],
          step_flops: float, peak_flops: Optional[float], progress_bar: bool,
          step_callback: Optional[StepCallback],
          watch: Optional[preemption.StopWatch] = None) -> TrainResult:
    layout, model = program.layout, program.model
    step = int(jax.device_get(state.step))
    if step >= train_steps:
        log.info("step %d already reached TRAIN_STEPS=%d; nothing to do", step, train_steps)
        return TrainResult(state, step, batches_consumed, {}, str(root))
    jitted = program.step_fn(seed, z_loss, loss_normalizing_factor, num_microbatches)
    feed, _ = input_feed.open_feed(batch_source, layout.mesh, model_dir=root, step=step,
                                   batches_consumed=batches_consumed, resumed=resumed)
    writer = metrics_lib.MetricsWriter(root, enabled=jax.process_index() == 0)
    progress = Progress(train_steps, step, enabled=progress_bar)
    window, scalars = _Window(), {}
    save_kwargs = dict(config=model.config, vocab=vocab, gin_config=config_text)
    try:
        while step < train_steps:
            batch = feed.next()
            if batch is None:
                raise RuntimeError(f"the input pipeline ended after {batches_consumed} batches, "
                                   f"before TRAIN_STEPS={train_steps}; use a repeating source.")
            try:
                state, step_metrics = jitted(state, batch)
                values = jax.device_get(step_metrics)
            except jax.errors.JaxRuntimeError as e:
                if not memory_advice.is_out_of_memory(e):
                    raise
                raise _out_of_memory(e, step + 1, ckpt, program, batch, num_microbatches) from e
            step, batches_consumed = step + 1, batches_consumed + 1
            finite_or_raise(values, step, ckpt, root)
            window.add(values)
            if step % log_period == 0 or step == train_steps:
                scalars = _log_interval(writer, progress, window, step, step_flops=step_flops,
                                        num_devices=layout.mesh.devices.size,
                                        peak_flops=peak_flops)
                window = _Window()
            save = functools.partial(save_checkpoint, state, step, batches_consumed, ckpt=ckpt,
                                     feed=feed, **save_kwargs)
            saved = step % checkpoint_period == 0 or step == train_steps
            if saved:
                with preemption.checkpoint_writes(ckpt, step):
                    save()
            progress.update(1, scalars)
            if step_callback is not None:
                step_callback(step, values)
            if watch is not None and watch.should_stop(step) and step < train_steps:
                preemption.stop_at(step, train_steps, ckpt, watch, None if saved else save)
    finally:
        feed.close()
        writer.close()
        progress.close()
    return TrainResult(state, step, batches_consumed, scalars, str(root))


def save_checkpoint(state: TrainState, step: int, batches_consumed: int, *, ckpt, feed,
                    config, vocab: Optional[str], gin_config: str) -> None:
    """Checks the parameters, writes every host's input position, then starts the (async)
    Orbax save of `state`: a step Orbax finalizes always has its input state on disk."""
    params_finite_or_raise(state, step, ckpt, ckpt.directory)
    feed.save(ckpt.directory, step, batches_consumed)
    ckpt.save(state, batches_consumed=batches_consumed, config=config, vocab=vocab,
              gin_config=gin_config)
