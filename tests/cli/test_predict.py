"""`mammojax predict` on a tiny checkpoint and files written here."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from eval_support import TAU, make_tiny_checkpoint
from PIL import Image

from mammojax.cli import main
from mammojax.predict import collect_inputs, patient_from_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best")


def _write_png(path: Path, seed: int, size=(48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    pixels = (rng.random(size) * 200 + 20).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    _write_png(folder / "P001_L_CC.png", 1)
    _write_png(folder / "P001_R_MLO.png", 2)
    _write_png(folder / "sub" / "P002_L_CC.png", 3)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (folder / "notes.txt").write_text("ignored: not an image")
    return folder


def test_patient_ids_from_names_never_from_headers():
    assert patient_from_path("/x/P001_L_CC.png") == "P001"
    assert patient_from_path("/x/P001-R-MLO.dcm") == "P001"
    assert patient_from_path("/x/P001_MLO.dcm") == "P001"
    assert patient_from_path("/x/R.png") == "R"  # nothing left to strip


def test_collect_inputs_folders_manifest_and_missing(tmp_path, image_folder):
    found = collect_inputs([image_folder])
    assert [Path(i.path).name for i in found] == ["P001_L_CC.png", "P001_R_MLO.png", "broken.png",
                                                  "P002_L_CC.png"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,patient_id\nimages/P001_L_CC.png,woman-7\n")
    items = collect_inputs([manifest])
    assert items[0].patient_id == "woman-7" and Path(items[0].path).is_file()
    from mammojax.errors import MammojaxError

    with pytest.raises(MammojaxError, match="input not found"):
        collect_inputs([tmp_path / "nope.png"])


def test_predict_cli_scores_files_and_reports_bad_ones(checkpoint, image_folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    runner = CliRunner()
    result = runner.invoke(main_cli(), ["predict", "--checkpoint", str(checkpoint), "--batch-size", "2",
                                        "--out", str(out), str(image_folder)])
    assert result.exit_code == 3, result.output  # some inputs skipped, the rest scored
    rows = list(csv.DictReader(out.open()))
    images = [r for r in rows if r["kind"] == "image"]
    errors = [r for r in rows if r["kind"] == "error"]
    patients = {r["patient_id"]: r for r in rows if r["kind"] == "patient"}
    assert len(images) == 3 and len(errors) == 1 and errors[0]["path"].endswith("broken.png")
    assert errors[0]["error"]
    assert "label" not in rows[0]  # no ground truth here: nothing may read as one
    for r in images + list(patients.values()):
        # The decision is the class called at tau, by the name the training task gave it.
        assert r["decision"] == ("lesion" if float(r["probability"]) >= TAU else "normal")
    p001 = [float(r["probability"]) for r in images if r["patient_id"] == "P001"]
    assert float(patients["P001"]["probability"]) == pytest.approx(max(p001), abs=1e-6)
    assert patients["P001"]["n_images"] == "2" and set(patients) == {"P001", "P002"}
    assert "3 scored, 1 failed" in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("mammojax: skipped")]
    assert skipped == [f"mammojax: skipped {errors[0]['path']}: {errors[0]['error']}"]

    # Through the real entry point: one clear error line, non-zero exit.
    code = main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), str(image_folder)])
    err = capsys.readouterr().err
    assert code != 0 and "already exists" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert len(list(csv.DictReader(out.open()))) == len(rows)  # untouched


def test_predict_cli_jsonl_to_stdout(checkpoint, image_folder):
    result = CliRunner().invoke(main_cli(), ["predict", "--checkpoint", str(checkpoint), "--json",
                                             str(image_folder / "P001_L_CC.png")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in io.StringIO(result.stdout) if line.strip()]
    assert [r["kind"] for r in rows] == ["image", "patient"]
    assert 0.0 <= rows[0]["probability"] <= 1.0


def test_predict_on_inputs_without_an_image_fails_before_jax_or_output(tmp_path):
    """No image at all is a usage error: one line, status 2, no --out file, JAX never loaded."""
    import subprocess
    import sys

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("not an image")
    (folder / "b.csv.bak").write_text("path\nx.png\n")
    out = tmp_path / "scores.csv"
    probe = ("import sys; from mammojax.cli import main; "
             f"code = main(['predict', '--checkpoint', 'any', '--out', {str(out)!r}, {str(folder)!r}]); "
             "print(code, 'jax' in sys.modules)")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    assert result.stdout.split() == ["2", "False"], result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mammojax: error: no image in {folder}"), result.stderr
    assert not out.exists()


def test_predict_exit_status_when_nothing_is_readable(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    out = tmp_path / "scores.csv"
    code = main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), str(broken)])
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("mammojax: warning:")]  # a phantom-trained checkpoint
    assert code == 2
    assert err[0].startswith(f"mammojax: skipped {broken}: ") and err[-1] == "mammojax: error: could not score the input"
    assert [r["kind"] for r in csv.DictReader(out.open())] == ["error"]  # the row says why


def main_cli():
    """The click group, so CliRunner captures stdout and stderr separately."""
    from mammojax.cli import cli

    return cli


def test_score_records_without_cache_skips_unreadable(checkpoint, image_folder):
    from mammojax.checkpoint import load_checkpoint
    from mammojax.data.records import Record
    from mammojax.evaluation.evaluate import score_records
    from mammojax.scoring import Scorer

    paths = sorted(image_folder.rglob("*.png"))
    records = [Record(path=str(p), label=i % 2, patient_id=patient_from_path(p), laterality="L")
               for i, p in enumerate(paths)]
    scorer = Scorer.from_checkpoint(load_checkpoint(checkpoint), batch_size=2)
    scored = score_records(scorer, records, progress=False)
    assert len(scored.paths) == 3 and [Path(p).name for p, _ in scored.excluded] == ["broken.png"]
    direct = scorer.probabilities(np.stack([scorer.read(p).image for p in scored.paths]))
    np.testing.assert_allclose(scored.probabilities(scorer.temperature), direct, atol=1e-6)


def test_predict_pairs_mias_films_as_the_adapter_does(checkpoint, tmp_path):
    """mdb001 and mdb002 are one woman for predict exactly as for the mias adapter (and eval)."""
    from mias_support import write_mias_folder

    from mammojax.data.records import load_dataset

    folder = write_mias_folder(tmp_path / "mias")
    assert patient_from_path(folder / "mdb002.pgm") == patient_from_path(folder / "mdb001.pgm") == "mias001"
    result = CliRunner().invoke(main_cli(), ["predict", "--checkpoint", str(checkpoint), "--json", str(folder)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    by_path = {Path(r["path"]).name: r["patient_id"] for r in rows if r["kind"] == "image"}
    adapter = {Path(r.path).name: r.patient_id for r in load_dataset("mias", folder).records}
    assert by_path == adapter
    patients = {r["patient_id"]: r["n_images"] for r in rows if r["kind"] == "patient"}
    assert patients == {"mias001": 2, "mias002": 2}


def test_for_processing_images_are_scored_but_flagged(checkpoint, tmp_path):
    """A raw FOR PROCESSING DICOM gets a warning in its row, its patient's row and the closing line."""
    from app_support import IDENTIFIERS, dicom_bytes

    from mammojax.data.screening import FOR_PROCESSING_REASON

    (tmp_path / "W1_L_CC.dcm").write_bytes(dicom_bytes())
    (tmp_path / "W1_R_CC.dcm").write_bytes(dicom_bytes(laterality="R", intent="FOR PROCESSING"))
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(main_cli(), ["predict", "--checkpoint", str(checkpoint), "--out", str(out),
                                             str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {r["path"] and Path(r["path"]).name or r["kind"]: r for r in csv.DictReader(out.open())}
    assert rows["W1_R_CC.dcm"]["warning"] == FOR_PROCESSING_REASON and rows["W1_R_CC.dcm"]["probability"]
    assert rows["W1_L_CC.dcm"]["warning"] == ""
    assert rows["patient"]["warning"] == "1 of her 2 images flagged"
    assert f"2 scored (1 flagged: {FOR_PROCESSING_REASON}; see the warning column)" in result.stderr
    assert not any(identifier in out.read_text() + result.output for identifier in IDENTIFIERS)
