"""Every code block of the README runs as written, with small settings (`snippets.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import snippets  # this folder's helper (pytest puts the test's folder on sys.path)

pytestmark = pytest.mark.slow


def test_every_code_block_of_the_readme_runs(tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest) -> None:
    not_run = snippets.run_document(snippets.ROOT / "README.md", tmp_path, tiny_cache, request)
    for line in not_run:
        print("not run:", line)
    assert all("make test" in line or "not available here" in line or "PostgreSQL" in line for line in not_run)
