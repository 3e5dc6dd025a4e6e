"""Speed and size of the model zoo: the measurements behind `mammojax benchmark`.

For each model and batch size we report

* parameters, and GFLOPs from XLA's own cost analysis of the compiled forward;
* compile time (first call, cold or from the persistent compilation cache) kept
  apart from steady-state latency, which is the median and p95 of timed runs
  after warm-up;
* latency per image for predict and for predict + Grad-CAM (one jitted program
  that returns both the probabilities and the heatmaps), and throughput;
* XLA's memory analysis of the compiled predict + Grad-CAM program (arguments,
  outputs and temporaries) and the process's peak resident memory.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Callable, Sequence

import numpy as np

from mammojax.data.preprocess import image_size_of, input_shape
from mammojax.scoring import FilmScoring, Scorer


@dataclasses.dataclass
class Timing:
    compile_s: float  # first call: trace + compile (or cache load) + one run
    median_ms: float  # per batch, steady state
    p95_ms: float

    def per_image_ms(self, batch_size: int) -> float:
        return self.median_ms / batch_size


@dataclasses.dataclass
class BenchmarkRow:
    model: str
    image_size: int | str  # S for S x S, else "HxW" (data.image_size's form)
    batch_size: int
    dtype: str
    params: int
    gflops_per_image: float
    predict: Timing
    predict_cam: Timing
    memory_mb: float  # XLA's estimate for predict + Grad-CAM (args + outputs + temps)
    peak_rss_mb: float
    quality: dict | None = None  # sensitivity/specificity/AUC when a checkpoint and dataset are given

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["predict_ms_per_image"] = self.predict.per_image_ms(self.batch_size)
        d["predict_cam_ms_per_image"] = self.predict_cam.per_image_ms(self.batch_size)
        d["throughput_img_s"] = 1000.0 * self.batch_size / self.predict.median_ms
        return d


def time_fn(fn: Callable[[], object], *, repeats: int, warmup: int = 2) -> Timing:
    """Times ``fn`` (which must block until its result is ready)."""
    start = time.perf_counter()
    fn()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return Timing(compile_s=compile_s, median_ms=statistics.median(samples), p95_ms=p95)


def xla_flops(compiled) -> float:
    """Flops of a compiled program according to XLA's cost analysis (0 if unknown)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returned one dict per device
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def xla_memory_mb(compiled) -> float:
    stats = compiled.memory_analysis()
    if stats is None:
        return float("nan")
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    return total / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_scorer(model, variables, *, batch_size: int, method: str = "gradcam", layer: str = "stage4"):
    """The :class:`mammojax.scoring.Scorer` whose compiled programs are timed (whole films, no TTA)."""
    return Scorer(model, variables, FilmScoring(cam_method=method, cam_layer=layer), batch_size=batch_size)


def benchmark_model(name: str, *, image_size, batch_size: int, dtype: str = "float32",
                    repeats: int = 10, seed: int = 0, variables=None, model=None) -> BenchmarkRow:
    """Measures one model at one batch size and input (S, "HxW" or (H, W); random weights unless given)."""
    import jax
    import jax.numpy as jnp

    from mammojax import models  # the zoo imports JAX and flax at the top, like the two lines above

    shape = input_shape(image_size)

    if model is None:
        model = models.create_model(name, dtype=dtype)
    if variables is None:
        variables = jax.jit(lambda key: models.init_variables(model, key, shape))(
            jax.random.key(seed))
    scorer = make_scorer(model, variables, batch_size=batch_size)
    # The scorer's own programs (what predict, explain and the page run), on its devices.
    predict, predict_cam = scorer.programs()
    variables = scorer.variables
    images = scorer.put(np.asarray(jax.random.normal(jax.random.key(seed + 1),
                                                     (scorer.batch_size, *shape, 1), jnp.float32)))

    flops = xla_flops(predict.lower(variables, images).compile())
    memory = xla_memory_mb(predict_cam.lower(variables, images).compile())

    def run_predict():
        return jax.block_until_ready(predict(variables, images))

    def run_predict_cam():
        return jax.block_until_ready(predict_cam(variables, images))

    t_predict = time_fn(run_predict, repeats=repeats)
    t_cam = time_fn(run_predict_cam, repeats=repeats)
    return BenchmarkRow(model=name, image_size=image_size_of(shape), batch_size=batch_size, dtype=dtype,
                        params=models.count_params(variables["params"]),
                        gflops_per_image=flops / batch_size / 1e9,
                        predict=t_predict, predict_cam=t_cam, memory_mb=memory,
                        peak_rss_mb=peak_rss_mb())


def format_table(rows: Sequence[BenchmarkRow]) -> str:
    """A plain-text table in the spirit of the paper's Table 4.1."""
    with_quality = any(r.quality for r in rows)
    header = ["model", "batch", "params (M)", "GFLOPs/img", "compile s", "predict ms/img (p95)",
              "+Grad-CAM ms/img (p95)", "img/s", "XLA mem MB"]
    if with_quality:
        header += ["sens", "spec", "AUC"]
    lines = []
    for r in rows:
        d = r.as_dict()
        cells = [r.model, str(r.batch_size), f"{r.params / 1e6:.2f}", f"{r.gflops_per_image:.2f}",
                 f"{r.predict.compile_s + r.predict_cam.compile_s:.1f}",
                 f"{d['predict_ms_per_image']:.1f} ({r.predict.p95_ms / r.batch_size:.1f})",
                 f"{d['predict_cam_ms_per_image']:.1f} ({r.predict_cam.p95_ms / r.batch_size:.1f})",
                 f"{d['throughput_img_s']:.1f}", f"{r.memory_mb:.0f}"]
        if with_quality:
            q = r.quality or {}
            cells += [_fmt(q.get("sensitivity")), _fmt(q.get("specificity")), _fmt(q.get("auc"))]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate, the ceiling we compare against."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    timing = time_fn(lambda: jax.block_until_ready(mm(a, b)), repeats=repeats)
    return 2 * n**3 / (timing.median_ms / 1000.0) / 1e9
