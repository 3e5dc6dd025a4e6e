"""The CLI fails well: one clear stderr line, a non-zero exit, nothing overwritten.

Each case runs ``mammojax.cli.main`` in-process (one JAX import for the whole
module; ``test_console_script_prints_one_line`` runs the real subprocess once).
Full disks and read-only folders are real tmpfs mounts (this runs as root, and
root ignores file permissions, so chmod would prove nothing); without mount
permission those cases are skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval_support import make_tiny_checkpoint
from mammojax.cli import main

REPO = Path(__file__).resolve().parents[2]
# --- helpers ------------------------------------------------------------------------


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (to prove nothing was changed)."""
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_cli(capfd, *argv: str) -> tuple[int, str]:
    capfd.readouterr()
    code = main(list(argv))
    return code, capfd.readouterr().err


def assert_one_clear_line(code: int, stderr: str, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one 'mammojax: error:' line naming ``needles``."""
    assert code != 0
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mammojax: error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    from PIL import Image

    ckpt = make_tiny_checkpoint(root / "ckpt")
    image = root / "mammo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)).save(image)
    return {"root": root, "ckpt": ckpt, "image": image}


def _mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'})")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled to the last byte."""
    mount = tmp_path / "full"
    _mount_tmpfs(mount, "size=64k")
    try:
        try:
            with open(mount / "filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 512)
        except OSError:
            pass  # ENOSPC: the disk is full now
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs holding one pre-existing file."""
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "size=1m")
    try:
        (mount / "existing.csv").write_text("keep me\n")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# --- bad inputs ------------------------------------------------------------------------


def test_missing_dataset_path(material, capfd, tmp_path):
    missing = tmp_path / "no-such-dataset"
    before = tree_hashes(material["ckpt"])
    code, err = run_cli(capfd, "eval", "--checkpoint", str(material["ckpt"]), "--dataset", "mias",
                        "--data-dir", str(missing), "--out", str(tmp_path / "eval"))
    assert_one_clear_line(code, err, str(missing))
    assert not (tmp_path / "eval").exists()
    assert tree_hashes(material["ckpt"]) == before


def test_missing_input_image(material, capfd, tmp_path):
    missing = tmp_path / "nope.png"
    code, err = run_cli(capfd, "predict", "--checkpoint", str(material["ckpt"]), str(missing),
                        "--out", str(tmp_path / "p.csv"))
    assert_one_clear_line(code, err, "nope.png")
    assert not (tmp_path / "p.csv").exists()


def test_unknown_config_key(capfd, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("pre-existing")
    before = tree_hashes(workdir)
    code, err = run_cli(capfd, "train", "--config", str(REPO / "configs" / "default.py"),
                        "--workdir", str(workdir), "--config.train.no_such_key=3")
    assert_one_clear_line(code, err, "no_such_key")
    assert tree_hashes(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]


def test_checkpoint_of_another_model(material, capfd):
    before = tree_hashes(material["ckpt"])
    code, err = run_cli(capfd, "benchmark", "--models", "resnet50", "--checkpoint",
                        f"resnet50={material['ckpt']}", "--dataset", "synthetic", "--image-size", "32",
                        "--batch-sizes", "1", "--repeats", "1")
    assert_one_clear_line(code, err, str(material["ckpt"]), "resnet18", "resnet50")
    assert tree_hashes(material["ckpt"]) == before


def test_checkpoint_meta_naming_another_model(material, capfd, tmp_path):
    """Meta says resnet34 but the variables are a resnet18's: refused, not half-loaded."""
    ckpt = tmp_path / "liar"
    shutil.copytree(material["ckpt"], ckpt)
    meta = json.loads((ckpt / "mammojax.json").read_text())
    meta["model"]["name"] = "resnet34"
    (ckpt / "mammojax.json").write_text(json.dumps(meta))
    before = tree_hashes(ckpt)
    code, err = run_cli(capfd, "predict", "--checkpoint", str(ckpt), str(material["image"]),
                        "--out", str(tmp_path / "p.csv"))
    assert_one_clear_line(code, err, str(ckpt), "resnet34")
    assert tree_hashes(ckpt) == before
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("damage", ["garbage", "empty", "no_model", "truncated_variables",
                                    "altered_variables"])
def test_corrupt_checkpoint(material, capfd, tmp_path, damage):
    ckpt = tmp_path / "broken"
    shutil.copytree(material["ckpt"], ckpt)
    meta_file = ckpt / "mammojax.json"
    if damage == "garbage":
        meta_file.write_bytes(b"{\"format\": 1, \"model\": {\x00\xff")
    elif damage == "empty":
        meta_file.write_bytes(b"")
    elif damage == "no_model":
        meta_file.write_text(json.dumps({"format": 1}))
    else:
        files = [p for p in (ckpt / "variables").rglob("*") if p.is_file()]
        biggest = max(files, key=lambda p: p.stat().st_size)
        data = biggest.read_bytes()
        if damage == "truncated_variables":
            biggest.write_bytes(data[: len(data) // 3])
        else:  # same size, different bytes: only the checksum can tell
            middle = len(data) // 2
            biggest.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64])
                                + data[middle + 64:])
    out = tmp_path / "preds.csv"
    out.write_text("previous results\n")
    before = tree_hashes(ckpt, out)
    code, err = run_cli(capfd, "predict", "--checkpoint", str(ckpt), str(material["image"]), "--out",
                        str(out), "--overwrite")
    line = assert_one_clear_line(code, err, str(ckpt))
    assert "\\x" not in line and len(line) < 400
    assert tree_hashes(ckpt, out) == before


def test_checkpoint_without_digests_still_loads(material, tmp_path):
    """Checkpoints written before variables_files existed are read as before."""
    from mammojax.checkpoint import META_FILE, VARIABLES_FILES_KEY, load_checkpoint

    ckpt = tmp_path / "older"
    shutil.copytree(material["ckpt"], ckpt)
    meta = json.loads((ckpt / META_FILE).read_text())
    assert meta.pop(VARIABLES_FILES_KEY)
    (ckpt / META_FILE).write_text(json.dumps(meta))
    assert load_checkpoint(ckpt).model_name == "resnet18"


def test_existing_output_is_not_overwritten(material, capfd, tmp_path):
    out = tmp_path / "preds.csv"
    out.write_text("previous results\n")
    before = tree_hashes(out)
    code, err = run_cli(capfd, "predict", "--checkpoint", str(material["ckpt"]), str(material["image"]),
                        "--out", str(out))
    assert_one_clear_line(code, err, str(out))
    assert tree_hashes(out) == before


# --- full disk, read-only folders ------------------------------------------------------


def test_predict_to_full_disk(material, capfd, full_disk):
    out = full_disk / "preds.csv"
    code, err = run_cli(capfd, "predict", "--checkpoint", str(material["ckpt"]), str(material["image"]),
                        "--out", str(out))
    assert_one_clear_line(code, err)


def test_predict_to_dev_full(material, capfd):
    code, err = run_cli(capfd, "predict", "--checkpoint", str(material["ckpt"]), str(material["image"]),
                        "--out", "/dev/full", "--overwrite")
    assert_one_clear_line(code, err)


def test_explain_to_full_disk(material, capfd, full_disk):
    code, err = run_cli(capfd, "explain", "--checkpoint", str(material["ckpt"]), str(material["image"]),
                        "--out", str(full_disk / "cams"))
    assert_one_clear_line(code, err)


def test_eval_to_full_disk(material, capfd, full_disk):
    code, err = run_cli(capfd, "eval", "--checkpoint", str(material["ckpt"]), "--dataset", "synthetic",
                        "--split", "all", "--bootstrap", "0", "--out", str(full_disk / "eval"))
    assert_one_clear_line(code, err)


def test_outputs_into_read_only_folder(material, capfd, read_only_dir):
    before = tree_hashes(read_only_dir)
    cases = [
        ("predict", "--checkpoint", str(material["ckpt"]), str(material["image"]),
         "--out", str(read_only_dir / "new.csv")),
        ("predict", "--checkpoint", str(material["ckpt"]), str(material["image"]),
         "--out", str(read_only_dir / "existing.csv"), "--overwrite"),
        ("explain", "--checkpoint", str(material["ckpt"]), str(material["image"]),
         "--out", str(read_only_dir / "cams")),
        ("train", "--config", str(REPO / "configs" / "default.py"), "--workdir", str(read_only_dir / "work")),
    ]
    for argv in cases:
        code, err = run_cli(capfd, *argv)
        assert_one_clear_line(code, err, str(read_only_dir))
    assert tree_hashes(read_only_dir) == before


def test_console_script_prints_one_line(material, tmp_path):
    """The real entry point (subprocess): same contract, exit status 2."""
    missing = tmp_path / "absent"
    result = subprocess.run([sys.executable, "-m", "mammojax", "predict", "--checkpoint", str(missing),
                             str(material["image"])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"mammojax: error: {missing}: checkpoint not found"]
