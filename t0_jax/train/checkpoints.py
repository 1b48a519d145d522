"""Trainer checkpoints: one Orbax CheckpointManager step directory per save.

    MODEL_DIR/<step>/
      params/        PyTree (StandardSave): the parameter tree, T5X names
      opt_state/     PyTree (StandardSave): the t0_jax AdafactorState (count, v_row, v_col, v)
      model_config/  JSON: {"format", "config", "step", "vocab"}, the same dict
                     t0_jax.convert.t0_format writes, so `t0-score` and
                     `auto.load_checkpoint` read a step directory directly
      train_state/   JSON: {"step", "batches_consumed", "gin_config", "model_dir"}
    MODEL_DIR/input_state/<step>/host_<i>-of-<n>/
                     this host's input position at that step (t0_jax.train.input_feed), written
                     before the step's Orbax save and pruned with the steps Orbax drops

MODEL_DIR may be local or on object storage (`gs://...`): Orbax and tensorstore speak `gs://`
natively, and everything else here goes through `t0_jax.storage`, so the hosts of a pod meet
in one bucket. Paths are plain strings (`storage.join`), never `pathlib` (it would turn
`gs://b/run` into a local folder `gs:/b/run`).

Why this is safe to kill at any moment: Orbax writes a step into a temporary directory and
renames it only once every item (and, multi-host, every host's shards) is committed — on GCS,
where nothing can be renamed, into the step folder itself, finalized by a `commit_success.txt`
written last; the manager's `all_steps()`/`latest_step()` only see finalized steps, and
unfinished ones are deleted on the next start. Saves are asynchronous: the step's arrays are
copied off the devices and written on a background thread while training continues.
"""
from __future__ import annotations

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp

from t0_jax import storage
from t0_jax.convert import layout, t0_format
from t0_jax.model.config import T5Config
from t0_jax.train.state import TrainState

PARAMS = t0_format.PARAMS_ITEM
MODEL_CONFIG = t0_format.CONFIG_ITEM
OPT_STATE = "opt_state"
TRAIN_STATE = "train_state"
ITEMS = (PARAMS, OPT_STATE, MODEL_CONFIG, TRAIN_STATE)
INPUT_STATE = "input_state"


