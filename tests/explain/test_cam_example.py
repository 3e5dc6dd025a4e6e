"""examples/cam_loss.py: a researcher's custom loss on compute_cam runs jitted on a mesh and trains."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_example_trains_a_custom_cam_loss_on_a_two_device_mesh():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, str(REPO / "examples" / "cam_loss.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 device(s); batch 8 at 32 px" in out.stdout
    steps = [tuple(map(float, m)) for m in re.findall(
        r"loss ([\d.]+) = cross-entropy ([\d.]+) \+ [\d.]+ x centre-of-mass ([\d.]+)", out.stdout)]
    assert len(steps) == 2
    (total1, ce1, cam1), (total2, _, _) = steps
    assert cam1 > 0 and abs(total1 - (ce1 + cam1)) < 1e-3  # the heatmap term is part of the objective
    assert total2 < total1  # one Adam step on the same batch lowered it (the CAM gradient itself: tests/explain/test_cam.py)
