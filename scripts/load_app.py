#!/usr/bin/env python
"""Several clinicians at once: a bounded load test of the web page on this machine.

Starts ``mammojax app`` on a free localhost port with a quickstart-like tiny
checkpoint it creates (the quickstart config, random weights: the scores mean
nothing, the page's work is the same), then drives sessions the way a browser
does, over Streamlit's own protocol (the page's websocket and its upload
route; no browser needed, so the clients cost little CPU beside the server):

1. **idle**: one warm-up session (loads and compiles the model once per
   server), closed, then dropped by the server: the server's RSS;
2. **concurrent**: ``--users`` sessions upload one film each at the same
   moment; each must get its own film's result (its file name and the
   probability the page logic gives that film, computed here beforehand): no
   errors, no mix-ups; time to result p50/p95; RSS right after;
3. **soak**: ``--soak`` more sessions, ``--soak-concurrency`` at a time, each
   opened, one film analysed, closed; RSS once every closed session has been
   dropped (the server keeps a closed session ``--session-ttl`` s for a
   reconnect), compared with idle.

Bounded: at most 16 users and 200 soak sessions, a deadline (``--max-seconds``)
after which it stops the server and fails, localhost only. Run it when the
machine is quiet (``uptime``); the figures it prints go to the README table.

    python scripts/load_app.py                    # 8 users, soak of 100
    python scripts/load_app.py --users 2 --soak 4 # a quick check

Exit status 0 when there were no errors, no mix-ups and the server's memory
came back within ``--max-growth-mb`` (100) of idle once the sessions were dropped;
1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # never anything else: this script loads a server, not a network
MAX_USERS = 16
MAX_SOAK = 200
STEP_TIMEOUT = 180.0  # seconds one script run may take (the first one compiles the model)


# --- material -----------------------------------------------------------------------


def make_checkpoint(directory: Path) -> Path:
    """A quickstart-config ResNet-18 with random weights (what `mammojax quickstart` trains, untrained)."""
    import jax

    from mammojax import models
    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import quickstart_config

    config = quickstart_config()
    model = models.create_model(config.model.name)
    variables = models.init_variables(model, jax.random.key(config.seed), config.data.image_size)
    return save_checkpoint(directory, variables, make_meta(config, tau=0.5))


def film(seed: int, side: int) -> bytes:
    """A seeded phantom mammogram as a 16-bit PNG, ``side`` px high: every session's film differs."""
    from PIL import Image

    from mammojax.data.synthetic import make_phantom

    pixels, _, _ = make_phantom(np.random.default_rng([seed, 17]), size=side, positive=bool(seed % 2),
                                laterality="LR"[seed % 2])
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels[:, : int(side * 0.8)] * 65535).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_probabilities(checkpoint: Path, films: dict[str, bytes]) -> dict[str, str]:
    """Each film's probability as the page shows it, from the page's own logic in this process."""
    from mammojax.app import logic

    model = logic.load_app_model(checkpoint, warm_up=False)
    return {name: f"{logic.analyse_upload(model, name, data).probability:.3f}" for name, data in films.items()}


