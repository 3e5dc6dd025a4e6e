"""DICOM results a PACS can file: ``predict --dicom-out DIR``.

For each scored DICOM input two objects are written, built with highdicom
(which makes standard-conformant objects with correct references, instead of
hand-written pydicom datasets):

* ``<stem>_sr.dcm``: a **Comprehensive 3D SR** holding a TID 1500 Imaging
  Measurement Report. Its measurement groups:

  - ``image``: the probability of the checkpoint's positive class, tau, the
    temperature and offset of the image level, and the decision (the class called at
    tau), with the algorithm's name (``mammojax <model>``) and version, the
    source image referenced;
  - one ``breast L`` / ``breast R`` group per breast of the exam and one
    ``exam`` group: the level's probability (its derivation ``Maximum`` or
    ``Mean``, the rule that made it from the images' lesion margins), tau
    and decision, at that level's stored operating point
    (:mod:`mammojax.clinic.exams`), referencing every image of the group;
  - ``heatmap peak region``, when the heatmap has a clear peak
    (:func:`peak_region`): a planar ROI, the bounding rectangle of the peak
    region in the source image's pixels, with the share of the breast it
    covers.

  Numbers the standard has a code for use it (DCM 111047 "Probability of
  cancer" when the positive class is malignancy, DCM 122411 "Threshold
  Value", SCT Maximum/Mean, SCT Left/Right breast); the others are in the
  private coding scheme ``99MAMMOJAX``, as PS3.16 provides for.

* ``<stem>_sc.dcm``: a **Secondary Capture** (RGB) of the heatmap overlay
  over the breast, on the source image's own pixel grid (the overlay
  ``explain`` writes), with a Source Image Sequence pointing at the input.

Both are new instances in new series (numbers :data:`SR_SERIES_NUMBER`,
:data:`SC_SERIES_NUMBER`, one pair of series per study and run) of the
*source study*, and both copy the patient and study modules of the input, as
a PACS needs to file them with the right woman. These objects are the only
place mammojax puts identifiers; nothing returned or printed here carries
one (messages name paths and counts only).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from mammojax.errors import ImageReadError, MammojaxError
from mammojax.data.dicom import read_header
from mammojax.explain.explain import Explainer, output_stems
from mammojax.explain.overlay import blend

PRIVATE_SCHEME = "99MAMMOJAX"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
SR_SUFFIX, SC_SUFFIX = "_sr.dcm", "_sc.dcm"
PEAK_LEVEL = 0.5  # the peak region: the connected heat >= half the peak, around it
PEAK_MAX_BREAST_SHARE = 0.25  # a peak is clear when its region covers at most this share of the breast
SERIES_DESCRIPTION = {"sr": "mammojax results (research tool, not a medical device)",
                      "sc": "mammojax heatmap overlay (research tool, not a medical device)"}
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclasses.dataclass
class DicomOutSummary:
    written: list = dataclasses.field(default_factory=list)  # (input path, SR path | None, SC path | None)
    not_dicom: list = dataclasses.field(default_factory=list)  # input paths
    skipped: list = dataclasses.field(default_factory=list)  # (input path, reason)


def peak_region(heatmap: np.ndarray, breast: np.ndarray) -> tuple[int, int, int, int, float] | None:
    """``(top, left, bottom, right, share)`` of the heatmap's peak region, or None without a clear peak.

    ``heatmap`` is the map as shown (0 off the breast, peak 1); the region is
    the connected set of pixels at :data:`PEAK_LEVEL` of the peak or more that
    holds the peak; its box is half-open, in the map's pixels. The peak is
    clear when that region covers at most :data:`PEAK_MAX_BREAST_SHARE` of the
    breast: a map hot over most of the breast points nowhere.
    """
    from scipy import ndimage

    heat = np.asarray(heatmap, np.float32)
    breast_area = int(np.count_nonzero(breast))
    if not breast_area or float(heat.max(initial=0.0)) <= 1e-6:
        return None
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    labels, _ = ndimage.label(heat >= PEAK_LEVEL * float(heat[peak]))
    region = labels == labels[peak]
    share = float(np.count_nonzero(region)) / breast_area
    if share > PEAK_MAX_BREAST_SHARE:
        return None
    rows, cols = np.nonzero(region)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1, share


def output_paths(out_dir: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    return Path(out_dir) / f"{stem}{SR_SUFFIX}", Path(out_dir) / f"{stem}{SC_SUFFIX}"


def check_dicom_out(out_dir: str | os.PathLike, items: Sequence, *, overwrite: bool = False) -> None:
    """The cheap checks before a ``--dicom-out`` run: highdicom importable, no output to be replaced."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise MammojaxError("--dicom-out needs highdicom: pip install 'mammojax[dicom]'") from None
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise MammojaxError(f"{out_dir}: is not a directory")
    if overwrite:
        return
    stems = output_stems([item.path for item in items])
    existing = [p for stem in stems for p in output_paths(out_dir, stem) if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise MammojaxError(f"{existing[0]}: already exists{more}; pass --overwrite to replace")


def report_lines(summary: DicomOutSummary, out_dir: str | os.PathLike) -> list[str]:
    """What ``predict`` says on stderr about its DICOM output (paths and counts only)."""
    lines = []
    if summary.not_dicom:
        n = len(summary.not_dicom)
        lines.append(f"mammojax: no DICOM output for {n} input{'s' if n > 1 else ''} that "
                     f"{'are' if n > 1 else 'is'} not DICOM (first: {summary.not_dicom[0]})")
    lines += [f"mammojax: no DICOM output for {path}: {reason}" for path, reason in summary.skipped]
    srs = sum(1 for _, sr, _ in summary.written if sr)
    scs = sum(1 for _, _, sc in summary.written if sc)
    lines.append(f"{srs} structured report{'s' if srs != 1 else ''} and {scs} secondary "
                 f"capture{'s' if scs != 1 else ''} written to {out_dir}")
    return lines


def write_dicom_results(scorer, image_rows: Sequence[dict], level_rows: Sequence[dict],
                        out_dir: str | os.PathLike, *, overwrite: bool = False) -> DicomOutSummary:
    """Writes the SR and the SC of every DICOM image row (``predict``'s rows) into ``out_dir``.

    ``scorer`` is the run's (a checkpoint's or an export's): it draws the
    heatmaps, one film per call; the probabilities and decisions are the
    rows' own, so the SR says what the CSV says. ``level_rows`` are the run's
    breast and exam rows. Refuses to replace existing files unless ``overwrite``.
    """
    explainer = Explainer.from_scorer(_one_film_per_call(scorer))

    summary = DicomOutSummary()
    dicom_rows = []
    for row in image_rows:
        if row.get("format") != "dicom":
            summary.not_dicom.append(row["path"])
        elif not row.get("exam"):
            summary.skipped.append((row["path"], "its header has no Study Instance UID"))
        else:
            dicom_rows.append(row)
    if not dicom_rows:
        return summary
    out_dir = Path(out_dir)
    stem_of = dict(zip([r["path"] for r in image_rows], output_stems([r["path"] for r in image_rows])))
    stems = [stem_of[r["path"]] for r in dicom_rows]
    if not overwrite:
        existing = [p for stem in stems for p in output_paths(out_dir, stem) if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise MammojaxError(f"{existing[0]}: already exists{more}; pass --overwrite to replace")
    out_dir.mkdir(parents=True, exist_ok=True)

    headers = {}
    for row in dicom_rows:
        try:
            header = read_header(row["path"])
        except ImageReadError as err:
            summary.skipped.append((row["path"], err.reason))
            continue
        missing = [k for k in _REQUIRED_UIDS if not str(header.get(k, "") or "").strip()]
        if missing:
            summary.skipped.append((row["path"], f"its header has no {', '.join(missing)}"))
            continue
        headers[row["path"]] = _with_type2_present(header)
    builder = _Builder(explainer)
    for row, stem in zip(dicom_rows, stems):
        header = headers.get(row["path"])
        if header is None:
            continue
        exam_rows = [r for r in dicom_rows if r["exam"] == row["exam"] and r["path"] in headers]
        levels = [r for r in level_rows if r.get("exam") == row["exam"]]
        try:
            explanation = explainer.explain_path(row["path"], row.get("laterality") or None)
        except ImageReadError as err:
            summary.skipped.append((row["path"], err.reason))
            continue
        sr_path, sc_path = output_paths(out_dir, stem)
        written = []
        for kind, path, build in (
                ("structured report", sr_path,
                 lambda: builder.structured_report(row, header, explanation, exam_rows, levels, headers)),
                ("secondary capture", sc_path, lambda: builder.secondary_capture(header, explanation))):
            try:
                with _quiet_highdicom():
                    built = build()
            except (ValueError, TypeError, AttributeError, KeyError) as err:
                # highdicom's messages can quote header values: only the kind of failure is told.
                summary.skipped.append((row["path"], f"cannot build its {kind} ({type(err).__name__})"))
                written.append(None)
                continue
            built.save_as(path, enforce_file_format=True)
            written.append(path)
        if any(written):
            summary.written.append((row["path"], *written))
    return summary


def dicom_results_zip(scorer, path: str | os.PathLike, *, name: str, probability: float,
                      laterality: str | None) -> tuple[bytes | None, str | None]:
    """One DICOM film's SR and SC as a zip for a download (the web page): ``(bytes, None)`` or ``(None, why)``.

    ``path`` is the film (the page's in-memory upload); ``probability`` the
    score already shown, so the SR says what the page says. The SR holds the
    image's result only: the page scores uploads one at a time, not as exams.
    ``name`` (the upload's own file name) names the entries; the reason for
    no output names no identifier.
    """
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return None, "DICOM results need highdicom: pip install 'mammojax[dicom]'"
    row = {"path": str(path), "format": "dicom", "exam": "exam-1", "laterality": laterality,
           "probability": float(probability), "tau": scorer.tau, "decision": scorer.decision(float(probability))}
    stem = Path(name).stem or "image"
    with tempfile.TemporaryDirectory(prefix="mammojax-dicom-") as tmp:
        summary = write_dicom_results(scorer, [row], [], tmp)
        if not summary.written:
            return None, summary.skipped[0][1] if summary.skipped else "no DICOM output"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for written, suffix in zip(summary.written[0][1:], (SR_SUFFIX, SC_SUFFIX)):
                if written:
                    archive.write(written, arcname=f"{stem}{suffix}")
    return buffer.getvalue(), None


# Type 2 attributes of the Patient and General Study modules: every image has them, possibly
# empty; highdicom reads each of them from the source, so a file that dropped one gets it empty.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _with_type2_present(header):
    missing = [k for k in _TYPE2 if k not in header]
    if not missing:
        return header
    header = copy.deepcopy(header)  # the header only: no pixel data was read
    for keyword in missing:
        setattr(header, keyword, None)
    return header


@contextlib.contextmanager
def _quiet_highdicom():
    """No highdicom log record or warning while objects are built: they quote UIDs and values."""
    logger = logging.getLogger("highdicom")  # its modules' loggers (highdicom.base, ...) propagate here
    sink = logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(sink)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            # Every warning, not only highdicom's module: with a stacklevel its warnings are
            # attributed to the caller. The reading threads have finished: nothing else runs here.
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.removeHandler(sink)
        logger.propagate = propagate


class _Builder:
    """Series per study, instance numbers and the shared SR content pieces of one run."""
    def __init__(self, explainer):
        import mammojax  # the package's version; the package imports this module's callers

        self.explainer = explainer
        self.scorer = explainer.scorer
        self.model_name = _model_name(self.scorer)
        self.version = mammojax.__version__
        self._series: dict[tuple[str, str], str] = {}
        self._instances: dict[str, int] = {}

    def _series_of(self, header, kind: str) -> tuple[str, int]:
        from pydicom.uid import generate_uid

        key = (str(header.StudyInstanceUID), kind)
        uid = self._series.setdefault(key, generate_uid())
        self._instances[uid] = self._instances.get(uid, 0) + 1
        return uid, self._instances[uid]

    # -- the Secondary Capture ----------------------------------------------------

    def secondary_capture(self, header, explanation):
        import highdicom as hd
        from pydicom.dataset import Dataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid


        overlay = blend(explanation.original, explanation.heatmap_original, alpha=0.4,
                        mask=explanation.breast_original)
        series, number = self._series_of(header, "sc")
        orientation = [str(v) for v in (header.get("PatientOrientation") or [])]
        laterality = str(header.get("ImageLaterality", "") or header.get("Laterality", "") or "").strip() or None
        sc = hd.sc.SCImage.from_ref_dataset(
            header, overlay, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
            series_instance_uid=series, series_number=SC_SERIES_NUMBER, sop_instance_uid=generate_uid(),
            instance_number=number, manufacturer="mammojax",
            patient_orientation=("A", "F"),  # replaced below: highdicom takes single letters only
            laterality=laterality if laterality in ("L", "R") else None,
            transfer_syntax_uid=ExplicitVRLittleEndian)
        # The source's own orientation (mammograms have compound values such as A\\FR, which
        # highdicom's enumeration refuses); type 2(C): empty when the source does not say, never guessed.
        sc.PatientOrientation = orientation if len(orientation) == 2 else None
        if "Laterality" not in sc:
            sc.Laterality = None
        sc.SeriesDescription = SERIES_DESCRIPTION["sc"]
        sc.ManufacturerModelName = self.model_name[:64]
        sc.SoftwareVersions = self.version
        sc.BurnedInAnnotation = "NO"
        sc.DerivationDescription = (f"{explanation.method} heatmap ({explanation.layer}) of {self.model_name} "
                                    "over the breast of the source image")[:1024]
        source = Dataset()
        source.ReferencedSOPClassUID = header.SOPClassUID
        source.ReferencedSOPInstanceUID = header.SOPInstanceUID
        if _frames(header):
            source.ReferencedFrameNumber = 1  # the frame mammojax reads and the overlay shows
        sc.SourceImageSequence = [source]
        return sc

    # -- the Structured Report ----------------------------------------------------------

    def structured_report(self, row, header, explanation, exam_rows, levels, headers):
        import highdicom as hd
        from pydicom.dataset import Dataset
        from pydicom.sr.codedict import codes
        from pydicom.uid import generate_uid

        algorithm = hd.sr.AlgorithmIdentification(name=self.model_name[:64], version=self.version)
        groups = [self._group("image", row["probability"], row["tau"], row["decision"], [header], algorithm,
                              laterality=row.get("laterality"), temperature=self.scorer.temperature,
                              offset=self.scorer.offset)]
        for level in levels:
            members = [headers[path] for path in level["members"] if path in headers]
            name = "exam" if level["kind"] == "exam" else f"breast {level['laterality'] or '(side unknown)'}"
            groups.append(self._group(name, level["probability"], level["tau"], level["decision"], members,
                                      algorithm, laterality=level.get("laterality") or None, rule=level["rule"]))
        region = self._peak_group(header, explanation, algorithm)
        if region is not None:
            groups.append(region)
        device = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=["mammojax", self.model_name, self.version]),
                name="mammojax", manufacturer_name="mammojax", model_name=self.model_name[:64]))
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=device),
            procedure_reported=hd.sr.CodedConcept("71651007", "SCT", "Mammography"),
            imaging_measurements=groups)
        evidence = [header] + [headers[r["path"]] for r in exam_rows if r["path"] != row["path"]]
        series, number = self._series_of(header, "sr")
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report, series_instance_uid=series, series_number=SR_SERIES_NUMBER,
            sop_instance_uid=generate_uid(), instance_number=number, manufacturer="mammojax",
            is_complete=True, is_final=False, is_verified=False)
        scheme = Dataset()  # declares the private coding scheme (PS3.3 C.12.1.1.6)
        scheme.CodingSchemeDesignator = PRIVATE_SCHEME
        scheme.CodingSchemeName = "mammojax result codes"
        scheme.CodingSchemeResponsibleOrganization = "mammojax"
        sr.CodingSchemeIdentificationSequence = [scheme]
        sr.SeriesDescription = SERIES_DESCRIPTION["sr"]
        sr.ManufacturerModelName = self.model_name[:64]
        sr.SoftwareVersions = self.version
        return sr

    def _group(self, name, probability, tau, decision, members, algorithm, *, laterality=None, rule=None,
               temperature=None, offset=None):
        import highdicom as hd

        derivation = None if rule is None else _derivation(rule)
        unit = hd.sr.CodedConcept("1", "UCUM", "no units")
        measurements = [
            hd.sr.Measurement(name=self._probability_concept(), value=float(probability), unit=unit,
                              derivation=derivation, algorithm_id=algorithm),
            hd.sr.Measurement(name=hd.sr.CodedConcept("122411", "DCM", "Threshold Value"), value=float(tau),
                              unit=unit),
        ]
        if temperature is not None:
            measurements.append(hd.sr.Measurement(name=_private("temperature", "Calibration temperature"),
                                                  value=float(temperature), unit=unit))
        if offset is not None:
            measurements.append(hd.sr.Measurement(name=_private("offset", "Calibration offset"),
                                                  value=float(offset), unit=unit))
        site = _breast_site(laterality)
        decision_value = _private(f"class-{self.scorer.class_names.index(decision)}", decision)
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(identifier=name),
            algorithm_id=algorithm, finding_sites=[site] if site is not None else None, measurements=measurements,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=_private("decision", "Decision at the operating point"), value=decision_value)],
            source_images=[hd.sr.SourceImageForMeasurementGroup(m.SOPClassUID, m.SOPInstanceUID, _frames(m))
                           for m in members])

    def _peak_group(self, header, explanation, algorithm):
        import highdicom as hd

        found = peak_region(explanation.heatmap_original, explanation.breast_original)
        if found is None:
            return None
        top, left, bottom, right, share = found
        # SCOORD image coordinates are (column, row) with the top-left pixel's
        # corner at (0, 0)... its centre at (0.5, 0.5): the box's pixel edges.
        corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]], np.float64)
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=corners,
                                   source_image=hd.sr.SourceImageForRegion(header.SOPClassUID,
                                                                           header.SOPInstanceUID, _frames(header)))
        method = _private(explanation.method.replace("+", "p")[:16], f"{explanation.method} ({explanation.layer})")
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(identifier="heatmap peak region"),
            referenced_region=region, finding_type=_private("heatmap-peak", "Heatmap peak region"),
            method=method, algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(name=_private("breast-share", "Share of the breast covered"),
                                            value=round(100.0 * share, 3),
                                            unit=hd.sr.CodedConcept("%", "UCUM", "percent"))])

    def _probability_concept(self):
        import highdicom as hd

        positive = self.scorer.positive_class
        if positive.lower() in ("malignant", "cancer", "malignancy"):
            return hd.sr.CodedConcept("111047", "DCM", "Probability of cancer")
        return _private("probability", f"Probability of {positive}"[:64])


