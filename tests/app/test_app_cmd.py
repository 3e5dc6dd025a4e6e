"""`mammojax app` start-up failures: a taken port, a server that cannot start.

Real processes and a real occupied port; the page itself is tested in
test_app_e2e.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app_support import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("streamlit")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("app") / "ckpt")


def _app(checkpoint: Path, port: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mammojax", "app", "--checkpoint", str(checkpoint),
                           "--port", str(port), *extra],
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_taken_port_is_one_line_and_nonzero_before_streamlit(checkpoint, host):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _app(checkpoint, port, "--host", host)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"mammojax: error: cannot serve on {host}:{port}: Address already in use "
                     "(another program uses it? pick another --port)"], result.stderr
    assert "serving the page" not in result.stderr  # Streamlit never started


def test_server_that_fails_to_start_passes_its_status_on(checkpoint):
    """Streamlit itself failing (here: TLS files that do not exist) is not a success."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _app(checkpoint, port, env={"STREAMLIT_SERVER_SSL_CERT_FILE": "/nonexistent/cert.pem",
                                         "STREAMLIT_SERVER_SSL_KEY_FILE": "/nonexistent/key.pem"})
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "mammojax: error: the page server exited with status 1"
