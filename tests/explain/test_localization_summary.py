"""The localization summary reports each measure beside its no-knowledge level and explains every count.

(issue 19 item 8: the quickstart headlined the pointing game while its own
heatmap mass inside the lesion was below the lesion's share of the breast,
and "records skipped 20" said nothing about why.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mammojax.explain import explain as lib


def test_table_puts_each_measure_beside_a_map_that_knows_nothing():
    summary = {"method": "gradcam", "layer": "stage3", "records": 32, "images": 12, "skipped": 20,
               "skipped_reasons": {lib.SKIP_NEGATIVE: 18, lib.SKIP_UNLOCATED: 2, lib.SKIP_UNREADABLE: 0},
               "mass_inside": 0.0219, "lesion_area_share": 0.0235, "pointing_game": 0.1,
               "pointing_chance": 0.0235, "drop_cam": 0.05, "drop_random": 0.01, "faithfulness_gap": 0.04,
               "fraction": 0.05, "region": "breast", "tolerance": 0.0}
    table = lib.format_localization_table(summary)
    lines = table.splitlines()
    assert "heatmaps over the breast only" in lines[0]
    assert "32: 12 scored (positive, with a located lesion), 20 skipped" in table
    assert ("18 negative (no lesion to point at), 2 positive without a located lesion, 0 unreadable"
            in table)
    mass = next(i for i, line in enumerate(lines) if "mass inside the lesion" in line)
    assert lines[mass].endswith("0.0219")
    assert "a uniform map over the breast" in lines[mass + 1] and "0.0235" in lines[mass + 1]
    assert lines[mass + 2].endswith("0.93x")  # below 1: no better than uniform, and it says so
    pointing = next(i for i, line in enumerate(lines) if "pointing game" in line)
    assert pointing > mass and lines[pointing + 2].endswith("4.26x")


@pytest.fixture(scope="module")
def explainer(tmp_path_factory):
    import jax

    from mammojax import models
    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import base_config

    config = base_config()
    config.data.image_size = 48
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(0), 48)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "c", variables, make_meta(config))
    return lib.Explainer(path)


def test_every_skipped_record_is_counted_by_reason(explainer, tmp_path):
    from mammojax.data.records import load_dataset

    records = list(load_dataset("synthetic", tmp_path, count=8, size=48).records)
    positives = [r for r in records if r.label == 1]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    records += [dataclasses.replace(positives[0], path=str(broken)),
                dataclasses.replace(positives[1], lesions=())]
    report = lib.evaluate_localization(None, records, explainer=explainer)
    summary = report["summary"]
    assert summary["skipped_reasons"] == {lib.SKIP_NEGATIVE: 4, lib.SKIP_UNLOCATED: 1, lib.SKIP_UNREADABLE: 1}
    assert summary["records"] == len(records) == summary["images"] + summary["skipped"]
    unreadable = [s for s in report["skipped"] if s["reason"] == lib.SKIP_UNREADABLE]
    assert unreadable[0]["path"] == str(broken) and "broken.png" in unreadable[0]["error"]
    # The uniform level is the lesion's share of the breast the map is shown on.
    for row in report["images"]:
        assert 0 < row["lesion_share"] < 0.5 and row["chance"] == pytest.approx(row["lesion_share"])
    shares = [row["lesion_share"] for row in report["images"]]
    assert summary["lesion_area_share"] == pytest.approx(np.mean(shares))
    assert summary["mass_lift"] == pytest.approx(summary["mass_inside"] / summary["lesion_area_share"])
