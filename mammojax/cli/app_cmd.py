"""``mammojax app``: serve the clinical web page (Streamlit) on this machine.

The page runs in a ``streamlit run`` child process; this command checks the
checkpoint first (so a typo is one line here, not a page in the browser),
then forwards Ctrl-C / SIGTERM to the child and exits with its status.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import click

from mammojax.errors import MammojaxError

PAGE = Path(__file__).resolve().parent.parent / "app" / "page.py"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def streamlit_command(checkpoint: Path, *, host: str, port: int, max_upload_mb: int) -> list[str]:
    """The ``streamlit run`` command line that serves the page."""
    return [
        sys.executable, "-m", "streamlit", "run", str(PAGE),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(port),
        "--server.maxUploadSize", str(max_upload_mb),
        "--browser.gatherUsageStats", "false",
        # A clinical page, not a developer's: no deploy menu, no source watching.
        "--client.toolbarMode", "minimal",
        "--server.fileWatcherType", "none",
        "--", "--checkpoint", str(checkpoint),
    ]


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Checkpoint directory (or a training workdir: its best/ is used).")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; keep the default to serve this machine only.")
@click.option("--max-upload-mb", default=50, show_default=True, type=click.IntRange(1, 4096),
              help="Largest accepted upload per file, in MB.")
def app(checkpoint: Path, port: int, host: str, max_upload_mb: int) -> None:
    """Start the clinical web page (Streamlit) for a checkpoint."""
    from mammojax.checkpoint import read_meta, resolve_checkpoint_dir

    read_meta(checkpoint)  # cheap: JSON only; raises a one-line CheckpointError
    if importlib.util.find_spec("streamlit") is None:
        raise MammojaxError("the web page needs Streamlit: pip install 'mammojax[app]'")
    if host not in LOOPBACK_HOSTS:
        click.echo(f"mammojax: warning: serving on {host}: uploads travel unencrypted to anyone "
                   "who can reach this port; put it behind HTTPS and access control", err=True)
    command = streamlit_command(resolve_checkpoint_dir(checkpoint).absolute(), host=host,
                                port=port, max_upload_mb=max_upload_mb)
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"mammojax: serving the page at http://{shown_host}:{port} (Ctrl-C to stop)", err=True)
    code = _run_forwarding_signals(command)
    if code:
        raise click.exceptions.Exit(code)


def _run_forwarding_signals(command: list[str]) -> int:
    """Runs the child; SIGTERM/SIGINT to this process stop it too (no orphan server)."""
    child = subprocess.Popen(command)

    def stop(signum, frame):
        child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # a second Ctrl-C while waiting: keep waiting for the child
                child.send_signal(signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
