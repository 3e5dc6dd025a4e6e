"""Evaluation reports: one self-contained HTML page and a Markdown twin.

Both are rendered from the same ``metrics.json`` dict, so they can never
disagree. Figures are PNGs written to ``figures/`` (linked from the Markdown)
and embedded as base64 in the HTML, which therefore loads nothing from
anywhere: it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from mammojax.data.records import DEFAULT_CLASS_NAMES
from mammojax.evaluation import shortcuts

FIGURES = ("roc", "pr", "confusion", "histogram", "reliability")
_ROWS = (("tau", "Threshold tau"), ("temperature", "Temperature"), ("offset", "Offset"), ("auc", "AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
         ("ppv", "PPV (precision)"), ("npv", "NPV"), ("f1", "F1"), ("accuracy", "Accuracy"),
         ("tp", "TP"), ("fp", "FP"), ("tn", "TN"), ("fn", "FN"), ("n", "N"), ("n_pos", "Positives"))


def class_names_of(result: dict) -> list[str]:
    """The evaluated task's class names in a result (older results: the checkpoint default)."""
    return list(result.get("class_names") or DEFAULT_CLASS_NAMES)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _auc_with_ci(level: dict) -> str:
    ci = level.get("auc_ci") or {}
    text = _fmt(level.get("auc"))
    if ci.get("low") is not None and ci.get("high") is not None:
        pct = int(round(100 * ci.get("confidence", 0.95)))
        text += f" ({pct}% CI {_fmt(ci['low'])}-{_fmt(ci['high'])})"
    return text


