"""``mammojax data summary`` through click's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mammojax.cli import main
from mammojax.cli.data_cmd import data

from paths import MIAS_ARCHIVE  # noqa: E402


@pytest.mark.skipif(not MIAS_ARCHIVE.is_file(), reason=f"{MIAS_ARCHIVE} not available")
def test_summary_json_on_mias(tmp_path):
    result = CliRunner().invoke(data, ["summary", "--dataset", "mias", "--data-dir", str(MIAS_ARCHIVE),
                                       "--task", "malignant", "-o", f"cache_dir={str(tmp_path)!r}", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["images"], report["patients"]) == (242, 121)
    assert report["labels"] == {"0": 203, "1": 39}
    assert report["views"] == {"MLO": 242} and report["laterality"] == {"L": 121, "R": 121}
    assert report["excluded"] == 0 and report["exclusions"] == []


def test_summary_text_and_screening_on_phantoms(tmp_path):
    runner = CliRunner()
    args = ["summary", "--dataset", "synthetic", "--data-dir", str(tmp_path), "-o", "count=8", "-o", "size=48"]
    result = runner.invoke(data, args)
    assert result.exit_code == 0, result.output
    assert "8 images, 2 patients" in result.output and "CC: 4  MLO: 4" in result.output
    # Break one phantom: screening must exclude it with a reason.
    broken = tmp_path / "phantoms-seed0-n8-48px" / "images" / "phantom_00003.png"
    Image.fromarray(np.zeros((48, 48), np.uint16)).save(broken)
    result = runner.invoke(data, args + ["--screen", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 7 and report["excluded"] == 1
    assert report["exclusions"][0]["path"] == str(broken)
    assert "constant" in report["exclusions"][0]["reason"]


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "summary", "--dataset", "mias", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none" in err and err.startswith("mammojax: error:")
    assert main(["data", "summary", "--dataset", "csv", "--data-dir", str(tmp_path), "-o", "x"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def _mammogram_dicom(path: Path, **elements) -> None:
    from mammojax.data.synthetic import write_dicom

    write_dicom(path, np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) % 4096, bits_stored=12, **elements)


def test_screen_reports_for_processing_images(tmp_path):
    from mammojax.data.screening import FOR_PROCESSING_REASON

    _mammogram_dicom(tmp_path / "presentation.dcm", PresentationIntentType="FOR PRESENTATION")
    _mammogram_dicom(tmp_path / "raw_intent.dcm", PresentationIntentType="FOR PROCESSING")
    _mammogram_dicom(tmp_path / "raw_sop.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2.1")
    (tmp_path / "manifest.csv").write_text(
        "path,label\npresentation.dcm,0\nraw_intent.dcm,1\nraw_sop.dcm,0\n")
    args = ["summary", "--dataset", "csv", "--data-dir", str(tmp_path), "--screen"]
    report = json.loads(CliRunner().invoke(data, [*args, "--json"]).stdout)
    assert report["images"] == 3 and report["excluded"] == 0  # still readable: flagged, not dropped
    assert report["flagged"] == [{"path": str(tmp_path / name), "reason": FOR_PROCESSING_REASON}
                                 for name in ("raw_intent.dcm", "raw_sop.dcm")]
    text = CliRunner().invoke(data, args).output
    assert "flagged     2" in text and f"     2  {FOR_PROCESSING_REASON}" in text
    assert f"{tmp_path / 'raw_sop.dcm'}: {FOR_PROCESSING_REASON}" in text
    assert "presentation.dcm" not in text
    # Without --screen no file is opened, so nothing can be flagged.
    assert "flagged" not in json.loads(CliRunner().invoke(data, args[:-1] + ["--json"]).stdout)


def test_prepare_defaults_to_the_user_cache_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "user-cache"))
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    result = CliRunner().invoke(data, ["prepare", "--dataset", "synthetic", "--data-dir", str(tmp_path / "ph"),
                                       "-o", "count=8", "-o", "size=48", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "user-cache" / "prepared"
    prepared = [p for p in root.iterdir() if p.is_dir()]
    assert len(prepared) == 1 and result.stdout.strip() == str(prepared[0])
    assert prepared[0].name.startswith("synthetic-32x32-")
    assert "8 examples (8 decoded, 0 reused" in result.stderr
    assert list(here.iterdir()) == []