def _private(value: str, meaning: str):
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning[:64])


# Digital X-ray, mammography and intra-oral images (For Presentation / For Processing) are
# single-frame SOP classes: a frame number must not be given in references to them.
_SINGLE_FRAME_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.1."


def _frames(header) -> list[int] | None:
    """``[1]`` for an instance of a multi-frame SOP class with frames (mammojax reads its first
    frame, e.g. of a tomosynthesis stack), else None."""
    if str(header.get("SOPClassUID", "")).startswith(_SINGLE_FRAME_CLASS_PREFIX):
        return None
    try:
        return [1] if int(header.get("NumberOfFrames", 1) or 1) > 1 else None
    except (TypeError, ValueError):
        return None


def _one_film_per_call(scorer):
    """The scorer with batches of one film per device: a heatmap pass is not padded to predict's batch."""
    single = copy.copy(scorer)  # shares the placed variables and the compiled-program cache
    mesh = getattr(scorer, "mesh", None)
    single.batch_size = int(mesh.devices.size) if mesh is not None else 1
    return single


def _model_name(scorer) -> str:
    checkpoint = getattr(scorer, "checkpoint", None)
    name = getattr(checkpoint, "model_name", None) or "model"
    return f"mammojax {name}"


def _derivation(rule: str):
    """SCT Maximum or Mean: how a breast's or an exam's score was made from its images'."""
    import highdicom as hd

    return {"max": hd.sr.CodedConcept("56851009", "SCT", "Maximum"),
            "mean": hd.sr.CodedConcept("373098007", "SCT", "Mean")}[rule]


def _breast_site(laterality: str | None):
    import highdicom as hd

    site = {"L": ("80248007", "Left breast"), "R": ("73056007", "Right breast")}.get(laterality or "")
    return None if site is None else hd.sr.FindingSite(anatomic_location=hd.sr.CodedConcept(site[0], "SCT", site[1]))
