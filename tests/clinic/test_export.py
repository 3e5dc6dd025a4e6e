"""`mammojax export`: a jax.export artifact that a fresh process runs with jax and numpy only,
giving mammojax's logits to 1e-5; `predict` runs from it as from the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clinic_support import OPERATING_POINTS, run_cli

# What a deployment would run: nothing of mammojax, only jax and numpy.
FRESH_PROCESS = r"""
import json, sys
import numpy as np
from jax import export
root, films = sys.argv[1], np.load(sys.argv[2])
meta = json.load(open(root + "/export.json"))
run = export.deserialize(bytearray(open(root + "/" + "logits.jax", "rb").read()))
outputs = [np.asarray(run.call(films[:n])) for n in (1, len(films))]  # the batch is symbolic
heat = export.deserialize(bytearray(open(root + "/heatmap.jax", "rb").read()))
maps, heat_logits = (np.asarray(a) for a in heat.call(films))
assert not [m for m in sys.modules if m == "mammojax" or m.startswith("mammojax.")], "mammojax was imported"
# The README's formula for the probability, from export.json alone.
margin = (outputs[1][:, 1] - outputs[1][:, 0]) / meta["temperature"] + meta["offset"]
np.savez(sys.argv[3], one=outputs[0], all=outputs[1], maps=maps, heat_logits=heat_logits,
         input_shape=np.array(meta["input"]["shape"][1:]), probability=1 / (1 + np.exp(-margin)))
"""


@pytest.fixture(scope="module")
def exported(clinic_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model"
    code, console = run_cli(["export", "--checkpoint", str(clinic_checkpoint), "--out", str(out)])
    assert code == 0, console
    return out


def _films(scorer, exam_inputs) -> np.ndarray:
    """Three preprocessed films: two DICOMs as predict reads them and a random one."""
    read = [scorer.read(exam_inputs["folder"] / name).image for name in ("wA_L_CC.dcm", "wA_R_MLO.dcm")]
    noise = np.random.default_rng(0).normal(size=read[0].shape).astype(np.float32)
    return np.stack([*read, noise])


def test_fresh_process_runs_the_export_without_mammojax(exported, clinic_checkpoint, exam_inputs, tmp_path):
    from mammojax.scoring import Scorer

    scorer = Scorer.from_checkpoint(clinic_checkpoint, batch_size=4)
    films = _films(scorer, exam_inputs)
    np.save(tmp_path / "films.npy", films)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(exported), str(tmp_path / "films.npy"),
                             str(tmp_path / "out.npz")], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    expected = scorer.logits(films)
    np.testing.assert_allclose(got["all"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["one"], expected[:1], atol=1e-5, rtol=0)
    # A probability moves at most 1 / (4 T) per unit of margin: logits within 1e-5 keep it within 1e-5.
    np.testing.assert_allclose(got["probability"], scorer.probability_of(expected), atol=1e-5, rtol=0)
    maps, logits = scorer.explain(films)
    np.testing.assert_allclose(got["heat_logits"], logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["maps"], maps, atol=1e-5, rtol=0)
    assert list(got["input_shape"]) == list(films.shape[1:])


def test_export_json_describes_preprocessing_and_operating_points(exported, clinic_checkpoint):
    meta = json.loads((exported / "export.json").read_text())
    assert meta["input"]["shape"] == ["batch", 32, 32, 1] and meta["input"]["dtype"] == "float32"
    assert meta["preprocessing"]["image_shape"] == [32, 32] and meta["preprocessing"]["steps"]
    assert meta["tau"] == OPERATING_POINTS["image"]["tau"]
    assert meta["temperature"] == OPERATING_POINTS["image"]["temperature"]
    assert meta["offset"] == OPERATING_POINTS["image"]["offset"]
    assert meta["operating_points"] == OPERATING_POINTS
    assert meta["class_names"] == ["normal", "lesion"] and meta["platforms"] == ["cpu", "cuda"]
    assert set(meta["files"]) == {"logits.jax", "heatmap.jax"}


def test_predict_from_the_export_equals_predict_from_the_checkpoint(exported, dicom_run, exam_inputs, tmp_path):
    import csv

    code, console = run_cli(["predict", "--checkpoint", str(exported), str(exam_inputs["folder"]),
                             "--out", str(tmp_path / "scores.csv"), "--dicom-out", str(tmp_path / "dicom")])
    assert code == dicom_run["code"] == 3, console  # partial: no_study.dcm gets no DICOM output, as from C
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert [(r["kind"], r["path"], r["exam"], r["decision"]) for r in rows] == \
        [(r["kind"], r["path"], r["exam"], r["decision"]) for r in dicom_run["rows"]]
    for mine, theirs in zip(rows, dicom_run["rows"]):
        assert float(mine["probability"]) == pytest.approx(float(theirs["probability"]), abs=2e-6)
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == sorted(p.name for p in dicom_run["out"].iterdir())


def test_damaged_exports_and_window_checkpoints_are_refused(exported, clinic_checkpoint, tmp_path):
    import shutil

    from mammojax.errors import CheckpointError, MammojaxError
    from mammojax.export import export_checkpoint, read_export

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    with open(broken / "logits.jax", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(CheckpointError, match="logits.jax is missing, truncated or altered"):
        read_export(broken)
    windowed = tmp_path / "windowed"
    shutil.copytree(clinic_checkpoint, windowed)
    meta = json.loads((windowed / "mammojax.json").read_text())
    meta["scoring"] = {"kind": "windows", "size": 16, "stride": 8, "top_k": 3}
    (windowed / "mammojax.json").write_text(json.dumps(meta))
    with pytest.raises(MammojaxError, match="only whole-film checkpoints export"):
        export_checkpoint(windowed, tmp_path / "out")
    with pytest.raises(MammojaxError, match="already exists"):
        export_checkpoint(clinic_checkpoint, exported)


def test_the_page_runs_from_the_export(exported, dicom_run, exam_inputs):
    from mammojax.app import logic

    assert logic.checkpoint_problem(exported) is None
    model = logic.load_app_model(exported, warm_up=False)
    name = "wA_R_CC.dcm"
    analysis = logic.analyse_upload(model, name, (exam_inputs["folder"] / name).read_bytes())
    row = next(r for r in dicom_run["rows"] if r["kind"] == "image" and Path(r["path"]).name == name)
    assert analysis.probability == pytest.approx(float(row["probability"]), abs=2e-6)
    facts = model.describe()
    assert facts["model"] == "resnet18" and facts["input_shape"] == [32, 32] and facts["tau"] == pytest.approx(0.41)
