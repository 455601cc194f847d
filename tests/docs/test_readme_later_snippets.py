"""The README's code blocks from the seed model tables on (the first part is in
`test_readme_snippets.py`; a separate file so that the two parts run on different workers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import snippets  # this folder's helper (pytest puts the test's folder on sys.path)
from test_readme_snippets import README, SPLIT, run_part

pytestmark = pytest.mark.slow


def test_every_code_block_of_the_readme_runs_from_the_seed_model_tables(
    tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest
) -> None:
    run_part((snippets.heading_line(README, SPLIT), None), tmp_path, tiny_cache, request)
