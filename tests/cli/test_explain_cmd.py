"""`mammojax explain` end to end on a small checkpoint and files written here."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image

from mammojax import models
from mammojax.checkpoint import load_checkpoint, make_meta, save_checkpoint
from mammojax.cli import main
from mammojax.config import base_config
from mammojax.data.synthetic import make_phantom
from mammojax.explain.cam import compute_cam, upsample_cam
from mammojax.explain.explain import Explainer

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = base_config()
    config.data.image_size = SIZE
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(0), SIZE)
    directory = tmp_path_factory.mktemp("ckpt") / "ckpt"
    save_checkpoint(directory, variables, make_meta(config, tau=0.3, temperature=2.0))
    return directory


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    square, _, _ = make_phantom(rng, size=96, positive=True)
    Image.fromarray(np.round(square * 65535).astype(np.uint16)).save(tmp_path / "square.png")
    wide, _, _ = make_phantom(rng, size=96, positive=False, laterality="R")
    Image.fromarray(np.round(wide[:70] * 255).astype(np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return [tmp_path / "square.png", tmp_path / "broken.png", tmp_path / "wide.png"]


def test_explain_writes_outputs_and_an_error_line_for_a_bad_file(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", "--checkpoint", str(checkpoint), *map(str, images), "--out", str(out), "--json"])
    assert code == 3  # one input skipped, the others explained
    captured = capsys.readouterr()
    skipped = [l for l in captured.err.splitlines() if l.startswith("mammojax: skipped")]
    assert len(skipped) == 1 and skipped[0].startswith(f"mammojax: skipped {images[1]}: ")
    stdout_lines = [json.loads(l) for l in captured.out.splitlines() if l.startswith("{")]
    lines = [json.loads(l) for l in (out / "explanations.jsonl").read_text().splitlines()]
    assert lines == stdout_lines and len(lines) == 3
    assert "error" in lines[1] and "broken.png" in lines[1]["error"]
    ckpt = load_checkpoint(checkpoint)
    explainer = Explainer(ckpt)
    for line, stem, shape in ((lines[0], "square", (96, 96)), (lines[2], "wide", (70, 96))):
        cam = np.load(out / f"{stem}_cam.npy", allow_pickle=False)
        assert cam.dtype == np.float32 and cam.shape == (SIZE, SIZE)
        assert 0.0 <= cam.min() and cam.max() <= 1.0
        assert line["original_shape"] == list(shape)
        # The .npy is the raw map; the peaks are those of the map over the breast.
        explanation = explainer.explain_path(out.parent / f"{stem}.png")
        np.testing.assert_allclose(cam, explanation.heatmap, atol=1e-6)
        assert line["heatmap_masked"] is True and explanation.breast[tuple(line["peak_input"])]
        assert explanation.breast_original[tuple(line["peak_original"])]
        assert line["probability_of"] == "lesion" and line["tau"] == pytest.approx(ckpt.tau)
        assert 0 <= line["peak_original"][0] < shape[0] and 0 <= line["peak_original"][1] < shape[1]
        assert 0.0 < line["probability"] < 1.0
        assert line["decision"] == ("lesion" if line["probability"] >= ckpt.tau else "normal")
        with Image.open(out / f"{stem}_overlay.png") as im:
            assert im.size == (shape[1], shape[0]) and im.mode == "RGB"  # original resolution
        with Image.open(out / f"{stem}_panel.png") as im:
            assert im.mode == "RGB" and im.size[0] > im.size[1]


def test_explain_without_an_image_or_with_only_a_bad_one_fails(checkpoint, images, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["explain", "--checkpoint", str(checkpoint), str(notes), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mammojax: error: no image in {notes}")
    assert not out.exists()  # refused before anything was written

    assert main(["explain", "--checkpoint", str(checkpoint), str(images[1]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"mammojax: skipped {images[1]}: ")
    assert err[-1] == "mammojax: error: could not explain the input"


def test_explain_refuses_to_overwrite_unless_asked(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["explain", "--checkpoint", str(checkpoint), str(images[0]), "--out", str(out)]
    assert main(args) == 0
    before = (out / "square_cam.npy").stat().st_mtime_ns
    assert main(args) != 0
    assert "already exists" in capsys.readouterr().err
    assert (out / "square_cam.npy").stat().st_mtime_ns == before
    assert main(args + ["--overwrite", "--method", "gradcam++"]) == 0
    assert json.loads((out / "explanations.jsonl").read_text())["method"] == "gradcam++"


def test_explainer_matches_compute_cam_and_the_temperature(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    explainer = Explainer(ckpt, batch_size=2)
    images = np.asarray(jax.random.normal(jax.random.key(5), (3, SIZE, SIZE, 1)))
    heatmaps, probabilities = explainer.heatmaps(images)  # 3 images: one padded batch
    expected, logits = compute_cam(ckpt.model, ckpt.variables, images)
    np.testing.assert_allclose(heatmaps, upsample_cam(expected, SIZE), atol=1e-5)
    np.testing.assert_allclose(probabilities, jax.nn.softmax(logits / 2.0)[:, 1], atol=1e-5)
    np.testing.assert_allclose(explainer.probabilities(images), probabilities, atol=1e-5)


def test_explain_evaluate_on_synthetic_phantoms(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["explain", "--checkpoint", str(checkpoint), "--out", str(out), "--evaluate",
                 "--dataset", "synthetic", "--data-dir", str(tmp_path / "synth"),
                 "--option", "count=8", "--option", "size=64", "--tolerance", "2", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    assert "pointing game: peak in the lesion" in captured.err and "a uniform map over the breast" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])["localization"]
    report = json.loads((out / "localization.json").read_text())
    assert report["summary"] == {**summary}
    assert summary["images"] == len(report["images"]) == 4  # half of 8 phantoms are positive
    assert 0 < summary["pointing_chance"] < 0.5
    for row in report["images"]:
        assert row["hit"] in (0.0, 1.0) and 0 <= row["mass_inside"] <= 1
    assert main(["explain", "--checkpoint", str(checkpoint), "--out", str(out)]) != 0  # nothing to do


def test_evaluate_needs_a_dataset(checkpoint, tmp_path, capsys):
    assert main(["explain", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x"), "--evaluate"]) != 0
    assert "--dataset" in capsys.readouterr().err
