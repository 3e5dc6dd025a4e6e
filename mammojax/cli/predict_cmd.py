"""`mammojax predict`: score image files, folders or a CSV manifest.

A thin layer over :mod:`mammojax.predict` (row format documented there).
"""

from __future__ import annotations

import sys

import click

from mammojax.cli.outcome import EXIT_STATUS_HELP


@click.command("predict", epilog=EXIT_STATUS_HELP)
@click.option("--checkpoint", required=True, type=click.Path(),
              help="Checkpoint directory, training workdir (its best/ is used) or `mammojax export` directory.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", default=None, type=click.Path(),
              help="Output file (.csv, or .jsonl for JSON Lines); default: stdout.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--json", "as_json", is_flag=True, help="Write JSON Lines instead of CSV.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 4096))
@click.option("--tta-hflip", is_flag=True,
              help="Also average over each image's mirror (default: as the checkpoint scores films).")
@click.option("--dicom-out", default=None, type=click.Path(file_okay=False),
              help="Also write, per DICOM input, a Structured Report and a Secondary Capture of the "
                   "heatmap overlay into this folder (for a PACS; they carry the input's patient and "
                   "study modules). A DICOM input that gets none (each named on stderr) makes the "
                   "run partial: exit status 3.")
def predict(checkpoint, inputs, out, overwrite, as_json, batch_size, tta_hflip, dicom_out):
    """Score INPUTS (image files, folders searched recursively, or .csv manifests
    with a `path` column) and write one row per image, one error row per
    unreadable file, then one row per patient (kind=patient, max over her
    images). A summary goes to stderr.

    Columns: kind, path, patient_id, probability (of the checkpoint's positive
    class, e.g. abnormal), decision (the class called at the checkpoint's tau,
    by name), n_images (patient rows), warning (a score not to trust: a FOR
    PROCESSING image; patient rows count them), error (error rows).

    Patients: a manifest's patient_id column; else a known dataset's file
    naming (MIAS mdb001 + mdb002 are one woman, mias001); else the file-name
    stem without trailing laterality/view tokens (P001_L_CC.png and
    P001_R_MLO.png are P001). DICOM headers never name patients. DICOM images
    are also grouped into exams (Study Instance UID, shown as exam-1, exam-2...)
    and breasts (laterality): kind=breast and kind=exam rows, each at its own
    stored operating point, with its tau and rule (max or mean)."""
    from mammojax import predict as lib
    from mammojax.cli import outcome

    # Cheap checks first: a missing input, no image at all or an existing
    # --out fails in milliseconds, before JAX loads or --out is created.
    items = lib.collect_inputs(inputs)
    outcome.require_images(items, inputs)
    lib.check_output(out, overwrite=overwrite)
    fmt = lib.output_format(out, as_json)
    if dicom_out:
        from mammojax.clinic.dicom_out import check_dicom_out

        check_dicom_out(dicom_out, items, overwrite=overwrite)

    from mammojax import runtime

    runtime.setup()
    from mammojax.export import load_scorer
    from mammojax.progress import progress_bar

    scorer = load_scorer(checkpoint, batch_size=batch_size, tta_hflip=True if tta_hflip else None)
    from mammojax.checkpoint import training_data_warning

    warning = training_data_warning(scorer.checkpoint.meta)
    if warning:
        click.echo(f"mammojax: warning: {warning}", err=True)
    stream = lib.open_output(out, overwrite=overwrite)
    progress = progress_bar(len(items), desc="predict")
    try:
        summary = lib.run_predict(scorer, items, stream, fmt, progress=progress,
                                  aggregate=scorer.checkpoint.patient_aggregate)
    finally:
        progress.close()
        if stream is not sys.stdout:
            stream.close()
    for path, reason in summary.skipped:
        outcome.report_skipped(path, reason)
    rate = summary.scored / summary.seconds if summary.seconds > 0 else 0.0
    flagged = "".join(f" ({n} flagged: {reason}; see the warning column)" for reason, n in summary.flagged.items())
    exams = f", {summary.exams} exams ({summary.breasts} breasts)" if summary.exams else ""
    click.echo(f"{summary.scored} scored{flagged}, {summary.failed} failed, {summary.patients} patients{exams} "
               f"({rate:.1f} images/s)", err=True)
    if dicom_out:
        from mammojax.clinic.dicom_out import report_lines, write_dicom_results

        written = write_dicom_results(scorer, summary.images, summary.levels, dicom_out, overwrite=overwrite)
        for line in report_lines(written, dicom_out):
            click.echo(line, err=True)
        # A DICOM input whose results could not be written for the PACS is a partial run (exit 3),
        # like an unreadable file; a non-DICOM input was never meant to get DICOM output.
        outcome.finish(summary.scored, summary.failed + len(written.skipped))
        return
    outcome.finish(summary.scored, summary.failed)
