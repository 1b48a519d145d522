"""Which Beam runner `t0-cache` uses, chosen explicitly and said out loud.

apache-beam >= 2.68's `DirectRunner` first tries the Prism runner (its wrapper downloads a Go
binary from GitHub: offline that fails and falls back), then the FnApiRunner, and falls back to
the old `BundleBasedDirectRunner` (which ignores `direct_running_mode`) whenever the FnApiRunner
cannot take a pipeline; nothing says which one ran. So for local runs we build the FnApiRunner
ourselves:

    no --runner, --runner=DirectRunner or --runner=FnApiRunner
        -> FnApiRunner, mode `--direct_running_mode` (default below), `--direct_num_workers`
           workers (0: one per core). A pipeline it cannot run fails with Beam's error.
    any other --runner (DataflowRunner, FlinkRunner, SparkRunner, PrismRunner, ...)
        -> passed to Beam unchanged with the rest of the options.

Default: `multi_processing` with one worker process per core (`in_memory` on one core): the
work is Python (rendering, SentencePiece, protobuf), so threads would share one GIL; work units
are whole shards, so the gRPC data plane between processes carries only small summaries.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner")
MODES = ("in_memory", "multi_threading", "multi_processing")


@dataclasses.dataclass(frozen=True)
class RunnerChoice:
    name: str  # 'FnApiRunner' or the runner named in the options
    mode: Optional[str]  # FnApiRunner's running mode
    workers: Optional[int]
    options: tuple  # what PipelineOptions gets

    def describe(self) -> str:
        if self.mode is None:
            return self.name
        return f"{self.name} ({self.mode}, {self.workers} worker{'s' * (self.workers != 1)})"


def default_pipeline_options(num_workers: Optional[int] = None) -> list:
    """Local default: FnApiRunner, one worker process per core (in_memory on one core)."""
    workers = num_workers or os.cpu_count() or 1
    mode = "multi_processing" if workers > 1 else "in_memory"
    return ["--runner=FnApiRunner", f"--direct_num_workers={workers}",
            f"--direct_running_mode={mode}"]


def _value(options: Sequence[str], flag: str) -> Optional[str]:
    for option in options:
        if option.startswith(f"--{flag}="):
            return option.split("=", 1)[1]
    return None


def choose(options: Optional[Sequence[str]]) -> RunnerChoice:
    """The runner for `options` (default `default_pipeline_options()`); see the module doc."""
    options = list(options) if options else default_pipeline_options()
    runner = _value(options, "runner")
    if runner is not None and runner.split(".")[-1] not in LOCAL_RUNNERS:
        return RunnerChoice(runner, None, None, tuple(options))
    rest = [o for o in options if not o.startswith(("--runner=", "--direct_running_mode=",
                                                    "--direct_num_workers="))]
    workers = int(_value(options, "direct_num_workers") or 1) or (os.cpu_count() or 1)
    mode = _value(options, "direct_running_mode") or ("in_memory" if workers == 1
                                                      else "multi_processing")
    if mode not in MODES:
        raise ValueError(f"--direct_running_mode={mode} is not one of {', '.join(MODES)}.")
    if mode == "in_memory":
        workers = 1  # the FnApiRunner runs in_memory with one worker whatever is asked
    rest += [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    if _value(options, "default_sdk_harness_log_level") is None:
        rest.append("--default_sdk_harness_log_level=WARNING")  # workers' INFO lines are noise
    return RunnerChoice("FnApiRunner", mode, workers, tuple(rest))


def make_pipeline(choice: RunnerChoice):
    """A `beam.Pipeline` on the chosen runner (the FnApiRunner object itself for local runs)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(list(choice.options))
    if choice.mode is None:
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # as the DirectRunner builds it: without provision info, worker processes get no options
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=info), options=options)
