"""mammojax.platform: which detours and XLA flags a machine takes, and that taking them changes no number."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mammojax import platform
from mammojax.errors import MammojaxError

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: 17
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 {flags}

processor\t: 1
model name\t: should not be read
"""


def cpu_from(tmp_path, flags: str, family: int = 25) -> platform.CpuInfo:
    path = tmp_path / f"cpuinfo-{family}-{abs(hash(flags))}"
    path.write_text(CPUINFO.format(family=family, flags=flags))
    return platform.cpu_info(str(path))


def test_cpu_info_reads_the_first_processor_and_names_its_vector_extension(tmp_path):
    zen4 = cpu_from(tmp_path, "avx avx2 fma avx512f avx512bw avx512vl avx512_bf16")
    assert (zen4.model_name, zen4.family, zen4.model) == ("AMD EPYC 9R14", "25", "17")
    assert zen4.isa == "avx512" and zen4.bf16
    avx2 = cpu_from(tmp_path, "avx avx2 fma", family=23)
    assert avx2.isa == "avx2" and not avx2.bf16
    assert cpu_from(tmp_path, "avx512f avx2").isa == "other"  # AVX-512 without BW/VL, AVX2 without FMA
    missing = platform.cpu_info(str(tmp_path / "absent"))
    assert missing.isa == "other" and missing.model_name == "unknown CPU"


def test_an_unmeasured_platform_takes_no_detour_and_no_flag():
    assert platform.choices_for("gpu") == platform.Choices()
    assert platform.choices_for("tpu") == platform.Choices()
    assert platform.choices_for("cpu-other") == platform.Choices()
    for key, row in platform.MEASURED.items():  # every row names real items
        assert row.detours <= set(platform.DETOURS) and row.xla_flags <= set(platform.XLA_FLAG_VALUES), key


@pytest.mark.parametrize("value,expected", [
    ("auto", {"maxpool_phase_grad"}), ("", {"maxpool_phase_grad"}), ("none", set()),
    ("all", set(platform.DETOURS)), ("depthwise_taps", {"depthwise_taps"}),
    ("+depthwise_taps", {"maxpool_phase_grad", "depthwise_taps"}), ("-maxpool_phase_grad", set()),
    ("-depthwise_taps", {"maxpool_phase_grad"}),
])
def test_the_environment_overrides_the_measured_choice(monkeypatch, value, expected):
    monkeypatch.setenv("MAMMOJAX_DETOURS", value)
    assert platform._override("MAMMOJAX_DETOURS", platform.DETOURS, frozenset({"maxpool_phase_grad"})) == expected


@pytest.mark.parametrize("value,message", [("+depthwise_taps,maxpool_phase_grad", "not both"),
                                           ("fast_everything", "unknown name")])
def test_a_bad_override_names_the_variable_and_the_problem(monkeypatch, value, message):
    monkeypatch.setenv("MAMMOJAX_DETOURS", value)
    with pytest.raises(MammojaxError, match=f"MAMMOJAX_DETOURS.*{message}"):
        platform.detour_enabled("depthwise_taps")


def test_runtime_applies_this_cpus_flags_and_the_users_win():
    # A fresh interpreter: setup() runs once per process, before JAX loads.
    code = ("import os; from mammojax import runtime; runtime.setup(compilation_cache=False); "
            "print(os.environ['XLA_FLAGS'])")

    def flags(**env):
        full = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MAMMOJAX_XLA_FLAG_SET")}
        out = subprocess.run([sys.executable, "-c", code], env={**full, **env}, capture_output=True, text=True,
                             timeout=60, check=True)
        return out.stdout.strip()

    ynn = platform.XLA_FLAG_VALUES["ynn_fusion_off"]
    assert flags(MAMMOJAX_XLA_FLAG_SET="+ynn_fusion_off") == ynn
    assert flags(MAMMOJAX_XLA_FLAG_SET="none") == ""
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot"
    assert flags(MAMMOJAX_XLA_FLAG_SET="all", XLA_FLAGS=mine) == mine  # the user's own value stays


DETOURS_IN_FLOAT64 = """
import json, os
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from mammojax import models
from mammojax.models.resnet import BasicBlock, ResNet

model = ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=16, dtype=jnp.float64)
variables = jax.tree.map(lambda a: a.astype(jnp.float64), models.init_variables(model, jax.random.key(0), 64))
x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 64, 64, 1)), jnp.float64)
onehot = jax.nn.one_hot(jnp.array([0, 1, 1, 0]), 2)

def loss(params):
    (logits, _), updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1)), (logits, updates["batch_stats"])

results = {}
for setting in ("all", "none"):
    os.environ["MAMMOJAX_DETOURS"] = setting
    # A fresh jit per setting: the detours are chosen when the program is traced.
    (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    results[setting] = [np.atleast_1d(np.asarray(a)) for a in [value, *jax.tree.leaves(aux), *jax.tree.leaves(grads)]]
print(json.dumps([float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(results["all"], results["none"])]))
"""


def test_detours_compute_the_same_training_step_as_the_plain_program():
    """A ResNet's loss, logits, BatchNorm statistics and every gradient, detours on and off, in float64.

    The ResNet-18 layout at a quarter of the width and one block per stage (every
    kind of layer the detours touch, at a fraction of the compile time).

    At 64 px stage4 is 2x2, so the im2col route runs beside the BatchNorm sums
    and the max-pool gradient (the depthwise route has its own test in
    tests/models/test_small_map_conv.py). Why float64: in float32 the two
    programs round differently, and a rounding that flips a ReLU or a max-pool
    choice somewhere moves the early layers' gradients by ~1e-3 of their norm,
    on whichever route it happens (measured: the plain program itself moves by
    1e-2 when only an XLA flag changes), so float32 cannot tell a wrong route
    from bad luck. In float64 such flips do not happen here, and a wrong
    formula would differ at order 1; 1e-6 sits far from both (measured 3e-8:
    BatchNorm keeps its running statistics, and flax some constants, in float32).
    """
    out = subprocess.run([sys.executable, "-c", DETOURS_IN_FLOAT64], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "MAMMOJAX_DETOURS"})
    assert out.returncode == 0, out.stderr[-3000:]
    differences = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    assert len(differences) > 40  # loss, logits, running statistics and every parameter's gradient
    assert differences.max() < 1e-6, (differences.argmax(), differences.max())
    assert differences.max() > 0  # the two programs really differ (not one trace run twice)
