"""Every code block of the README runs as written, with small settings (`snippets.py`). The README
runs in three parts that share nothing (the benchmark sections train their own runs); each part is
a test class of its own, so that `--dist loadscope` runs them on different workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import snippets  # this folder's helper (pytest puts the test's folder on sys.path)

pytestmark = pytest.mark.slow

README = snippets.ROOT / "README.md"
BENCHMARKS = "## Benchmarks"
SPLIT = "### The seed ranking models: MGDIN, CDNet, SSR, SORT beside the baselines (earlier protocol)"


def run_part(lines: tuple[int, int | None], tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest) -> None:
    not_run = snippets.run_document(README, tmp_path, tiny_cache, request, lines)
    for line in not_run:
        print("not run:", line)
    assert all("make test" in line or "not available here" in line or "PostgreSQL" in line for line in not_run)


class TestReadmeUsingIt:
    def test_every_code_block_runs_up_to_the_benchmarks(self, tmp_path: Path, tiny_cache: Path,
                                                         request: pytest.FixtureRequest) -> None:  # fmt: skip
        run_part((1, snippets.heading_line(README, BENCHMARKS)), tmp_path, tiny_cache, request)


class TestReadmeBenchmarks:
    def test_every_code_block_runs_up_to_the_seed_model_tables(self, tmp_path: Path, tiny_cache: Path,
                                                                request: pytest.FixtureRequest) -> None:  # fmt: skip
        run_part((snippets.heading_line(README, BENCHMARKS), snippets.heading_line(README, SPLIT)), tmp_path, tiny_cache,
                 request)  # fmt: skip


class TestReadmeLaterSections:
    def test_every_code_block_runs_from_the_seed_model_tables(self, tmp_path: Path, tiny_cache: Path,
                                                               request: pytest.FixtureRequest) -> None:  # fmt: skip
        run_part((snippets.heading_line(README, SPLIT), None), tmp_path, tiny_cache, request)
