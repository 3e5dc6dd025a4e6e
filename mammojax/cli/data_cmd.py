"""``mammojax data``: look at a dataset before training on it.

``summary`` loads a dataset through its adapter and prints what training would
see (images, patients, labels, views, sides) and every file left out with the
reason; ``--screen`` also opens each image. ``prepare`` decodes a dataset once
into a TFDS dataset that training, evaluation and cross-validation read. Both are thin calls into ``mammojax.data``.
"""

from __future__ import annotations

import ast
import sys

import click

from mammojax.cli.params import InputShape

DATASET_HELP = "synthetic | mias | inbreast | cbis_ddsm | vindr | rsna | csv"


def parse_adapter_options(pairs: tuple[str, ...]) -> dict:
    """``("birads3=negative", "count=64")`` -> ``{"birads3": "negative", "count": 64}``."""
    from mammojax.errors import MammojaxError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MammojaxError(f"adapter option {pair!r} must look like KEY=VALUE")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value  # a bare word is a string
    return options


def dataset_options(function):
    """The options every ``data`` subcommand shares to name a dataset."""
    function = click.option("--option", "-o", "adapter_options", multiple=True, metavar="KEY=VALUE",
                            help="Adapter option, e.g. -o birads3=negative or -o count=64.")(function)
    function = click.option("--task", default="default", show_default=True,
                            help="Label definition, e.g. mias: abnormal | malignant.")(function)
    function = click.option("--data-dir", default="", help="Dataset folder, archive or manifest "
                            "(optional for synthetic).")(function)
    function = click.option("--dataset", required=True, help=DATASET_HELP)(function)
    return function


@click.group()
def data():
    """Inspect, screen and cache datasets."""


@data.command()
@dataset_options
@click.option("--screen/--no-screen", default=False, show_default=True,
              help="Also open every image and exclude unreadable or oversized ones.")
