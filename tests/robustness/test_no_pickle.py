"""No code path in the package can unpickle: scan every module's AST.

Flagged: importing pickle / cPickle / _pickle / dill / joblib / marshal / shelve
(or names from them), ``pd.read_pickle`` / ``pandas.read_pickle``,
``joblib.load``, ``np.load`` / ``numpy.load`` without ``allow_pickle=False``,
``torch.load`` without ``weights_only=True``, and ``tf.keras.models.load_model``
with ``safe_mode=False``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mammojax"
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}


def _dotted(node: ast.AST) -> str:
    """'np.load' for Attribute(Name('np'), 'load'); '' when not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


def offences(source: str, filename: str) -> list[str]:
    """'file:line: what' for every pickle-capable use in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in FORBIDDEN_MODULES:
                found.append(f"{where}: from {node.module} import ...")
            elif module in ("pandas", "numpy", "torch") and any(a.name in ("read_pickle", "load") for a in node.names):
                found.append(f"{where}: from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if last == "read_pickle" or name.startswith(("joblib.", "pickle.", "marshal.", "shelve.", "dill.")):
                found.append(f"{where}: {name}(...)")
            elif name in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False):
                found.append(f"{where}: {name}(...) without allow_pickle=False")
            elif name == "torch.load" and not _keyword_is(node, "weights_only", True):
                found.append(f"{where}: torch.load(...) without weights_only=True")
            elif last == "load_model" and _keyword_is(node, "safe_mode", False):
                found.append(f"{where}: {name}(..., safe_mode=False)")
    return found


def test_package_never_unpickles():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the scan really covers the package
    found = [o for f in files for o in offences(f.read_text(), str(f.relative_to(PACKAGE.parent)))]
    assert found == [], "pickle-capable code in the package:\n" + "\n".join(found)


@pytest.mark.parametrize("snippet", [
    "import pickle", "import cPickle as p", "from joblib import load", "import dill", "import marshal",
    "import shelve", "np.load('x.npy')", "numpy.load(f, allow_pickle=True)", "torch.load('w.pth')",
    "torch.load(f, weights_only=False)", "pd.read_pickle('x')", "joblib.load('m')", "from numpy import load",
])
def test_scanner_flags_each_pattern(snippet):
    assert offences(snippet, "x.py"), snippet


@pytest.mark.parametrize("snippet", [
    "np.load(f, allow_pickle=False)", "torch.load(f, weights_only=True)", "json.load(f)", "ckptr.load(path)",
])
def test_scanner_accepts_safe_calls(snippet):
    assert offences(snippet, "x.py") == []
