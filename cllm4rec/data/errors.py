"""One error type for bad input: it names the file, the line, the field and what to do."""
from __future__ import annotations


class DataError(ValueError):
    """Raised for input that cannot be read.

    The message always names the file, and the 1-based line and the field where known,
    followed by what the user can do about it.
    """

    def __init__(self, file, message: str, *, line: int | None = None, field: str | None = None,
                 hint: str | None = None):
        self.file = str(file)
        self.line = line
        self.field = field
        self.hint = hint
        where = self.file
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        text = f"{where}: {message}"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class BadLines:
    """Collects skipped lines in non-strict mode; raises at once in strict mode."""

    def __init__(self, strict: bool = True, keep: int = 5):
        self.strict = strict
        self.count = 0
        self.examples: list[str] = []
        self._keep = keep

    def __call__(self, error: DataError) -> None:
        if self.strict:
            raise error
        self.count += 1
        if len(self.examples) < self._keep:
            self.examples.append(str(error))

    def report(self) -> dict:
        return {"skipped_lines": self.count, "examples": list(self.examples)}
