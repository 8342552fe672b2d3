"""The project's own lint rules (pyproject.toml [tool.ruff]) hold on every file."""

import re
import subprocess
import sys

from support.engine import ROOT


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shared_helpers_have_one_home():
    """Test modules import helpers from tests/support only: never another test module, nor conftest (which
    keeps fixtures and hooks); a helper defined twice would drift."""
    pattern = re.compile(r"^\s*(?:from|import)\s+(test_\w+|conftest)\b", re.M)
    offenders = {path.name: pattern.findall(path.read_text(encoding="utf-8"))
                 for path in [*(ROOT / "tests").glob("*.py"), *(ROOT / "tests" / "support").glob("*.py")]}
    assert {name: found for name, found in offenders.items() if found} == {}
