"""Data layer: dataset specs, readers and adapters for public layouts, the processed-data cache."""

from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec, ReaderOptions

__all__ = ["DataError", "DatasetSpec", "FieldSpec", "ReaderOptions"]
