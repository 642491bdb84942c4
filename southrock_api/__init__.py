"""The Southrock LMS Enrolment Data Extraction API (SPEC-LMS-1544 v1.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from southrock_api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """Import create_app (and with it Flask) only when asked for it.

    The client and `southrock-export` (integrations/) import this package too, and an integrator
    installs them without the server's packages (README, Integrations).
    """
    if name == "create_app":
        from southrock_api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
