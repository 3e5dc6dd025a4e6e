"""The preparation's chunks as an Apache Beam pipeline (optional extra ``mammojax[beam]``).

The same chunk function as the local process pool
(:func:`mammojax.data.preparation.write_chunk`), so the output is identical.
Locally the DirectRunner runs it in ``workers`` processes; any other runner
comes from ``beam_options``, e.g.::

    mammojax data prepare --dataset rsna --data-dir /shared/rsna --out /shared/prepared/rsna-1024x832 \\
        --image-size 1024x832 --runner beam \\
        --beam-options="--runner=FlinkRunner --flink_master=HOST:8081 --environment_type=PROCESS ..."

On a cluster, ``--data-dir`` and ``--out`` must be paths every worker sees
(a shared filesystem mounted at the same place), and each worker needs
mammojax installed. Publishing (TFDS metadata, shard names) happens on the
launching machine once the pipeline has finished.
"""

from __future__ import annotations

import shlex
from typing import Sequence

from mammojax.errors import MammojaxError


def run_beam(chunks: list[dict], *, workers: int, beam_options: Sequence[str] = ()) -> None:
    """Runs :func:`write_chunk` over ``chunks`` on Beam and waits for the pipeline to finish."""
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise MammojaxError("--runner beam needs Apache Beam: pip install 'mammojax[beam]' "
                            "(or use the default local runner)") from None
    from mammojax.data.preparation import write_chunk

    args = [arg for option in beam_options for arg in shlex.split(option)]
    if not any(arg.startswith("--runner") for arg in args):
        args += ["--runner=DirectRunner", f"--direct_num_workers={workers}",
                 "--direct_running_mode=multi_processing" if workers > 1 else "--direct_running_mode=in_memory"]
    options = PipelineOptions(args)
    with beam.Pipeline(options=options) as pipeline:
        (pipeline
         | "chunks" >> beam.Create(chunks, reshuffle=True)
         | "decode" >> beam.Map(write_chunk))
