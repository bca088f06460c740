"""Domain errors: what a service raises when it refuses a request.

A refusal has a stable `code` (it becomes the problem type `/problems/<code>` in the API), a
`detail` for humans and the `fields` of the input it concerns. The class says what kind of
refusal it is; the API layer (api.problems) turns the kind into an HTTP status and the admin
into a message, so services never speak HTTP.

Side effects of a refused request (the one rule): a refusal rolls back everything the request
wrote, unless it is raised with `keeps_changes=True`, in which case what the service recorded
before refusing commits with the refusal (a cancellation that answers 409 but puts a
CancellationRequest on the staff queue). Whoever owns the transaction applies it: the clinic
API's request transaction (accounts.tenancy.TenantTransactionMiddleware, from the flag the
exception handler copies onto the response), and `atomic_keeping_refusals` for a transaction
around several services (the Idempotency-Key decorator, the saga). Services themselves commit
their own work as they go.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import transaction


class DomainError(Exception):
    """A request the domain refuses. Subclass by kind; never raise this class itself."""

    def __init__(
        self,
        detail: str,
        *,
        code: str,
        fields: Iterable[str] = (),
        keeps_changes: bool = False,
        extensions: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.fields = tuple(fields)
        self.keeps_changes = keeps_changes
        # Extra members of the problem (RFC 9457 section 3.2), e.g. a link to what it conflicts with.
        self.extensions = dict(extensions or {})


class InvalidInput(DomainError):
    """The request itself is wrong (a missing reason, an unknown choice, a bad signature)."""


class NotAllowed(DomainError):
    """This caller may not do this (not a registered pharmacist, their own prescription)."""


class NotFound(DomainError):
    """The thing asked about does not exist, or not for this caller."""


class Conflict(DomainError):
    """The thing is not in a state that allows this now (not cancellable, outside a window)."""


@contextmanager
def atomic_keeping_refusals(*, savepoint: bool = True) -> Iterator[None]:
    """`transaction.atomic()`, except that a DomainError raised with keeps_changes=True commits
    what the block wrote before it; the error then propagates as usual. `savepoint=False` inside
    a transaction whose owner rolls everything back on any other error (the clinic API's)."""
    kept: DomainError | None = None
    with transaction.atomic(savepoint=savepoint):
        try:
            yield
        except DomainError as error:
            if not error.keeps_changes:
                raise
            kept = error
    if kept is not None:
        raise kept
