"""The workdir layout has one home (mammojax.workdir): no other module joins those names onto a path."""

from __future__ import annotations

import re
from pathlib import Path

from mammojax import workdir

REPO = Path(__file__).resolve().parents[2]
# The quickstart's "train", "eval" and "explain" are words with other uses (a runtime cache's "eval").
NAMES = [value for key, value in vars(workdir).items()
         if key.isupper() and isinstance(value, str) and value not in ("train", "eval", "explain")]


def test_no_module_spells_a_workdir_entry_itself():
    pattern = re.compile(r"/\s*[\"'](" + "|".join(re.escape(n) for n in NAMES) + r")[\"']")
    offenders = []
    for path in [*(REPO / "mammojax").rglob("*.py"), REPO / "scripts" / "kill_resume.py", REPO / "tests" / "train_support.py"]:
        if path.name == "workdir.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_paths_of_a_workdir(tmp_path):
    from mammojax.config import base_config

    wd = workdir.Workdir(tmp_path / "run")
    assert wd.root.is_absolute() and workdir.Workdir(wd) == wd
    assert (wd.checkpoints.name, wd.best.name, wd.config.name) == ("checkpoints", "best", "config.json")
    assert wd.network(2, 1) == wd.root / "networks" / "fold2-member1" and wd.fold_checkpoint(3).name == "fold3"
    config = base_config()
    config.data.prepared_root = str(tmp_path / "elsewhere")
    wd.write_config(config)
    assert str(tmp_path / "elsewhere") in wd.config.read_text()
