"""Paper-autotrain tests: the agents' test helpers (`fake_openai`) importable from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

AGENTS_TESTS = str(Path(__file__).resolve().parents[1])
if AGENTS_TESTS not in sys.path:
    sys.path.insert(0, AGENTS_TESTS)
