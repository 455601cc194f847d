"""Paper autotrain: method cards, their reproduction, and LLM-drafted methods in a sandbox (docs/reproduce.md)."""
