"""Every code block of the README and `docs/` runs (with small settings: `snippets.py`), so the
documentation cannot drift from the code. One test per Markdown file; its blocks run in order."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import snippets  # noqa: I001 - this folder's helper (pytest puts the test's folder on sys.path)
from snippets import DOCS, LANGUAGES, ROOT

# the README and the longest document have files of their own (they run in parts, one test class each)
OWN_FILE = ("README.md", "conversion.md")
DOCUMENTS = [p for p in DOCS if p.name not in OWN_FILE]


def _document_test(path: Path):  # noqa: ANN202 - a test function
    @pytest.mark.slow
    def test_every_code_block_runs(self, tmp_path: Path, tiny_cache: Path, request: pytest.FixtureRequest) -> None:  # noqa: ANN001
        for line in snippets.run_document(path, tmp_path, tiny_cache, request):
            print("not run:", line)

    return test_every_code_block_runs


# One test class per document: `make test` distributes by scope (`--dist loadscope`), and a class is
# a scope of its own, so the documents spread over the workers instead of queueing on one.
for _path in DOCUMENTS:
    _name = "TestDocument_" + re.sub(r"\W", "_", _path.stem)
    globals()[_name] = type(_name, (), {"__doc__": f"docs/{_path.name}: every block runs.",
                                        "test_every_code_block_runs": _document_test(_path)})


def test_every_fence_names_a_known_language() -> None:
    for path in DOCS:
        for block in snippets.blocks(path):
            assert block.language in LANGUAGES, (
                f"{path.name}:{block.line}: fence language {block.language!r}; use one of {sorted(LANGUAGES)} "
                "(text for output, formulas and trees)"
            )


def test_every_public_api_function_is_in_a_python_block_that_runs() -> None:
    from agenticrs import api

    code = "\n".join(b.code for p in DOCS for b in snippets.blocks(p) if b.language == "python")
    missing = [name for name in api.__all__ if name[0].islower() and f"api.{name}(" not in code]
    assert not missing, f"public API functions no documentation block exercises: {missing}"


def test_the_readme_layout_names_only_folders_that_exist() -> None:
    block = next(b for b in snippets.blocks(ROOT / "README.md") if b.code.startswith("src/agenticrs/"))
    folders = re.findall(r"^  (\w+)/", block.code, flags=re.M)
    assert len(folders) >= 8
    for folder in folders:
        assert (ROOT / "src" / "agenticrs" / folder).is_dir(), f"README layout names src/agenticrs/{folder}/"
    for name in re.findall(r"^docs/\s+(.*)$", block.code, flags=re.M)[0].split(", "):
        assert (ROOT / "docs" / name.strip()).is_file(), f"README layout names docs/{name}"


def test_the_small_settings_shrink_without_changing_the_command() -> None:
    """The rewrite keeps the script, data set and flags, and changes only sizes."""
    line = "python bench/ctr_benchmark.py --dataset frappe --models deepfm,dcnv2 --seeds 3 --json bench/results/x.json"
    small = snippets.small(line, bash=True)
    assert small.startswith(sys.executable) and "--dataset frappe" in small and "--models deepfm " in small
    assert "--seeds 1" in small and small.endswith("--step-budget 4 --ceiling-steps 1")
    assert snippets.small("agenticrs evolve -d sim-small --budget 20m  # note", bash=True).endswith(
        "evolve -d sim-tiny -n 1 --set start.epochs=1")
    assert snippets.commands("a \\\n  b  # c\n# only a comment\n\nd\n") == ["a    b  # c", "d"]
    assert snippets.situational("agenticrs evolve --resume") == "no unfinished intent"
