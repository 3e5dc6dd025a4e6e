"""mammojax.jsonio: JSON-safe values and the atomic write the prepared datasets rely on."""

from __future__ import annotations

import json
from pathlib import Path

from mammojax.jsonio import write_json


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "meta.json"
    target.write_text('{"old": true}\n')
    write_json(target, {"path": Path("/a/b.png"), "radius": float("nan"), "n": 3}, indent=None, atomic=True)
    assert json.loads(target.read_text()) == {"path": "/a/b.png", "radius": None, "n": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]
