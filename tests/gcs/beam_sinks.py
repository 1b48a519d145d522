"""A tiny Beam pipeline that writes text and TFRecord shards, run as a subprocess by
tests/gcs/test_emulator.py:

    python tests/gcs/beam_sinks.py OUTPUT_PREFIX N [beam options...]

Each line is "<i>\\t<pid of the process that rendered it>", so the test can tell that Beam's
multi_processing workers (not this driver) did the work. The runner is the FnApiRunner built
here with the pipeline options in its provision info, as Beam's DirectRunner builds it after its
Prism attempt: no Prism download, `direct_running_mode` honoured, options reach the workers.
Prints "DRIVER <pid> RUNNER <class name>".
"""
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle


def fn_api_runner(options):
    """The FnApiRunner with `options` handed to its workers (empty otherwise)."""
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def main(argv):
    out, n, beam_args = argv[0], int(argv[1]), argv[2:]
    options = PipelineOptions(beam_args)
    runner = fn_api_runner(options)
    with beam.Pipeline(runner=runner, options=options) as pipeline:
        lines = (pipeline
                 | beam.Create(list(range(n)), reshuffle=True)
                 | beam.Map(lambda i: f"{i}\t{os.getpid()}"))
        lines | "text" >> beam.io.WriteToText(f"{out}/text", num_shards=2)
        (lines
         | beam.Map(lambda line: line.split("\t")[0].encode())
         | "tfrecord" >> beam.io.WriteToTFRecord(f"{out}/records", num_shards=2))
    print(f"DRIVER {os.getpid()} RUNNER {type(runner).__name__}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
