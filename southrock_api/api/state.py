"""The state of one /api/v1 request: what the pipeline established, stored once, read by the views and the log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from flask import g

from southrock_api.api.errors import ApiError

if TYPE_CHECKING:
    from southrock_api.api.auth import Principal
    from southrock_api.api.parameters import Parameters
    from southrock_api.data.db import Versions

# The attributes of flask.g this package's request state lives in (beside data.db's session).
_ATTRIBUTE = "api_request"
_NAMED_KEY = "api_named_public_key"


@dataclass(frozen=True, slots=True)
class RequestState:
    """An authenticated /api/v1 request, in the order the pipeline (api.pipeline) established it."""

    versions: Versions  # read first: the token and the data served are both as of these
    principal: Principal  # the token and the unit whose enrolments it may read
    parameters: Parameters | ApiError  # the query parsed once; an invalid one is its E3010
    etag: str | None  # None for an invalid query: it gets no ETag and no 304
    after_response: Callable[[], None] | None  # the token's last-used write, when one is due

    def valid_parameters(self) -> Parameters:
        """Return the parameters, or raise their E3010: spec §10 holds on every endpoint."""
        if isinstance(self.parameters, ApiError):
            # Raised by the view, not the pipeline: the limiter has counted the request by then (spec §15).
            raise self.parameters
        return self.parameters


def store(state: RequestState) -> None:
    """Keep the request's state for its view and after_request hooks."""
    setattr(g, _ATTRIBUTE, state)


def current_state() -> RequestState:
    """Return the state of the /api/v1 request being served (its view runs only once the pipeline stored it)."""
    state: RequestState = getattr(g, _ATTRIBUTE)
    return state


def find_state() -> RequestState | None:
    """Return the request's state, or None: not an /api/v1 request, or one refused before it was stored."""
    state: RequestState | None = g.get(_ATTRIBUTE)
    return state


def note_named_key(public_key: str) -> None:
    """Remember the public key the request's credentials named, once auth.parse_basic accepted its shape."""
    setattr(g, _NAMED_KEY, public_key)


def named_key() -> str | None:
    """Return the public key the request named (authenticated or not), or None if its credentials had none."""
    public_key: str | None = g.get(_NAMED_KEY)
    return public_key
