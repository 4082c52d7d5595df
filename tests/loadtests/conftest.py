"""Fixtures for the load-test tooling tests: a trimmed real run directory (Locust 2.47 CSVs, pacing.json)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A copy of the fixture run (a spike run cut to its first 14 s of history), free to modify."""
    target = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, target)
    return target