class Checkpointer:
    """Save / find / restore trainer steps in `model_dir` (keeps the newest `keep` steps)."""

    def __init__(self, model_dir: str | os.PathLike, keep: Optional[int] = 3,
                 async_save: bool = True):
        self.directory = storage.absolute(model_dir)
        remote = storage.is_remote(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not remote, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        if remote:
            self._drop_unfinished_steps()

    def _drop_unfinished_steps(self) -> None:
        """Object storage: delete step folders a killed save left without Orbax's commit file.

        Orbax's own cleanup cannot be used there: on GCS it takes EVERY folder of MODEL_DIR
        without a commit file for an unfinished step, input_state/ and train/ included.
        """
        if jax.process_index() != 0:
            return
        finished = set(self.all_steps())
        for name in storage.listdir(self.directory):
            if name.isdigit() and int(name) not in finished:
                storage.rmtree(storage.join(self.directory, name))

    def latest_step(self) -> Optional[int]:
        """Newest finalized step (partially written ones are never listed)."""
        self._manager.reload()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, *, config: T5Config, vocab: Optional[str],
             batches_consumed: int, gin_config: str = "") -> int:
        """Start an (async) save of `state` at its step; returns that step."""
        step = int(jax.device_get(state.step))
        meta = {"step": step, "batches_consumed": int(batches_consumed),
                "gin_config": gin_config, "model_dir": str(self.directory)}
        args = ocp.args.Composite(**{
            PARAMS: ocp.args.StandardSave(state.params),
            OPT_STATE: ocp.args.StandardSave(state.opt_state),
            MODEL_CONFIG: ocp.args.JsonSave(t0_format.config_json(config, step, vocab)),
            TRAIN_STATE: ocp.args.JsonSave(meta)})
        self._manager.save(step, args=args, force=True)
        self.prune_input_states(keep={step})
        return step

    def prune_input_states(self, keep: set) -> None:
        """Drop this host's input states of steps Orbax no longer keeps (older than the newest
        of `keep`; an in-flight save's step is in `keep`)."""
        root = storage.join(self.directory, INPUT_STATE)
        names = storage.listdir(root)  # [] when absent
        if not names:
            return
        kept = set(self.all_steps()) | set(keep)
        newest = max(kept) if kept else None
        for name in names:
            if name.isdigit() and int(name) not in kept and (newest is None or int(name) < newest):
                path = storage.join(root, name)
                clear_directory(storage.join(path, host_directory_name()), recreate=False)
                if not storage.is_remote(path):  # object stores have no empty folders
                    try:
                        os.rmdir(path)  # the last host out removes the step directory
                    except OSError:
                        pass

    def restore(self, step: int, target: TrainState) -> tuple[TrainState, dict]:
        """`target`: TrainState of ShapeDtypeStructs with shardings (arrays land in shards)."""
        args = ocp.args.Composite(**{
            PARAMS: ocp.args.StandardRestore(target.params),
            OPT_STATE: ocp.args.StandardRestore(target.opt_state),
            TRAIN_STATE: ocp.args.JsonRestore()})
        try:
            restored = self._manager.restore(step, args=args)
        except (ValueError, OSError) as e:  # tensorstore: missing/damaged files, other shapes
            raise layout.CheckpointFormatError(
                f"{step_directory(self.directory, step)} could not be restored "
                f"({str(e).splitlines()[0][:160]}...): its files are damaged or it was written "
                "for another model configuration. Use another MODEL_DIR, or move that step "
                "directory away to resume from an earlier one.") from e
        meta = dict(restored[TRAIN_STATE])
        step_arr = jax.device_put(jax.numpy.asarray(meta["step"], jax.numpy.int32),
                                  target.step.sharding)
        opt_state = type(target.opt_state)(*restored[OPT_STATE]) if isinstance(
            restored[OPT_STATE], (tuple, list)) else restored[OPT_STATE]
        return TrainState(step_arr, restored[PARAMS], opt_state), meta

    def wait(self) -> None:
        """Block until the in-flight save is finalized."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def step_directory(model_dir: str | os.PathLike, step: int) -> str:
    """Where a step lives (what to pass to `t0-score` as CHECKPOINT_PATH)."""
    return storage.join(storage.absolute(model_dir), str(step))


def host_directory_name() -> str:
    return f"host_{jax.process_index()}-of-{jax.process_count()}"


def input_state_directory(model_dir: str | os.PathLike, step: int) -> str:
    """This host's input-state directory for `step` (not created)."""
    return storage.join(storage.absolute(model_dir), INPUT_STATE, str(step),
                        host_directory_name())


def clear_directory(path: str, recreate: bool = True) -> None:
    """Remove `path` (a stale state from an interrupted run) and, by default, make it anew."""
    storage.rmtree(path)
    if recreate:
        storage.makedirs(path)


def has_trainer_opt_state(path: str | os.PathLike) -> bool:
    """A trainer step directory (vs a converted checkpoint) carries our Adafactor state."""
    return storage.isdir(storage.join(path, OPT_STATE))


def restore_opt_state(path: str | os.PathLike, target_opt_state):
    """Read only the `opt_state` item of a trainer step directory (restore continuity)."""
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler(
        **{OPT_STATE: ocp.StandardCheckpointHandler()}))
    restored = checkpointer.restore(storage.absolute(path), args=ocp.args.Composite(
        **{OPT_STATE: ocp.args.StandardRestore(target_opt_state)}))[OPT_STATE]
    if isinstance(restored, (tuple, list)) and not hasattr(restored, "_fields"):
        restored = type(target_opt_state)(*restored)
    return restored
