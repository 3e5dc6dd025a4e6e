"""Several clinicians at once: a real page server keeps only what it needs, and lets go.

Drives ``mammojax app`` through ``scripts/load_app.py``'s client (Streamlit's
own protocol: a websocket and the upload route, no browser) and reads what
Streamlit holds from its ``/_stcore/metrics``.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest
from app_support import make_tiny_checkpoint, png_bytes
from paths import REPO

pytest.importorskip("streamlit")
pytest.importorskip("websockets")


def _load_app():
    spec = importlib.util.spec_from_file_location("load_app", REPO / "scripts" / "load_app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("load_app", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_uploads_are_dropped_once_analysed_and_closed_sessions_let_go(tmp_path, monkeypatch):
    load_app = _load_app()
    monkeypatch.setenv("MAMMOJAX_APP_JANITOR_SECONDS", "1")
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt")
    server = load_app.Server(checkpoint, session_ttl=2, log=tmp_path / "server.log")
    try:
        server.wait_ready()
        films = {"a-cc.png": png_bytes(300, 240, seed=1), "b-cc.png": png_bytes(300, 240, seed=2)}
        sessions = [load_app.Session(server.url) for _ in films]
        shown = []
        for session, (name, data) in zip(sessions, films.items()):
            session.run()
            state = session.upload(name, data)
            first = _result(session.run([state]))
            assert first[0] and name in first[0]
            # The page has its analysis; Streamlit no longer holds the upload's bytes...
            assert server.cache_mb().get("UploadedFileManager", 0.0) == 0.0
            # ... and a rerun (the slider, a label) still shows the same result.
            assert _result(session.run([state])) == first
            shown.append(first)
        assert shown[0][1] != shown[1][1] or shown[0][0] != shown[1][0]  # each session its own film
        for session in sessions:
            session.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # TTL 2 s, janitor every 1 s
            held = server.cache_mb()
            if not any(held.get(k, 0.0) for k in ("UploadedFileManager", "st_memory_media_file_storage",
                                                  "st_session_state")):
                break
            time.sleep(1)
        assert not any(mb for kind, mb in held.items() if kind != "st_cache_resource"), held
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def _result(elements) -> tuple[str | None, str | None]:
    """(the heading naming the film, the probability shown) of a page run."""
    heading = next((e.heading.body for e in elements if e.WhichOneof("type") == "heading"
                    and e.heading.body.endswith(".png")), None)
    metric = next((e.metric.body for e in elements if e.WhichOneof("type") == "metric"), None)
    return heading, metric
