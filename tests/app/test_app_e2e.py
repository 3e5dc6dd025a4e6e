"""End to end: `mammojax app` serves the page, a real headless Chromium uploads a MIAS image.

Uses Debian's Chromium (``scripts/install_browser.sh`` installs it; CI runs
that script as root), driven by Playwright's Python API. Playwright's own
browser download is never used. Set MAMMOJAX_SCREENSHOT_DIR to keep the
screenshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app_support import IDENTIFIERS, dicom_bytes, extract_mias_image, make_tiny_checkpoint

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_browser.sh"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT = 120  # seconds
ANALYSIS_TIMEOUT_MS = 180_000  # the first upload loads and compiles the model


@pytest.fixture(scope="module")
def chromium() -> Path:
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=False, timeout=600)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and could not be installed here "
                    f"(run {INSTALL_SCRIPT.name} as root)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`mammojax app` exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the page did not come up within {SERVER_START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_clinician_uploads_a_mias_image_and_sees_score_and_heatmap(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    image = extract_mias_image(tmp_path)
    if image is None:
        pytest.skip("mini-MIAS archive not found under ../shared/data/mias")
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "mammojax", "app", "--checkpoint", str(checkpoint),
             "--port", str(port), "--max-upload-mb", "20"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_serving(url, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(chromium),
                args=CHROMIUM_ARGS, headless=True, viewport={"width": 1400, "height": 1600})
            try:
                page = browser.new_page()
                page.goto(url)
                page.get_by_text("not a medical device").wait_for(timeout=ANALYSIS_TIMEOUT_MS)
                # One exam: a MIAS view plus a DICOM view that carries patient identifiers.
                dicom = tmp_path / "left-cc.dcm"
                dicom.write_bytes(dicom_bytes())
                page.locator("input[type=file]").set_input_files([str(image), str(dicom)])

                metrics = page.locator('[data-testid="stMetricValue"]')
                metrics.nth(1).wait_for(timeout=ANALYSIS_TIMEOUT_MS)
                probabilities = [float(text.strip()) for text in metrics.all_inner_texts()]
                assert len(probabilities) == 2
                assert all(0.0 <= p <= 1.0 for p in probabilities)
                assert page.get_by_text("decision threshold τ").count() >= 1
                overlay = page.locator('[data-testid="stImage"] img').nth(1)
                overlay.wait_for(timeout=ANALYSIS_TIMEOUT_MS)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                    ".filter(img => img.complete && img.naturalWidth > 0).length >= 4",
                    timeout=ANALYSIS_TIMEOUT_MS)
                assert page.get_by_text("Patient-level result").count() == 1
                rendered = page.content() + page.inner_text("body")
                for identifier in IDENTIFIERS:
                    assert identifier not in rendered
                assert page.locator("text=Traceback").count() == 0

                # Streamlit scrolls inside its own container, so a full-page shot is
                # the viewport: the tall viewport above holds image and patient result.
                shot = tmp_path / "app.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                keep = os.environ.get("MAMMOJAX_SCREENSHOT_DIR")
                if keep:
                    Path(keep).mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, Path(keep) / "app-e2e.png")
            finally:
                browser.close()

        # SIGTERM to `mammojax app` must stop the Streamlit child too.
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not _port_closed(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _port_closed(port), "the Streamlit server outlived `mammojax app`"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        try:
            os.killpg(server.pid, signal.SIGKILL)  # any orphan left in the session
        except ProcessLookupError:
            pass
