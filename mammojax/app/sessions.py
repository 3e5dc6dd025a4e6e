"""Keeping a long-running page server's memory flat while clinicians come and go.

Three leaks were measured with ``scripts/load_app.py`` (Streamlit 1.67) and are
closed here; everything touching Streamlit's internals is in this module and
guarded, so a Streamlit that changes them loses the clean-up, not the page:

* **Uploads held for the whole session.** Streamlit keeps every uploaded file's
  bytes until the session ends; the page needs them once, to analyse the film
  (a full-field DICOM is tens of MB). :func:`forget_upload_bytes` keeps the
  upload's name and id (the widget still lists it) and drops its bytes.
* **Closed sessions never shut down.** A closed tab's session waits
  ``server.disconnectedSessionTTL`` seconds for a reconnect in a TTL cache
  that forgets expired entries without shutting them down, so their uploads
  and media files stay in memory for good. :func:`reap_ended_sessions` shuts
  down expired sessions and drops files left by sessions that no longer exist.
* **Freed memory kept by the allocator.** Streamlit runs each session in its
  own thread and glibc gives threads their own arenas, which keep freed pages.
  :func:`release_memory` hands them back (``malloc_trim``).

:func:`start_janitor` runs the last two every ``MAMMOJAX_APP_JANITOR_SECONDS``
(default 15) in one daemon thread per server.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time

JANITOR_SECONDS_ENV = "MAMMOJAX_APP_JANITOR_SECONDS"
DEFAULT_JANITOR_SECONDS = 15.0

_LOG = logging.getLogger(__name__)


def release_memory() -> None:
    """Collects garbage and returns the allocator's free pages to the OS (glibc; elsewhere nothing)."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def forget_upload_bytes(file_id: str) -> None:
    """Drops an analysed upload's bytes from Streamlit's upload store (this session's), keeping its entry."""
    try:
        from streamlit import runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx
        from streamlit.runtime.uploaded_file_manager import UploadedFileRec

        context = get_script_run_ctx()
        if context is None or not runtime.exists():
            return
        uploads = runtime.get_instance().uploaded_file_mgr
        for record in uploads.get_files(context.session_id, [file_id]):
            uploads.add_file(context.session_id,
                             UploadedFileRec(file_id=record.file_id, name=record.name, type=record.type, data=b""))
    except Exception as err:  # noqa: BLE001 - housekeeping must never break an analysis
        _LOG.debug("could not drop the upload's bytes: %s", err)


def reap_ended_sessions() -> int:
    """Shuts down closed sessions past their reconnect window and drops files of vanished sessions.

    Returns how many sessions were shut down here. Safe to call from any
    thread, at any time; does nothing outside a running Streamlit server.
    """
    from streamlit import runtime

    if not runtime.exists():
        return 0
    server = runtime.get_instance()
    manager = getattr(server, "_session_mgr", None)
    cache = getattr(getattr(manager, "_session_storage", None), "_cache", None)
    expired = []
    if hasattr(cache, "expire"):
        with getattr(manager, "_storage_lock", contextlib.nullcontext()):
            expired = cache.expire()
    for _, info in expired:
        info.session.shutdown()  # its uploads, media files, caches and event loop
    if manager is None:
        return len(expired)
    # Sessions the cache dropped on its own (when another one was stored) were
    # never shut down either: drop what they left. The holders are listed
    # before the live sessions, so a session that starts meanwhile counts as live.
    uploads, media = server.uploaded_file_mgr, server.media_file_mgr
    holders = set(getattr(uploads, "file_storage", {})) | set(getattr(media, "_files_by_session_and_coord", {}))
    live = {info.session.id for info in manager.list_sessions()}
    for session_id in holders - live:
        uploads.remove_session_files(session_id)
        media.clear_session_refs(session_id)
    media.remove_orphaned_files()
    return len(expired)


def janitor_seconds() -> float:
    """The janitor's period: ``$MAMMOJAX_APP_JANITOR_SECONDS`` or 15 s."""
    try:
        return max(0.5, float(os.environ.get(JANITOR_SECONDS_ENV, DEFAULT_JANITOR_SECONDS)))
    except ValueError:
        return DEFAULT_JANITOR_SECONDS


def start_janitor(period: float | None = None) -> threading.Thread:
    """Starts the daemon thread that reaps ended sessions and releases memory every ``period`` s."""
    period = janitor_seconds() if period is None else period

    def loop() -> None:
        while True:
            time.sleep(period)
            try:
                reap_ended_sessions()
            except Exception as err:  # noqa: BLE001 - keep sweeping: one failure must not end the thread
                _LOG.warning("mammojax page: session clean-up failed: %s", err)
            release_memory()

    thread = threading.Thread(target=loop, name="mammojax-janitor", daemon=True)
    thread.start()
    return thread
