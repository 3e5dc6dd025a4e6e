"""The preparation's chunks as an Apache Beam pipeline (optional extra ``mammojax[beam]``).

The same chunk function as the local process pool
(:func:`mammojax.data.preparation.write_chunk`, handed to :func:`run_beam`), so
the output is identical.
Locally the DirectRunner runs it in ``workers`` processes; any other runner
comes from ``beam_options``, e.g.::

    mammojax data prepare --dataset rsna --data-dir /shared/rsna --out /shared/prepared/rsna-1024x832 \\
        --image-size 1024x832 --runner beam --workers 64 \\
        --beam-options="--runner=FlinkRunner --flink_master=HOST:8081 --environment_type=PROCESS ..."

On a cluster, ``--data-dir`` and ``--out`` must be paths every worker sees
(a shared filesystem mounted at the same place: chunks are written with plain
file operations, not to object storage), and each worker needs mammojax and
Apache Beam installed. Publishing (TFDS metadata, shard names) happens on the
launching machine once the pipeline has finished.
"""

from __future__ import annotations

import shlex
from typing import Callable, Sequence

from mammojax.errors import MammojaxError

DIRECT_RUNNER = "DirectRunner"


def require_beam():
    """The ``apache_beam`` module, or the one-line error saying how to get it."""
    try:
        import apache_beam
    except ImportError:
        raise MammojaxError("--runner beam needs Apache Beam: pip install 'mammojax[beam]' "
                            "(or use the default local runner)") from None
    return apache_beam


def run_beam(write_chunk: Callable[[dict], dict], chunks: list[dict], *, workers: int,
             beam_options: Sequence[str] = ()) -> None:
    """Runs ``write_chunk`` (the preparation's chunk function) over ``chunks`` on Beam and waits for it.

    The function comes from the caller, so this runner knows nothing of the
    preparation; Beam pickles it by reference (a module-level function), and
    each worker imports :mod:`mammojax.data.preparation` to run it.
    """
    beam = require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(pipeline_args(beam_options, workers=workers))
    with beam.Pipeline(options=options) as pipeline:
        (pipeline
         # reshuffle: the chunks spread over the workers instead of staying in one bundle
         | "chunks" >> beam.Create(chunks, reshuffle=True)
         | "decode" >> beam.Map(write_chunk))


def pipeline_args(beam_options: Sequence[str], *, workers: int) -> list[str]:
    """The user's Beam options (each item may hold several, shell-quoted) with local defaults added.

    Without a ``--runner`` the DirectRunner runs the chunks in ``workers``
    processes (``multi_processing``: separate interpreters, so decoding is
    not serialised by the GIL) and its worker processes log warnings only,
    as the local runner does; whatever the user set is kept.
    """
    args = [arg for option in beam_options for arg in shlex.split(option)]
    given = {_option_name(arg) for arg in args if arg.startswith("--")}
    runner = next((_option_value(args, i) for i, arg in enumerate(args) if _option_name(arg) == "runner"),
                  DIRECT_RUNNER)
    if "runner" not in given:
        args.append(f"--runner={DIRECT_RUNNER}")
    if runner.split(".")[-1].lower() in ("directrunner", "direct"):
        defaults = {"direct_num_workers": str(workers),
                    "direct_running_mode": "multi_processing" if workers > 1 else "in_memory",
                    "default_sdk_harness_log_level": "WARNING"}
        args += [f"--{name}={value}" for name, value in defaults.items() if name not in given]
    return args


def _option_name(arg: str) -> str:
    return arg[2:].split("=", 1)[0]


def _option_value(args: list[str], i: int) -> str:
    """The value of ``args[i]``: after its ``=``, or the next argument (``--runner FlinkRunner``)."""
    if "=" in args[i]:
        return args[i].split("=", 1)[1]
    return args[i + 1] if i + 1 < len(args) else ""
