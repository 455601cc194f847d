"""Errors for bad input data.

Every problem with user data must tell the user *where* (file, row, field) and *what was
expected*, so a bad row in a 10 GB log is found in seconds instead of by bisection.
"""

from __future__ import annotations


class DataError(ValueError):
    """A problem with input data or a dataset spec, located as precisely as we can."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.field = field
        self.expected = expected
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        text = self.reason
        if where:
            text = f"{', '.join(where)}: {text}"
        if self.expected:
            text += f" (expected {self.expected})"
        return text