def metrics_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the metrics table (levels as columns)."""
    levels = result["levels"]
    header = ["Metric"] + [f"{name.capitalize()} level" for name in levels]
    rows = []
    for key, label in _ROWS:
        cells = [_auc_with_ci(levels[name]) if key == "auc" else _fmt(levels[name].get(key))
                 for name in levels]
        rows.append([label] + cells)
    return header, rows


def _summary_lines(result: dict) -> list[str]:
    cal = result["calibration"]
    negative, positive = class_names_of(result)
    lines = [
        f"Checkpoint: {result.get('checkpoint', '?')} (model {result.get('model', '?')})",
        f"Classes: {positive} (positive, 1) vs {negative} (0)"
        + (f": {result['task_description']}" if result.get("task_description") else ""),
        f"Data: {result.get('dataset', '?')} / task {result.get('task', '?')} / split "
        f"{result.get('split', '?')} (seed {result.get('seed', '?')}): {result['n_images']} images, "
        f"{result['n_patients']} patients, {result['n_excluded']} unreadable files excluded",
        f"Thresholds ({result['tau_source']}): a case is called {positive} when its probability of "
        f"{positive} >= its level's tau: " + ", ".join(f"{name} {_fmt(level.get('tau', result['tau']))}"
                                                      for name, level in result["levels"].items())
        + f"; breast and patient scores = {result['patient_aggregate']} over their images' lesion margins, "
        f"each level with its own temperature and offset; flip TTA: {'on' if result.get('tta_hflip') else 'off'}",
        f"AUC confidence intervals: percentile bootstrap, {result['bootstrap']['resamples']} "
        f"resamples of patients (seed {result['bootstrap']['seed']})",
        f"Calibration: temperature {_fmt(cal['temperature'])}, offset {_fmt(cal.get('offset', 0.0))}; "
        f"ECE {_fmt(cal['ece_before'])} before (T = 1, no offset) -> {_fmt(cal['ece_after'])} after; NLL {_fmt(cal['nll_before'])} -> "
        f"{_fmt(cal['nll_after'])}",
    ]
    trained = result.get("checkpoint_class_names")
    if trained and list(trained) != [negative, positive]:
        lines.append(f"The checkpoint was trained to tell {trained[1]} from {trained[0]}; its probability "
                     f"of {trained[1]} is scored here as the probability of {positive}")
    return lines


def _warnings(result: dict) -> list[str]:
    """What the reader must know before trusting the numbers."""
    found = [f"Warning: {text}" for text in [*(result.get("warnings") or []),
                                             *(result.get("calibration_warnings") or [])]]
    if result.get("tau_optimistic"):
        found.append("Warning: the threshold was chosen on the data being evaluated; sensitivity, "
                     "specificity and the other thresholded metrics are optimistic.")
    return found


# ---------------------------------------------------------------------------
# Figures


def render_figures(result: dict, curves: dict) -> dict[str, bytes]:
    """PNG bytes of every figure in :data:`FIGURES`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels, probs = np.asarray(curves["labels"]), np.asarray(curves["probs"])
    image = result["levels"]["image"]
    negative, positive = class_names_of(result)
    pngs = {}

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], lw=2, label=f"AUC {_auc_with_ci(image)}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    spec, sens = image.get("specificity"), image.get("sensitivity")
    if spec is not None and sens is not None:
        ax.plot([1 - spec], [sens], "o", c="crimson", label=f"tau = {_fmt(result['tau'])}")
    _finish(ax, "False positive rate (1 - specificity)", "Sensitivity", "ROC (image level)")
    pngs["roc"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    pr = curves["pr"]
    ax.step(pr["recall"], pr["precision"], where="post", lw=2,
            label=f"AP {_fmt(pr['average_precision'])}")
    if labels.size:
        ax.axhline(labels.mean(), ls="--", c="grey", lw=1, label="prevalence")
    _finish(ax, "Recall (sensitivity)", "Precision (PPV)", "Precision-recall (image level)")
    pngs["pr"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4, 3.6))
    matrix = np.array([[image["tn"], image["fp"]], [image["fn"], image["tp"]]])
    ax.imshow(matrix, cmap="Blues")
    for (r, c), v in np.ndenumerate(matrix):
        ax.text(c, r, str(v), ha="center", va="center",
                color="white" if v > matrix.max() / 2 else "black", fontsize=14)
    ax.set_xticks([0, 1], [negative, positive])
    ax.set_yticks([0, 1], [negative, positive])
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"Confusion matrix at tau = {_fmt(result['tau'])}")
    pngs["confusion"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    bins = np.linspace(0, 1, 21)
    for cls, name, color in ((0, negative, "tab:blue"), (1, positive, "tab:red")):
        ax.hist(probs[labels == cls], bins=bins, alpha=0.6, color=color,
                label=f"{name} (n={int(np.sum(labels == cls))})")
    ax.axvline(result["tau"], c="black", ls="--", lw=1, label="tau")
    ax.set_xlabel(f"Predicted probability of {positive}")
    ax.set_ylabel("Images")
    ax.set_title("Scores by true class")
    ax.legend(fontsize=8)
    pngs["histogram"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    cal = result["calibration"]
    for key, name, color in (("reliability_before", f"T = 1 (ECE {_fmt(cal['ece_before'])})", "tab:grey"),
                             ("reliability_after", f"T = {_fmt(cal['temperature'], 2)}, "
                                                   f"b = {_fmt(cal.get('offset', 0.0), 2)} (ECE {_fmt(cal['ece_after'])})", "tab:green")):
        b = curves[key]
        used = b["count"] > 0
        ax.plot(b["mean_prob"][used], b["frac_pos"][used], "o-", color=color, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="black", lw=1)
    _finish(ax, f"Mean predicted probability of {positive}", f"Observed fraction {positive}",
            "Reliability diagram")
    pngs["reliability"] = _png(fig)
    return pngs


def _finish(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# Documents


def render_markdown(result: dict) -> str:
    header, rows = metrics_table(result)
    out = ["# mammojax evaluation report", ""]
    for warning in _warnings(result):
        out += [f"> **{warning}**", ""]
    out += [f"- {line}" for line in _summary_lines(result)] + [""]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    if "shortcuts" in result:  # eval of a dataset: does the network see cancer or the scanner?
        out += ["## Shortcut checks", "", shortcuts.render_shortcuts(result["shortcuts"]), ""]
    out += [f"![{name}](figures/{name}.png)" for name in FIGURES] + [""]
    return "\n".join(out)


def render_html(result: dict, pngs: dict[str, bytes]) -> str:
    header, rows = metrics_table(result)
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>mammojax evaluation report</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;"
             "padding:0 1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 10px;text-align:right}td:first-child,th:first-child{text-align:left}"
             ".warn{background:#fff3cd;border:1px solid #e0b000;padding:0.6em}"
             "img{max-width:48%;margin:0.5%}</style></head><body>",
             "<h1>mammojax evaluation report</h1>"]
    for warning in _warnings(result):
        parts.append(f'<p class="warn"><strong>{esc(warning)}</strong></p>')
    parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in _summary_lines(result)) + "</ul>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                 + "</tr></thead><tbody>")
    parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
    parts.append("</tbody></table>")
    if "shortcuts" in result:
        sentences, short_header, short_rows = shortcuts.shortcut_parts(result["shortcuts"])
        parts.append("<h2>Shortcut checks</h2>" + "".join(f"<p>{esc(line)}</p>" for line in sentences))
        if short_header:
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in short_header)
                         + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                                   for row in short_rows) + "</tbody></table>")
    parts.append("<h2>Figures</h2><div>")
    for name in FIGURES:
        if name in pngs:
            data = base64.b64encode(pngs[name]).decode("ascii")
            parts.append(f'<img alt="{name}" src="data:image/png;base64,{data}">')
    parts.append("</div></body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | Path, result: dict, curves: dict) -> dict[str, Path]:
    """Writes ``report.html``, ``report.md`` and ``figures/*.png``; returns their paths."""
    out = Path(out_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    pngs = render_figures(result, curves)
    written = {}
    for name, data in pngs.items():
        path = figures / f"{name}.png"
        path.write_bytes(data)
        written[f"figure_{name}"] = path
    written["html"] = out / "report.html"
    written["html"].write_text(render_html(result, pngs), encoding="utf-8")
    written["markdown"] = out / "report.md"
    written["markdown"].write_text(render_markdown(result), encoding="utf-8")
    return written
