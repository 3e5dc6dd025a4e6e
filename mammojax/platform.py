"""What this machine is, and which measured speed detours and XLA flags it takes.

The XLA:CPU detours in ``mammojax.models`` (BatchNorm sums as dot products,
the phase-split max-pool gradient, im2col for tiny maps, shifted multiply-adds
for depthwise convolutions) and the default XLA CPU flags were each measured
against the plain formulation on particular machines; on another instruction
set or on an accelerator the plain program may win. ``MEASURED`` records, per
platform, which ones won there: ``scripts/bench_detours.py`` measures them
(and prints the row to paste here); ``docs/PERFORMANCE.md`` holds the figures
behind each row and the machine they came from.

A platform that no row describes takes no detour and no flag: the plain
program is XLA's own choice, and a detour is only taken where it was measured
faster. This module imports nothing heavy: ``runtime.setup`` reads it before
JAX loads.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from mammojax.errors import MammojaxError

# The detours, by the name MAMMOJAX_DETOURS and bench_detours.py use.
DETOURS = ("batchnorm_dot_sums", "maxpool_phase_grad", "small_map_im2col", "depthwise_taps")
# The default XLA flags, by name; a flag's value is in XLA_FLAG_VALUES.
XLA_FLAG_VALUES = {"ynn_fusion_off": "--xla_cpu_experimental_ynn_fusion_type="}


@dataclasses.dataclass(frozen=True)
class Choices:
    """What one platform takes: detour names and XLA flag names (keys of ``XLA_FLAG_VALUES``)."""

    detours: frozenset = frozenset()
    xla_flags: frozenset = frozenset()


# Measured rows (scripts/bench_detours.py; figures and machines in docs/PERFORMANCE.md).
MEASURED = {
    # 2-core AMD EPYC, AVX2 only (2026-11): every detour and the flag were chosen there.
    "cpu-avx2": Choices(detours=frozenset(DETOURS), xla_flags=frozenset({"ynn_fusion_off"})),
    # 2-core AMD EPYC family 26 model 2, AVX-512 + BF16 (2026-12-07): the BatchNorm dot sums lost
    # (0.96x on a training step); the other three detours and the flag won every round.
    "cpu-avx512": Choices(detours=frozenset({"maxpool_phase_grad", "small_map_im2col", "depthwise_taps"}),
                          xla_flags=frozenset({"ynn_fusion_off"})),
}


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    model_name: str
    family: str
    model: str
    flags: frozenset

    @property
    def isa(self) -> str:
        """The widest vector extension the choices are keyed by: ``avx512``, ``avx2`` or ``other``."""
        if {"avx512f", "avx512bw", "avx512vl"} <= self.flags:
            return "avx512"
        if {"avx2", "fma"} <= self.flags:
            return "avx2"
        return "other"

    def describe(self) -> str:
        """The line the speed tables are dated with: ``lscpu``'s model name, family, model, vector extension."""
        return f"{self.model_name}, family {self.family} model {self.model}, {self.isa}{' + bf16' if self.bf16 else ''}"

    @property
    def bf16(self) -> bool:
        """Native bfloat16 dot products (AVX512-BF16 or AMX): where bf16 compute can pay on a CPU."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)


@functools.lru_cache(maxsize=4)
def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """This CPU as ``lscpu`` names it (Linux ``/proc/cpuinfo``; elsewhere an unknown CPU with no flags)."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor describes them all
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return CpuInfo(model_name=fields.get("model name", "unknown CPU"), family=fields.get("cpu family", "?"),
                   model=fields.get("model", "?"), flags=frozenset(fields.get("flags", "").split()))


def platform_key(backend: str) -> str:
    """``cpu-avx512``, ``cpu-avx2``, ``cpu-other``, or the accelerator backend's name (``gpu``, ``tpu``)."""
    return f"cpu-{cpu_info().isa}" if backend == "cpu" else backend


def choices_for(key: str) -> Choices:
    """The measured row for a platform key; none measured: nothing (the plain program)."""
    return MEASURED.get(key, Choices())


def _override(env: str, names: tuple, chosen: frozenset) -> frozenset:
    """``auto`` / ``none`` / ``all`` / a list (``a,b``) / changes to the choice (``+a,-b``), from ``env``."""
    value = os.environ.get(env, "auto").strip()
    if value in ("", "auto"):
        return chosen
    if value == "none":
        return frozenset()
    if value == "all":
        return frozenset(names)
    items = [item.strip() for item in value.split(",") if item.strip()]
    signed = [item[0] in "+-" for item in items]
    if any(signed) and not all(signed):
        raise MammojaxError(f"{env}={value!r}: give names, or +name/-name changes, not both")
    unknown = sorted({item.lstrip("+-") for item in items} - set(names))
    if unknown:
        raise MammojaxError(f"{env}: unknown name(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    if not any(signed):
        return frozenset(items)
    result = set(chosen)
    for item in items:
        (result.add if item[0] == "+" else result.discard)(item[1:])
    return frozenset(result)


def detour_enabled(name: str) -> bool:
    """Whether the model code takes detour ``name`` on the backend JAX computes on (read at trace time).

    ``MAMMOJAX_DETOURS`` overrides the measured row (``none``, ``all``, names, or
    ``+name,-name``); bench_detours.py sets it to time each detour against the plain program.
    """
    if name not in DETOURS:
        raise MammojaxError(f"unknown detour {name!r}; valid: {', '.join(DETOURS)}")
    import jax

    return name in _override("MAMMOJAX_DETOURS", DETOURS, choices_for(platform_key(jax.default_backend())).detours)


def default_xla_flags() -> tuple[str, ...]:
    """The XLA CPU flags measured faster on this CPU (``MAMMOJAX_XLA_FLAG_SET`` overrides, like the detours).

    Chosen from the CPU alone: ``runtime.setup`` applies them before JAX loads,
    and they are CPU-backend flags that an accelerator backend does not read.
    """
    chosen = _override("MAMMOJAX_XLA_FLAG_SET", tuple(XLA_FLAG_VALUES), choices_for(platform_key("cpu")).xla_flags)
    return tuple(XLA_FLAG_VALUES[name] for name in sorted(chosen))
