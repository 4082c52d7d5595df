"""Domain exceptions: what the services and the cursor codec refuse, in their own words.

They know nothing of HTTP; app/errors.py maps each class to its problem+json answer (status,
`code`, field errors) in one table.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class; `detail` is safe to show to a client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """The thing asked for does not exist, or is not visible to the caller."""


class Forbidden(DomainError):
    """The caller may not do this to that thing (e.g. an editor changing another's post)."""


class Invalid(DomainError):
    """A write whose content breaks a rule the schema cannot check (unknown tag, taken slug)."""

    def __init__(self, errors: dict[str, list[str]], detail: str = "The request body is invalid.") -> None:
        super().__init__(detail)
        self.errors = errors


class InvalidCursor(DomainError):
    """A cursor that is malformed, tampered with, from another list, or expired."""

    def __init__(self, detail: str = "The cursor is malformed, tampered with or expired.") -> None:
        super().__init__(detail)


class KeyInFlight(DomainError):
    """An Idempotency-Key whose first request is still being processed."""

    def __init__(self, detail: str = "A request with this Idempotency-Key is in progress; retry shortly.") -> None:
        super().__init__(detail)


class KeyReused(DomainError):
    """An Idempotency-Key already used for a different request (method, path or body)."""

    def __init__(
        self, detail: str = "This Idempotency-Key was already used for a different request; use a new key."
    ) -> None:
        super().__init__(detail)


class OutcomeUnknown(DomainError):
    """A write that may or may not have been applied: its COMMIT was not confirmed in time, or it
    committed but what must follow (its cache invalidation) could not reach the database."""

    def __init__(
        self,
        detail: str = "The database did not confirm this write in time: it may or may not have been applied. "
        "Check before repeating it, or send writes with an Idempotency-Key so that a retry is safe.",
    ) -> None:
        super().__init__(detail)
