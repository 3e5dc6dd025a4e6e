"""Dataset adapters: one module per dataset, all returning ``DatasetRecords``.

``ADAPTERS`` is the single, explicit list of datasets that
:func:`mammojax.data.records.load_dataset` knows (no registration by import
side effects). Each module documents its folder layout and label rules.
"""

from __future__ import annotations

from mammojax.data.adapters import cbis_ddsm, csv_manifest, inbreast, mias, rsna, synthetic, vindr
from mammojax.data.adapters._common import Adapter

ADAPTERS: dict[str, Adapter] = {
    "synthetic": synthetic.ADAPTER,
    "mias": mias.ADAPTER,
    "inbreast": inbreast.ADAPTER,
    "cbis_ddsm": cbis_ddsm.ADAPTER,
    "vindr": vindr.ADAPTER,
    "rsna": rsna.ADAPTER,
    "csv": csv_manifest.ADAPTER,
}

__all__ = ["ADAPTERS", "Adapter"]