@click.option("--max-pixels", type=int, default=80_000_000, show_default=True,
              help="Screening cap on decoded pixels per image.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def summary(dataset, data_dir, task, adapter_options, screen, max_pixels, as_json):
    """Images, patients, class/view/side counts and excluded files of a dataset."""
    from mammojax.data.records import dataset_task, load_dataset

    loaded = load_dataset(dataset, data_dir, task=task, **parse_adapter_options(adapter_options))
    flagged = []
    if screen:
        loaded, flagged = _screen(loaded, max_pixels)
    meaning = dataset_task(dataset, task)
    counts = loaded.summary()
    report = {"dataset": dataset, "data_dir": data_dir, "task": task, "task_description": meaning.description,
              "class_names": list(meaning.class_names), **counts,
              "classes": {meaning.class_names[int(label)]: n for label, n in counts["labels"].items()},
              "exclusions": [{"path": e.path, "reason": e.reason, **({"source": e.source} if e.source else {})}
                             for e in loaded.excluded]}
    if screen:
        report["flagged"] = [{"path": f.path, "reason": f.reason} for f in flagged]
    if as_json:
        import json

        click.echo(json.dumps(report, indent=2))
        return
    _print_text(report)


def _screen(loaded, max_pixels):
    """Drops records whose image fails ``screen_files`` and adds its exclusions.

    Returns the screened records and the kept-but-flagged files (FOR PROCESSING).
    """
    import dataclasses

    from tqdm import tqdm

    from mammojax.data.screening import screen_files

    paths = [r.path for r in loaded.records]
    with tqdm(total=len(paths), unit="img", desc="screening", file=sys.stderr,
              disable=not paths, dynamic_ncols=True) as bar:
        def advance(done: int) -> None:
            bar.update(done - bar.n)

        flagged: list = []
        passed, failed = screen_files(paths, max_pixels=max_pixels, progress=advance, flagged=flagged)
    ok = set(passed)
    screened = dataclasses.replace(loaded, records=[r for r in loaded.records if r.path in ok],
                                   excluded=(*loaded.excluded, *failed))
    return screened, flagged


def _print_text(report: dict) -> None:
    def counts(values: dict) -> str:
        return "  ".join(f"{k}: {v}" for k, v in values.items()) or "-"

    click.echo(f"dataset {report['dataset']} (task {report['task']}: {report['task_description']}): "
               f"{report['images']} images, {report['patients']} patients")
    classes = {f"{name} ({label})": report["labels"].get(str(label), 0)
               for label, name in enumerate(report["class_names"])}
    click.echo(f"classes     {counts(classes)}")
    click.echo(f"views       {counts(report['views'])}")
    click.echo(f"laterality  {counts(report['laterality'])}")
    for note, number in report["notes"].items():
        click.echo(f"{number:6d}  {note}")
    names = report["class_names"]
    for column, info in report.get("columns", {}).items():
        if "counts" in info:
            cells = "  ".join(f"{value}: " + "/".join(str(per.get(str(i), 0)) for i in range(len(names)))
                              for value, per in info["counts"].items())
            click.echo(f"{column:<11} {cells}   ({'/'.join(names)})")
        elif "mean_by_label" in info:
            means = "  ".join(f"{names[int(k)]}: {v}" for k, v in info["mean_by_label"].items())
            click.echo(f"{column:<11} mean {means}" + (f"  ({info['missing']} missing)" if info["missing"] else ""))
    click.echo(f"excluded    {report['excluded']}")
    for reason, number in report["exclusion_reasons"].items():
        click.echo(f"  {number:6d}  {reason}")
    shown = report["exclusions"][:20]
    for item in shown:
        source = f" ({item['source']})" if item.get("source") else ""
        click.echo(f"  {item['path']}: {item['reason']}{source}")
    if len(report["exclusions"]) > len(shown):
        click.echo(f"  ... {len(report['exclusions']) - len(shown)} more (use --json for all)")
    if "flagged" in report:
        _print_flagged(report["flagged"])


def _print_flagged(flagged: list[dict]) -> None:
    """Kept but not to be trusted: a count per reason, then the files."""
    import collections

    click.echo(f"flagged     {len(flagged)}")
    for reason, number in collections.Counter(f["reason"] for f in flagged).most_common():
        click.echo(f"  {number:6d}  {reason}")
    for item in flagged[:20]:
        click.echo(f"  {item['path']}: {item['reason']}")
    if len(flagged) > 20:
        click.echo(f"  ... {len(flagged) - 20} more (use --json for all)")


@data.command()
@dataset_options
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Directory of the prepared TFDS dataset (new, or one prepared before from the same "
                   "source and options: then only new or unfinished files are decoded). Default: "
                   "prepared/ in the user cache ($MAMMOJAX_CACHE_DIR or ~/.cache/mammojax).")
@click.option("--image-size", default="224", show_default=True, type=InputShape(),
              help="Model input: S (S x S) or HxW, e.g. 1024x832 (the breast keeps its aspect).")
@click.option("--orient/--no-orient", default=False, show_default=True,
              help="Flip every breast to face the same side.")
@click.option("--crop-breast/--no-crop-breast", default=False, show_default=True,
              help="Crop to the breast region before resizing.")
@click.option("--fix-inverted/--no-fix-inverted", default=True, show_default=True,
              help="Invert films with a white background (MONOCHROME1 exported without its inversion).")
@click.option("--max-pixels", type=int, default=80_000_000, show_default=True,
              help="Screening cap on decoded pixels per image.")
@click.option("--workers", type=int, default=None, help="Decoding processes (default: every core).")
@click.option("--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True,
              help="local: a process pool; beam: an Apache Beam pipeline (pip install 'mammojax[beam]').")
@click.option("--beam-options", multiple=True, metavar="ARGS",
              help='Beam pipeline options, e.g. --beam-options="--runner=FlinkRunner --flink_master=H:8081".')
def prepare(dataset, data_dir, task, adapter_options, out, image_size, orient, crop_breast, fix_inverted,
            max_pixels, workers, runner, beam_options):
    """Decode a dataset once into a TFDS dataset (ArrayRecord); prints its directory.

    Rerun it after an interruption or after adding files: only what is not
    prepared yet is decoded.
    """
    from mammojax.data.prepared import PixelOptions
    from mammojax.data.preparation import prepare_source
    options = PixelOptions(image_shape=image_size, orient=orient, crop_breast=crop_breast,
                           max_pixels=max_pixels, fix_inverted=fix_inverted)
    prepared, report = prepare_source(dataset, data_dir, task=task,
                                      adapter_options=parse_adapter_options(adapter_options),
                                      options=options, out=out, workers=workers, runner=runner,
                                      beam_options=beam_options)
    click.echo(report.line(), err=True)
    click.echo(str(prepared.path))
