"""How long the application waits on PostgreSQL: a deadline per request, a bound per answer otherwise.

PostgreSQL's own `statement_timeout` and `lock_timeout` end slow statements and lock waits,
and TCP keepalives with `tcp_user_timeout` end waits on a network that has gone away. Neither
helps when the server, or something between, keeps the connection open and never answers (a
frozen server, a stalled disk, a paused VM, a proxy that stops forwarding): the kernel still
acknowledges every byte. Only the client can bound that wait. psycopg 3 runs every blocking
step of a connection (connect aside, which `connect_timeout` bounds) through one method,
`Connection.wait`, and lets it take a timeout: `BoundedConnection` passes the time left, and
when it runs out closes the connection (its state mid-protocol is unknown) and raises
`DatabaseTimeout`. Closed, the connection is a disconnect to SQLAlchemy, which discards it
from the pool. See docs/architecture.md, "Bounded waits on the database".
"""

from __future__ import annotations

import contextlib
import math
import time
from contextvars import ContextVar
from typing import Any, Iterator

import psycopg
from psycopg.errors import _WaitTimeout  # what psycopg's wait raises when its timeout expires

# When the current request (or block of work) must be done with the database (monotonic time),
# and what set that deadline, for the log line of a wait that ran out.
_deadline: ContextVar[tuple[float, str] | None] = ContextVar("southrock_database_deadline", default=None)
# psycopg's own interval between checks for signals while it waits (psycopg.connection).
WAIT_INTERVAL = 0.1


class DatabaseTimeout(psycopg.OperationalError):
    """The database did not answer within the bound; the connection was closed."""


def remaining() -> float | None:
    """Seconds left before the current deadline (None: no deadline is set)."""
    current = _deadline.get()
    return None if current is None else current[0] - time.monotonic()


def _set(seconds: float, what: str) -> object:
    ends = time.monotonic() + seconds
    current = _deadline.get()
    if current is not None and current[0] <= ends:
        return _deadline.set(current)  # an earlier deadline stands
    return _deadline.set((ends, f"{what} ({seconds:g} s)"))


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Bound every PostgreSQL wait inside the block to end within `seconds` (or an earlier deadline)."""
    token = _set(seconds, what)
    try:
        yield
    finally:
        disarm(token)


@contextlib.contextmanager
def renewed(seconds: float, what: str) -> Iterator[None]:
    """A fresh deadline for the block, replacing the current one: a long stream's rule, one block at a time."""
    token = _deadline.set((time.monotonic() + seconds, f"{what} ({seconds:g} s)"))
    try:
        yield
    finally:
        disarm(token)


def arm(seconds: float, what: str) -> object:
    """Set a deadline `seconds` from now for the rest of this context; return what disarm() takes."""
    return _set(seconds, what)


def disarm(token: object) -> None:
    """Remove a deadline set by arm()."""
    _deadline.reset(token)  # type: ignore[arg-type]


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait ends by the current deadline and within `answer_bound`."""

    # Each answer is awaited at most this long, deadline or not (a command's only bound).
    answer_bound: float | None = None

    def wait(self, gen: Any, interval: float = WAIT_INTERVAL, timeout: float | None = None) -> Any:
        """Consume a generator operating on the connection, giving up when the bound runs out."""
        left = remaining()
        # The smaller of the two (on every wait of every request: no generator, no sort).
        answer = self.answer_bound
        bound = answer if left is None else left if answer is None or left < answer else answer
        if bound is None:
            return super().wait(gen, interval, timeout)
        if bound <= 0:
            # Nothing was sent yet: the connection is intact, but the request has no time left.
            gen.close()
            raise ran_out(left, self.answer_bound)
        ours = timeout is None or bound < timeout
        try:
            return super().wait(gen, interval, bound if ours else timeout)
        except _WaitTimeout:
            if not ours:
                raise  # psycopg's own, shorter timeout (cancelling a query): its caller handles it
            # Mid-protocol, the connection can never be used again: close it so the pool drops it.
            self.close()
            raise ran_out(left, self.answer_bound) from None



def ran_out(left: float | None, answer_bound: float | None) -> DatabaseTimeout:
    """The error for a wait that ran out: `left` of the deadline then, or the bound on one answer."""
    current = _deadline.get()
    if current is not None and left is not None and (answer_bound is None or left <= answer_bound):
        what = current[1]
    else:
        what = f"the bound on one answer ({answer_bound:g} s)"
    return DatabaseTimeout(f"no answer from the database within {what}: connection closed")


def connect(connection_class: type[BoundedConnection], cargs: Any, cparams: dict[str, Any]) -> BoundedConnection:
    """Connect within the current deadline: at once not at all when none of it is left."""
    left = remaining()
    if left is not None:
        if left <= 0:
            raise ran_out(left, connection_class.answer_bound)
        # libpq counts whole seconds, and psycopg waits at least 2 whatever is asked.
        cparams = {**cparams, "connect_timeout": max(2, min(int(cparams.get("connect_timeout", 5)), math.ceil(left)))}
    return connection_class.connect(*cargs, **cparams)


def connection_class(answer_bound: float | None) -> type[BoundedConnection]:
    """A BoundedConnection class whose every wait is bounded by `answer_bound` seconds too."""
    return type("BoundedConnection", (BoundedConnection,), {"answer_bound": answer_bound})
