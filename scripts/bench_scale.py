"""Preparing full-size mammograms at scale: speed, disk, memory, restart, and the reader vs the train step.

Writes N synthetic 14-bit DICOM mammograms of 3328x2560 (MONOCHROME2, MG,
ImageLaterality/ViewPosition; the phantoms of ``mammojax.data.synthetic``
upsampled) twice, uncompressed (explicit VR little endian) and JPEG 2000
lossless, each with a ``manifest.csv``; then, through the real CLI in a
subprocess (``mammojax data prepare --dataset csv ... --out OUT --image-size
1024x832 --workers W``), measures:

* images/s and bytes per prepared image, for each variant with 1 and 2 workers;
* peak RSS of the whole process tree (children included, sampled every 50 ms)
  preparing N and 4N uncompressed films: it should not grow with N;
* the restart: a preparation of the 4N films SIGKILLed (its whole process
  group) once about half of them are done, then run again: what the rerun's summary line says
  it decoded, reused and redid, and its wall time against a full run;
* tf.data read throughput with augmentation (``train_batches`` over the
  prepared dataset) against the jitted training step (1-channel ResNet-18)
  at the same input shape, after a separately timed compile;

then prints a table, the arithmetic for ``--extrapolate`` images (54,000: RSNA),
and one JSON line with every figure.

    python scripts/bench_scale.py --quick                 # smoke run: small films, 4 and 16 images
    python scripts/bench_scale.py                         # N=16 (4N=64) uncompressed, 16 JPEG 2000
    python scripts/bench_scale.py --count 32 --j2k-count 32 --workers 1 2 4

Run it on a quiet machine (never beside another benchmark on the 2-core boxes):
every figure is a wall time. Writing a film takes about 1 s uncompressed and 3 s
as JPEG 2000 on the 2-core machine, 17 MB and ~5.5 MB on disk; ``--work-dir``
keeps them for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import time_train_pipeline  # noqa: E402
from bench_train import build_jax  # noqa: E402

RSS_INTERVAL_S = 0.05
MIB = 1 << 20
_PROGRESS = re.compile(rb"(\d+)/(\d+)")  # tqdm's "12/64 [..." (the last one on the line is current)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # tqdm's cursor moves
_SUMMARY_FIELDS = ("decoded", "reused", "redone", "excluded")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=None, help="uncompressed films N (default 16)")
    parser.add_argument("--scale", type=int, default=None, help="the memory run prepares scale x N (default 4)")
    parser.add_argument("--j2k-count", type=int, default=None,
                        help="JPEG 2000 films (default 16: each takes ~1 s to decode)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--film-shape", default=None, help="rows x columns of a film (default 3328x2560)")
    parser.add_argument("--image-size", default=None, help="prepared H x W (default 1024x832)")
    parser.add_argument("--batch-size", type=int, default=None, help="reader and train step batch (default 2)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed train steps (default 2)")
    parser.add_argument("--pipeline-images", type=int, default=None,
                        help="images timed through train_batches (default 64)")
    parser.add_argument("--extrapolate", type=int, default=54_000, help="images in the arithmetic (RSNA)")
    parser.add_argument("--work-dir", default=None, help="keep films and outputs here (default: a temp folder)")
    parser.add_argument("--skip-train-step", action="store_true", help="measure the data side only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 416x320 films at 128x104, N=4, 1 train step")
    args = parser.parse_args(argv)
    quick = args.quick
    args.count = args.count or (4 if quick else 16)
    args.scale = args.scale or 4
    args.j2k_count = args.j2k_count or (4 if quick else 16)
    from mammojax.data.preprocess import input_shape

    args.film_shape = input_shape(args.film_shape or ("416x320" if quick else "3328x2560"), name="--film-shape")
    args.image_size = input_shape(args.image_size or ("128x104" if quick else "1024x832"), name="--image-size")
    args.batch_size = args.batch_size or 2
    args.train_steps = args.train_steps or (1 if quick else 2)
    args.pipeline_images = args.pipeline_images or (16 if quick else 64)
    return args


# --- the corpus ---------------------------------------------------------------------------


def write_corpora(root: Path, args) -> dict[str, Path]:
    """Folders holding films and ``manifest.csv``: ``raw`` (N), ``raw4`` (scale x N), ``j2k``."""
    from mammojax.data.adapters.synthetic import write_dicom_films
    from mammojax.data.synthetic import JPEG_2000_LOSSLESS

    plan = {"raw": (args.count, None), f"raw{args.scale}": (args.count * args.scale, None),
            "j2k": (args.j2k_count, JPEG_2000_LOSSLESS)}
    folders = {}
    for name, (count, syntax) in plan.items():
        folder = root / "films" / name
        if _manifest_rows(folder) != count:  # --work-dir: written once, reused
            start = time.perf_counter()
            write_dicom_films(folder, count=count, shape=args.film_shape, seed=0, transfer_syntax=syntax)
            print(f"wrote {count} {name} films in {time.perf_counter() - start:.1f} s "
                  f"({folder_bytes(folder / 'films') / count / MIB:.1f} MiB each)", file=sys.stderr)
        folders[name] = folder
    return folders


def _manifest_rows(folder: Path) -> int:
    try:
        return len((folder / "manifest.csv").read_text().splitlines()) - 1
    except OSError:
        return -1


def folder_bytes(folder: Path) -> int:
    """Bytes on disk under ``folder``, each file once (a prepared dataset's shards are hard links)."""
    sizes = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            sizes[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(sizes.values())


# --- one preparation in a subprocess, watched ------------------------------------------------


class TreeRss:
    """Peak resident memory of a process and all its descendants, sampled in a thread.

    The sum of RSS counts pages shared between processes (the interpreter and
    libraries of forked workers) once per process: an upper bound on the tree's
    real footprint, and the number a scheduler's memory limit sees.
    """

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.peak_processes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                return  # the root has exited
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass  # a worker that just exited
            if total > self.peak:
                self.peak, self.peak_processes = total, len(processes)
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def prepare_command(data_dir: Path, out: Path, image_size: tuple[int, int], workers: int) -> list[str]:
    return [sys.executable, "-m", "mammojax", "data", "prepare", "--dataset", "csv", "--data-dir", str(data_dir),
            "--out", str(out), "--image-size", f"{image_size[0]}x{image_size[1]}", "--workers", str(workers)]


def run_prepare(command: list[str], *, kill_at: int | None = None, kill_after: float | None = None) -> dict:
    """Runs one preparation; SIGKILLs its process group once ``kill_at`` images are
    done (tqdm's count on stderr), or after ``kill_after`` seconds if no count
    has been drawn by then.

    stderr is a pseudo-terminal, so the progress bar is drawn as a user sees it
    and its count can be read. Returns wall time, peak tree RSS, the summary
    line's counts, the last stdout line, and whether (and when) it was killed.
    """
    import pty

    master, slave = pty.openpty()
    _set_terminal_width(slave, 120)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=slave,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    os.close(slave)
    rss = TreeRss(process.pid)
    stdout_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stdout_chunks.append(process.stdout.read()), daemon=True)
    reader.start()
    stderr, done, seen_count, killed_at = bytearray(), 0, False, None
    counts: list[tuple[float, int]] = []  # (seconds, images done) each time the count moves
    while True:
        chunk = _read_pty(master, timeout=0.1)
        if chunk is None:  # every writer closed the terminal: the tree has exited
            break
        stderr += chunk
        matches = _PROGRESS.findall(bytes(stderr[-400:]))
        elapsed = time.perf_counter() - start
        if matches and int(matches[-1][0]) != done:
            done = int(matches[-1][0])
            counts.append((elapsed, done))
        seen_count = seen_count or bool(matches)
        if killed_at is None and ((kill_at is not None and done >= kill_at)
                                  or (kill_after is not None and not seen_count and elapsed >= kill_after)):
            os.killpg(process.pid, signal.SIGKILL)
            killed_at = {"seconds": round(elapsed, 2), "images_done": done}
    process.wait()
    wall = time.perf_counter() - start
    os.close(master)
    reader.join()
    peak = rss.stop()
    text = _ANSI.sub("", stderr.decode(errors="replace").replace("\r", "\n"))
    stdout = b"".join(stdout_chunks).decode(errors="replace").strip().splitlines()
    result = {"wall_s": round(wall, 2), "peak_rss_mib": round(peak / MIB, 1), "processes": rss.peak_processes,
              "returncode": process.returncode, "out": stdout[-1] if stdout else None, "killed": killed_at,
              "summary": parse_summary(text), "steady_images_per_s": steady_rate(counts)}
    if killed_at is None and process.returncode != 0:
        tail = "\n".join(line for line in text.splitlines() if line.strip())[-2000:]
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{tail}")
    return result


def steady_rate(counts: list[tuple[float, int]]) -> float | None:
    """Images/s from the first finished image to the last: start-up (interpreter, TensorFlow,
    spawning workers) excluded, the rate a long preparation runs at."""
    if len(counts) < 2 or counts[-1][0] <= counts[0][0]:
        return None
    (t0, n0), (t1, n1) = counts[0], counts[-1]
    return round((n1 - n0) / (t1 - t0), 3)


def parse_summary(stderr: str) -> dict | None:
    """The counts of the ``prepared ...`` line (``N decoded, M reused, K redone, E excluded``)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith("prepared ")]
    if not lines:
        return None
    counts = {"line": lines[-1].strip()}
    for field in _SUMMARY_FIELDS:
        match = re.search(rf"(\d+) {field}", lines[-1])
        counts[field] = int(match.group(1)) if match else None
    # Its own time, interpreter and TensorFlow start-up excluded: the rate a long run approaches.
    match = re.search(r"([\d.]+) s, ([\d.]+) decoded images/s", lines[-1])
    counts["seconds"], counts["rate"] = (float(match.group(1)), float(match.group(2))) if match else (None, None)
    return counts


def _set_terminal_width(fd: int, columns: int) -> None:
    """A pty starts 0 columns wide; tqdm then leaves out the count this script reads."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


def _read_pty(fd: int, timeout: float) -> bytes | None:
    """What the terminal has (b"" when nothing yet); None once every writer has closed it."""
    import select

    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        data = os.read(fd, 65536)
    except OSError:  # EIO: the last process holding the terminal exited
        return None
    return data or None


# --- the measurements -------------------------------------------------------------------------


def measure_prepare(name: str, folder: Path, out: Path, args, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    result = run_prepare(prepare_command(folder, out, args.image_size, workers))
    examples = prepared_examples(out)
    result.update(variant=name, workers=workers, examples=examples,
                  images_per_s=round(examples / result["wall_s"], 3),
                  bytes_per_image=folder_bytes(out) // max(examples, 1))
    print(f"{name} x{workers}: {examples} images in {result['wall_s']:.1f} s, peak RSS "
          f"{result['peak_rss_mib']:.0f} MiB ({result['processes']} processes)", file=sys.stderr)
    return result


def prepared_examples(out: Path) -> int:
    from mammojax.data.prepared import open_prepared

    return len(open_prepared(out))


def measure_restart(folder: Path, out: Path, args, workers: int, *, full: dict) -> dict:
    """SIGKILL at about half the images (at 60 % of a full run's time if no progress is drawn), rerun."""
    shutil.rmtree(out, ignore_errors=True)
    killed = run_prepare(prepare_command(folder, out, args.image_size, workers),
                         kill_at=max(1, full["examples"] // 2), kill_after=full["wall_s"] * 0.6)
    rerun = run_prepare(prepare_command(folder, out, args.image_size, workers))
    print(f"restart: killed at {killed['killed']}, rerun {rerun['summary']}", file=sys.stderr)
    return {"workers": workers, "killed": killed["killed"], "rerun_wall_s": rerun["wall_s"],
            "full_wall_s": full["wall_s"], "rerun_summary": rerun["summary"],
            "rerun_examples": prepared_examples(out)}


def measure_reader(out: Path, args) -> dict:
    """Steady-state images/s of the augmented training pipeline over the prepared dataset."""
    from mammojax.config import base_config
    from mammojax.data.prepared import open_prepared

    dataset = open_prepared(out)
    config = base_config()
    config.train.batch_size = args.batch_size
    return {"images_per_s": round(time_train_pipeline(dataset, config, args.pipeline_images), 2),
            "image_shape": list(dataset.image_shape)}


def measure_train_step(args) -> dict:
    """The project's jitted train step (ResNet-18, Adam; ``bench_train``'s) at ``image_size``:
    compile, one warm-up step, then the steady state."""
    run, compile_s = build_jax(argparse.Namespace(image_size=args.image_size, batch_size=args.batch_size, warmup=1))
    seconds = run(args.train_steps) / args.train_steps
    return {"compile_s": round(compile_s, 1), "seconds_per_step": round(seconds, 2),
            "images_per_s": round(args.batch_size / seconds, 3)}


# --- the report -------------------------------------------------------------------------------


def extrapolate(rows: list[dict], images: int, workers: list[int]) -> list[dict]:
    """Hours and disk for ``images``: on this machine at its steady rate with the most workers, and
    on 16 cores at 16 x the steady rate per worker of the fewest (decoding is per file: it scales
    with workers while nothing else, disk or memory bandwidth, runs out first)."""
    out = []
    for variant in ("raw", "j2k"):
        runs = {row["workers"]: row for row in rows if row["variant"] == variant}
        here, single = runs[max(workers)], runs[min(workers)]
        per_worker = single["steady_images_per_s"] / single["workers"]
        out.append({"variant": variant, "per_worker_images_per_s": round(per_worker, 3),
                    "hours_here": round(images / here["steady_images_per_s"] / 3600, 2), "workers_here": max(workers),
                    "hours_16_workers": round(images / (16 * per_worker) / 3600, 2),
                    "gib": round(images * here["bytes_per_image"] / (1 << 30), 1)})
    return out


def print_report(report: dict, args) -> None:
    height, width = args.image_size
    print(f"\nprepare at {height}x{width} from {args.film_shape[0]}x{args.film_shape[1]} 14-bit DICOM films; "
          f"{report['cpus']} cpus, 1-min load average {report['load_average'][0]} before, "
          f"{report['load_average'][1]} after")
    print("(img/s: over the command's wall time; steady: from the first image done to the last, start-up excluded)")
    header = (f"{'variant':<8} {'workers':>7} {'images':>6} {'wall s':>7} {'img/s':>7} {'steady':>7} "
              f"{'KiB/img':>8} {'peak RSS MiB':>13}")
    print(header)
    print("-" * len(header))
    for row in report["prepare"]:
        print(f"{row['variant']:<8} {row['workers']:>7} {row['examples']:>6} {row['wall_s']:>7.1f} "
              f"{row['images_per_s']:>7.2f} {row['steady_images_per_s'] or float('nan'):>7.2f} "
              f"{row['bytes_per_image'] / 1024:>8.0f} "
              f"{row['peak_rss_mib']:>13.0f}")
    small, big = (next(r for r in report["prepare"] if r["variant"] == v and r["workers"] == max(args.workers))
                  for v in ("raw", "raw-4N"))
    print(f"peak RSS, {small['examples']} vs {big['examples']} images: {small['peak_rss_mib']:.0f} vs "
          f"{big['peak_rss_mib']:.0f} MiB ({big['peak_rss_mib'] / small['peak_rss_mib']:.2f}x)")
    restart = report.get("restart")
    if restart:
        summary = restart["rerun_summary"] or {}
        print(f"\nrestart ({restart['workers']} workers): SIGKILL at {restart['killed']}; rerun "
              f"{restart['rerun_wall_s']:.1f} s vs full {restart['full_wall_s']:.1f} s; "
              f"rerun says: {summary.get('line', '(no summary line)')}")
    reader, step = report.get("reader"), report.get("train_step")
    if reader:
        print(f"\ntrain_batches (augmented, batch {args.batch_size}): {reader['images_per_s']:.1f} images/s")
    if step:
        print(f"train step (ResNet-18, batch {args.batch_size}, {height}x{width}): {step['images_per_s']:.2f} "
              f"images/s, {step['seconds_per_step']:.2f} s/step, compile {step['compile_s']:.1f} s")
    if reader and step:
        print(f"reader / train step: {reader['images_per_s'] / step['images_per_s']:.1f}x")
    print(f"\n{args.extrapolate:,} images:")
    for row in report["extrapolation"]:
        print(f"  {row['variant']:<4} {row['hours_here']:.1f} h here ({row['workers_here']} workers); "
              f"{row['hours_16_workers']:.1f} h on 16 cores at {row['per_worker_images_per_s']:.2f} img/s per worker; "
              f"{row['gib']:.0f} GiB prepared")
    print(json.dumps(report))


def main(argv=None) -> int:
    args = parse_args(argv)
    from mammojax import runtime

    runtime.setup(compilation_cache=False)  # time real compiles, not cache hits
    scratch = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="mammojax-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]  # other jobs on the machine slow every figure: say how busy it was
    print(f"cpus: {os.cpu_count()}; work dir {scratch}", file=sys.stderr)
    try:
        folders = write_corpora(scratch, args)
        rows = []
        for name in ("raw", "j2k"):
            for workers in args.workers:
                rows.append(measure_prepare(name, folders[name], scratch / "out" / f"{name}-{workers}", args,
                                            workers))
        most = max(args.workers)
        big = measure_prepare(f"raw{args.scale}", folders[f"raw{args.scale}"], scratch / "out" / "raw4", args, most)
        big["variant"] = "raw-4N"
        rows.append(big)
        report = {"film_shape": list(args.film_shape), "image_size": list(args.image_size), "cpus": os.cpu_count(),
                  "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                  "prepare": rows,
                  "restart": measure_restart(folders[f"raw{args.scale}"], scratch / "out" / "restart", args, most,
                                             full=big),
                  "reader": measure_reader(scratch / "out" / f"raw-{most}", args)}
        if not args.skip_train_step:
            report["train_step"] = measure_train_step(args)
        report["extrapolation"] = extrapolate(rows, args.extrapolate, args.workers)
    finally:
        if not args.work_dir:
            shutil.rmtree(scratch, ignore_errors=True)
    print_report(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
