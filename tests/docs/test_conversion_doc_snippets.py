"""docs/conversion.md's code blocks run (with small settings: `snippets.py`), in two parts that
share nothing (multi-task and pre-promotion; streaming delayed feedback), each a test class of its
own so that `--dist loadscope` runs them on different workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import snippets  # this folder's helper (pytest puts the test's folder on sys.path)

pytestmark = pytest.mark.slow

GUIDE = snippets.ROOT / "docs" / "conversion.md"
STREAMING = "## Streaming delayed feedback"


def run_part(lines: tuple[int, int | None], tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest) -> None:
    for line in snippets.run_document(GUIDE, tmp_path, tiny_cache, request, lines):
        print("not run:", line)


class TestConversionMultiTaskAndPrePromotion:
    def test_every_code_block_runs(self, tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest) -> None:
        run_part((1, snippets.heading_line(GUIDE, STREAMING)), tmp_path, tiny_cache, request)


class TestConversionStreaming:
    def test_every_code_block_runs(self, tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest) -> None:
        run_part((snippets.heading_line(GUIDE, STREAMING), None), tmp_path, tiny_cache, request)
