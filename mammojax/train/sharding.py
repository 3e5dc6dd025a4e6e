"""Data parallelism with ``jit``: one mesh axis ``data`` over every device.

The train state is replicated on every device and each batch is split along
its first dimension, so XLA inserts the gradient all-reduce itself. With
several processes (hosts) each one feeds only its own slice of the global
batch; :func:`global_batch` assembles the slices into one global array.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mammojax.errors import ConfigError, MammojaxError

DATA_AXIS = "data"

# Environment variables read by maybe_initialize_distributed (besides JAX's own
# cluster auto-detection, which jax.distributed.initialize() does with no args).
ENV_COORDINATOR = "MAMMOJAX_COORDINATOR"
ENV_NUM_PROCESSES = "MAMMOJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "MAMMOJAX_PROCESS_ID"


def maybe_initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
    """Joins a multi-process run when asked to; returns whether it did.

    Arguments win over ``MAMMOJAX_COORDINATOR`` / ``MAMMOJAX_NUM_PROCESSES`` /
    ``MAMMOJAX_PROCESS_ID``. Must run before anything touches a JAX device.
    On CPU the cross-process collectives need gloo, which is switched on here.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = int(os.environ[ENV_PROCESS_ID])
    if not coordinator:
        if num_processes not in (None, 1):
            raise ConfigError("--num-processes > 1 needs --coordinator HOST:PORT")
        return False
    if num_processes is None or process_id is None:
        raise ConfigError("a multi-process run needs --coordinator, --num-processes and --process-id")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id {process_id} is outside 0..{num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    if jax.default_backend() == "cpu":
        # gloo builds its context at the first collective and gives up after 30 s; build it now,
        # while the processes are in step, not after one of them spent longer importing TensorFlow.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("mammojax: processes joined")
    return True


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """First dimension split over ``data``; the rest whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, *, name: str = "train.batch_size") -> None:
    """The global batch must split evenly over devices (and hence over processes)."""
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(
            f"{name}={batch_size} is not divisible by the {n} devices in use; "
            f"choose a multiple of {n}")


def local_batch_size(global_batch: int) -> int:
    """This process's share of a global batch."""
    count = jax.process_count()
    if global_batch % count:
        raise MammojaxError(f"batch {global_batch} does not split over {count} processes")
    return global_batch // count


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's host-local slice into globally sharded arrays."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def process_slice(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous slice of a batch every process holds in full."""
    index, count = jax.process_index(), jax.process_count()
    if count == 1:
        return batch
    n = len(next(iter(batch.values())))
    per = n // count
    return {k: v[index * per:(index + 1) * per] for k, v in batch.items()}