# --- the server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    """``mammojax app`` in a child process (and its ``streamlit run`` child)."""

    def __init__(self, checkpoint: Path, *, session_ttl: float, log: Path):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO),
               # How long the server keeps a closed session for a reconnect (Streamlit's default: 120 s).
               "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": str(int(session_ttl))}
        self.log = open(log, "wb")  # noqa: SIM115 - open while the server runs, closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mammojax", "app", "--checkpoint", str(checkpoint), "--host", HOST,
             "--port", str(self.port)], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.process.returncode}")
            try:
                if requests.get(f"{self.url}/_stcore/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not answer on {self.url} within {timeout:.0f} s")

    def rss_mb(self) -> float:
        """Resident memory of the server's process tree, MB."""
        import psutil

        root = psutil.Process(self.process.pid)
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def cache_mb(self) -> dict[str, float]:
        """What Streamlit says it holds (its /_stcore/metrics), MB per kind: session state, uploads, media."""
        import requests

        held: dict[str, float] = {}
        text = requests.get(f"{self.url}/_stcore/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith("cache_memory_bytes{"):
                labels, value = line.rsplit(" ", 1)
                kind = labels.split('cache_type="', 1)[1].split('"', 1)[0]
                held[kind] = held.get(kind, 0.0) + float(value) / 2**20
        return held

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# --- one browser session, over Streamlit's protocol ----------------------------------------------


@dataclasses.dataclass
class Result:
    name: str
    seconds: float = float("nan")
    shown_name: bool = False
    probability: str | None = None
    errors: list = dataclasses.field(default_factory=list)


class Session:
    """What a browser tab does: a websocket of protobuf messages, uploads over HTTP."""

    def __init__(self, url: str):
        import requests
        from websockets.sync.client import connect

        self.url = url
        self.http = requests.Session()
        self.http.get(f"{url}/_stcore/health", timeout=10).raise_for_status()  # sets the XSRF cookie
        self.xsrf = self.http.cookies.get("_streamlit_xsrf", "")
        self._open = contextlib.ExitStack()
        self.socket = self._open.enter_context(connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit", self.xsrf],
                              additional_headers={"Cookie": f"_streamlit_xsrf={self.xsrf}"}, max_size=None,
                              open_timeout=30))
        self.session_id = ""
        self.page_hash = ""
        self.uploader_id = ""

    def run(self, widget_states=()) -> list:
        """Reruns the page with ``widget_states``; returns the elements it drew."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        message.rerun_script.page_script_hash = self.page_hash
        message.rerun_script.widget_states.widgets.extend(widget_states)
        self.socket.send(message.SerializeToString())
        return self._until_finished()

    def _receive(self):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        message = ForwardMsg()
        message.ParseFromString(self.socket.recv(timeout=STEP_TIMEOUT))
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self.session_id = message.new_session.initialize.session_id
            self.page_hash = message.new_session.page_script_hash
        return kind, message

    def _until_finished(self) -> list:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        elements = []
        while True:
            kind, message = self._receive()
            if kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                element = message.delta.new_element
                elements.append(element)
                if element.WhichOneof("type") == "file_uploader":
                    self.uploader_id = element.file_uploader.id
            elif kind == "script_finished":
                status = message.script_finished
                if status == ForwardMsg.FINISHED_SUCCESSFULLY:
                    return elements
                if status == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    raise RuntimeError("the page did not compile")
                elements = []  # finished early for a rerun: the next run's elements count

    def upload(self, name: str, data: bytes):
        """Asks the server for upload URLs, PUTs the file; returns the widget state naming it."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        request = BackMsg()
        request.file_urls_request.request_id = uuid.uuid4().hex
        request.file_urls_request.session_id = self.session_id
        request.file_urls_request.file_names.append(name)
        self.socket.send(request.SerializeToString())
        while True:
            kind, message = self._receive()
            if kind == "file_urls_response" and message.file_urls_response.response_id == \
                    request.file_urls_request.request_id:
                break
        response = message.file_urls_response
        if response.error_msg:
            raise RuntimeError(f"upload refused: {response.error_msg}")
        urls = response.file_urls[0]
        put = self.http.put(self.url + urls.upload_url if urls.upload_url.startswith("/") else urls.upload_url,
                            files={"file": (name, data, "image/png")}, headers={"X-Xsrftoken": self.xsrf},
                            timeout=60)
        put.raise_for_status()
        state = WidgetState(id=self.uploader_id)
        info = state.file_uploader_state_value.uploaded_file_info.add()
        info.name, info.size, info.file_id = name, len(data), urls.file_id
        info.file_urls.CopyFrom(urls)
        return state

    def close(self) -> None:
        self._open.close()  # the tab is closed: the server keeps the session for --session-ttl s
        self.http.close()


def analyse_one(url: str, name: str, data: bytes, start: threading.Barrier | None = None) -> Result:
    """One clinician: open the page, upload one film, read the result, leave."""
    result = Result(name)
    session = None
    try:
        session = Session(url)
        session.run()  # the empty page, with its uploader
        if start is not None:
            start.wait(timeout=STEP_TIMEOUT)
        began = time.perf_counter()
        elements = session.run([session.upload(name, data)])
        result.seconds = time.perf_counter() - began
        for element in elements:
            kind = element.WhichOneof("type")
            if kind == "heading" and name in element.heading.body:
                result.shown_name = True
            elif kind == "metric":
                result.probability = element.metric.body
            elif kind == "alert" and element.alert.format == element.alert.ERROR:
                result.errors.append(element.alert.body)
            elif kind == "exception":
                result.errors.append(element.exception.message)
    except Exception as err:  # noqa: BLE001 - a failed session is a finding, not a crash of the test
        result.errors.append(f"{type(err).__name__}: {err}")
    finally:
        if session is not None:
            session.close()
    return result


# --- the run ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def check(results: list[Result], expected: dict[str, str]) -> tuple[list[str], list[str]]:
    """(errors, mix-ups): a session whose page showed another film's name or probability is mixed up."""
    errors = [f"{r.name}: {e}" for r in results for e in r.errors]
    mixups = [f"{r.name}: shown name {r.shown_name}, probability {r.probability} (expected {expected[r.name]})"
              for r in results if not r.errors and (not r.shown_name or r.probability != expected[r.name])]
    return errors, mixups


def wait_for_drop(server: Server, seconds: float, label: str) -> float:
    print(f"  waiting {seconds:.0f} s for the server to drop the closed sessions ({label})...", flush=True)
    time.sleep(seconds)
    held = ", ".join(f"{kind} {mb:.1f}" for kind, mb in sorted(server.cache_mb().items()))
    print(f"  Streamlit holds (MB): {held or 'nothing'}", flush=True)
    return server.rss_mb()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help=f"concurrent sessions (<= {MAX_USERS})")
    parser.add_argument("--soak", type=int, default=100, help=f"sessions in the soak (<= {MAX_SOAK}; 0: none)")
    parser.add_argument("--soak-concurrency", type=int, default=4)
    parser.add_argument("--film-side", type=int, default=1024, help="film height in pixels (width 0.8x)")
    parser.add_argument("--session-ttl", type=float, default=20.0,
                        help="seconds the server keeps a closed session (Streamlit: server.disconnectedSessionTTL)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a tiny one made here")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="give up after this long")
    parser.add_argument("--max-growth-mb", type=float, default=100.0,
                        help="allowed RSS above idle once every session was dropped")
    args = parser.parse_args(argv)
    if not (1 <= args.users <= MAX_USERS and 0 <= args.soak <= MAX_SOAK and args.soak_concurrency >= 1):
        parser.error(f"--users must be 1..{MAX_USERS}, --soak 0..{MAX_SOAK}")

    sys.path.insert(0, str(REPO))
    from mammojax import runtime
    from mammojax.app.sessions import janitor_seconds

    runtime.setup()
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="mammojax-load-"))
    checkpoint = args.checkpoint or make_checkpoint(scratch / "checkpoint")
    total = 1 + args.users + args.soak
    films = {f"film-{i:03d}.png": film(i, args.film_side) for i in range(total)}
    names = list(films)
    print(f"load_app: {args.users} concurrent users, soak {args.soak} ({args.soak_concurrency} at a time), "
          f"films {args.film_side} px, session TTL {args.session_ttl:.0f} s, checkpoint {checkpoint}", flush=True)
    expected = expected_probabilities(checkpoint, films)

    server = Server(checkpoint, session_ttl=args.session_ttl, log=scratch / "server.log")
    timer = threading.Timer(args.max_seconds, lambda: (print("load_app: deadline reached", flush=True),
                                                      server.stop(), os._exit(1)))
    timer.daemon = True
    timer.start()
    try:
        server.wait_ready()
        started = server.rss_mb()
        warm = analyse_one(server.url, names[0], films[names[0]])
        first_seconds = warm.seconds
        settle = args.session_ttl + janitor_seconds() + 10  # dropped, then swept by the page's janitor
        idle = wait_for_drop(server, settle, "warm-up")
        results = [warm]

        barrier = threading.Barrier(args.users)
        batch = names[1:1 + args.users]
        with concurrent.futures.ThreadPoolExecutor(args.users) as pool:
            concurrent_results = list(pool.map(lambda n: analyse_one(server.url, n, films[n], barrier), batch))
        after_round = server.rss_mb()
        results += concurrent_results

        soak_results: list[Result] = []
        peak = after_round
        if args.soak:
            soak_names = names[1 + args.users:]
            with concurrent.futures.ThreadPoolExecutor(args.soak_concurrency) as pool:
                for done in pool.map(lambda n: analyse_one(server.url, n, films[n]), soak_names):
                    soak_results.append(done)
                    if len(soak_results) % 10 == 0:
                        peak = max(peak, server.rss_mb())
                        print(f"  soak {len(soak_results)}/{len(soak_names)}, RSS {peak:.0f} MB", flush=True)
            results += soak_results
        after_soak = server.rss_mb()
        dropped = wait_for_drop(server, settle, "after the soak")
    finally:
        timer.cancel()
        server.stop()

    errors, mixups = check(results, expected)
    times = [r.seconds for r in concurrent_results if not r.errors]
    soak_times = [r.seconds for r in soak_results if not r.errors]
    print("\nresults")
    print(f"  sessions                      {len(results)} ({len(errors)} errors, {len(mixups)} mix-ups)")
    print(f"  time to result, 1 user        {first_seconds:.2f} s (first upload of the server, compiled at start)")
    print(f"  time to result, {args.users} at once    p50 {percentile(times, 50):.2f} s, "
          f"p95 {percentile(times, 95):.2f} s, max {max(times, default=float('nan')):.2f} s")
    if soak_times:
        print(f"  time to result, soak          p50 {percentile(soak_times, 50):.2f} s, "
              f"p95 {percentile(soak_times, 95):.2f} s ({args.soak_concurrency} at a time)")
    print(f"  server RSS: started {started:.0f} MB; idle with the model {idle:.0f} MB; "
          f"after {args.users} users {after_round:.0f} MB; soak peak {peak:.0f} MB, end {after_soak:.0f} MB; "
          f"all sessions dropped {dropped:.0f} MB ({dropped - idle:+.0f} MB vs idle)")
    print(f"  wall time {time.monotonic() - began:.0f} s; server log {scratch / 'server.log'}")
    for line in (errors + mixups)[:10]:
        print(f"  ! {line}")
    grew = dropped - idle > args.max_growth_mb
    if grew:
        print(f"  ! memory did not come back: {dropped - idle:+.0f} MB vs idle (allowed {args.max_growth_mb:.0f})")
    return 0 if not errors and not mixups and not grew else 1


if __name__ == "__main__":
    sys.exit(main())
