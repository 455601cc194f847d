"""Model-agnostic test-time inference around any trained CTR run (MATT-CTR, UTTSI; docs/test_time.md)."""
