"""``mammojax app``: serve the clinical web page (Streamlit) on this machine.

The page runs in a ``streamlit run`` child process; this command checks the
checkpoint and the port first (so a typo or a taken port is one line here,
not a page in the browser or Streamlit's own log), then forwards Ctrl-C /
SIGTERM to the child and exits with its status.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
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
              help="Checkpoint directory, training workdir (its best/ is used) or `mammojax export` directory.")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; keep the default to serve this machine only.")
@click.option("--max-upload-mb", default=50, show_default=True, type=click.IntRange(1, 4096),
              help="Largest accepted upload per file, in MB.")
def app(checkpoint: Path, port: int, host: str, max_upload_mb: int) -> None:
    """Start the clinical web page (Streamlit) for a checkpoint.

    A port already in use is an error before the server starts; a server
    that fails later passes its exit status on."""
    from mammojax.export import read_model_meta, resolve_model_dir

    read_model_meta(checkpoint)  # cheap: JSON only; raises a one-line CheckpointError
    if importlib.util.find_spec("streamlit") is None:
        raise MammojaxError("the web page needs Streamlit: pip install 'mammojax[app]'")
    if host not in LOOPBACK_HOSTS:
        click.echo(f"mammojax: warning: serving on {host}: uploads travel unencrypted to anyone "
                   "who can reach this port; put it behind HTTPS and access control", err=True)
    check_port_free(host, port)
    command = streamlit_command(resolve_model_dir(checkpoint).absolute(), host=host,
                                port=port, max_upload_mb=max_upload_mb)
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"mammojax: serving the page at http://{shown_host}:{port} (Ctrl-C to stop)", err=True)
    code, stopped = _run_forwarding_signals(command)
    if code < 0:  # ended by a signal: report it as a shell would
        code = 128 - code
    if code and not stopped:
        # Streamlit printed why (e.g. a port taken since the check above).
        click.echo(f"mammojax: error: the page server exited with status {code}", err=True)
    if code:
        raise click.exceptions.Exit(code)


def check_port_free(host: str, port: int) -> None:
    """Binds ``host:port`` as the server will, so a taken port is a one-line error.

    SO_REUSEADDR as the server sets it: a port left in TIME_WAIT by a
    previous run is free, one with a listener is not.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise MammojaxError(f"--host {host}: cannot resolve this address ({err.strerror})") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as err:
                raise MammojaxError(f"cannot serve on {host}:{port}: {err.strerror or err} "
                                    "(another program uses it? pick another --port)") from None


def _run_forwarding_signals(command: list[str]) -> tuple[int, bool]:
    """Runs the child; SIGTERM/SIGINT to this process stop it too (no orphan server).

    Returns the child's status and whether it was stopped on request.
    """
    child = subprocess.Popen(command)
    stopped = False

    def stop(signum, frame):
        nonlocal stopped
        stopped = True
        child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return child.wait(), stopped
            except KeyboardInterrupt:  # a second Ctrl-C while waiting: keep waiting for the child
                stopped = True
                child.send_signal(signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
