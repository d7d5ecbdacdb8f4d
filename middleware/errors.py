"""One exception tree for Isthmus.

Every error says what happened, to which record, and what to do next. Adapters classify
failures at the edge (they know whether a 409 or a SOAP fault is permanent); the worker
decides retry versus dead-letter in one place by looking only at the class.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLocation:
    """Where in a YAML file something was written (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One configuration or mapping problem, reported with its place and a hint."""

    message: str
    location: SourceLocation | None = None
    path: str = ""
    hint: str = ""
    severity: str = "error"  # "warning": reported by `isthmus validate`, does not fail the load

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        at = f"{self.path}: " if self.path else ""
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        kind = "warning: " if self.severity == "warning" else ""
        return f"{where}{kind}{at}{self.message}{hint}"


class IsthmusError(Exception):
    """Root of all Isthmus errors."""


class ConfigError(IsthmusError):
    """A configuration or mapping file is wrong; raised before the first message is touched."""

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = problems
        super().__init__("\n".join(p.render() for p in problems))


class MappingError(IsthmusError):
    """A mapping could not be applied to one record: permanent for that record."""

    def __init__(self, message: str, *, mapping: str = "", field: str = "") -> None:
        self.mapping = mapping
        self.field = field
        prefix = f"mapping {mapping!r}" if mapping else "mapping"
        where = f" field {field!r}" if field else ""
        super().__init__(f"{prefix}{where}: {message}")


class DeliveryError(IsthmusError):
    """A target or source system refused or failed an operation."""

    def __init__(self, message: str, *, system: str = "", status: int | None = None) -> None:
        self.system = system
        self.status = status
        super().__init__(message)


class TransientError(DeliveryError):
    """Worth retrying later: timeouts, connection errors, 5xx, 429."""

    def __init__(
        self, message: str, *, system: str = "", status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, system=system, status=status)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """Retrying cannot help (validation, 4xx): the message goes to the dead-letter queue."""


class DataFileError(IsthmusError):
    """A SQLite file Isthmus keeps (the embedded broker, the state store) is damaged or has
    lost its contents. Raised when it is opened, at start, naming the file and what to do,
    instead of SQLite's bare "database disk image is malformed" in the middle of a run."""

    def __init__(self, message: str, *, file: str) -> None:
        super().__init__(message)
        self.file = file


class RecordLockedError(PermanentError):
    """The target record exists but cannot be changed in its current state (a Tryton sale past
    draft, a REST record the API answers 409/423 for). Retrying cannot help; what follows is
    the route's `on_locked`: skip or note it (acked, counted `reason="locked"`), or dead-letter
    it (the default). An update that would not change the record is no such error: it is a no-op.
    """


class MalformedMessageError(IsthmusError):
    """The bytes on a queue are not a valid canonical envelope."""


class UnknownMessageTypeError(IsthmusError):
    """A message type that no route handles reached a route's queue."""


class XrefMissingError(TransientError):
    """A cross-reference a mapping needs does not exist yet (e.g. the customer of an order
    has not been synced). Transient: the worker retries with backoff, so the order waits
    for its customer instead of failing; after the last attempt it is dead-lettered.

    The message says what is missing and nothing about what happens next (the worker logs
    its retry, a preview suggests `--xref`); the parts are kept as attributes for both."""

    def __init__(self, message: str, *, from_system: str, entity: str, record_id: str, to_system: str) -> None:
        super().__init__(message, system=to_system)
        self.from_system = from_system
        self.entity = entity
        self.record_id = record_id
        self.to_system = to_system
