"""The package type-checks: `mypy` (configured in pyproject.toml's [tool.mypy]) reports no error.

autointerp's contracts between components are Protocols (contracts.py: LLM clients, explainers, scorers,
simulators, providers, and a plugin's own; the limiter, the budget checks): nothing at run time checks that a
class keeps to one, so the type checker is what holds every component to its contract, and an Optional to
its None check. This test keeps CI from letting an error in: a class that no longer fits its Protocol fails
here, not in a user's run.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_reports_no_error():
    # mypy's own cache (.mypy_cache in the repository root, or $MYPY_CACHE_DIR): a clean clone checks everything
    # once (about 30 s on two cores), a later run only what changed (seconds). The cache is keyed on the
    # files, the options and mypy's version, so a stale one is never trusted.
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"mypy found errors (run `mypy` in {ROOT}):\n{r.stdout}{r.stderr}"
