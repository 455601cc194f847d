"""The shared knowledge layer: tables, migrations and the transactional store API."""

from agenticrs.agents.knowledge.store import DEFAULT_DB, KnowledgeStore, KnowledgeStoreError, KnowledgeTx

__all__ = ["DEFAULT_DB", "KnowledgeStore", "KnowledgeStoreError", "KnowledgeTx"]
