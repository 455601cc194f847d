"""docs/conversion.md's code blocks run (with small settings: `snippets.py`); in a file of its
own because it is the longest document after the README, so it runs on another worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import snippets  # this folder's helper (pytest puts the test's folder on sys.path)

pytestmark = pytest.mark.slow


def test_every_code_block_of_the_conversion_guide_runs(tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest) -> None:
    for line in snippets.run_document(snippets.ROOT / "docs" / "conversion.md", tmp_path, tiny_cache, request):
        print("not run:", line)
