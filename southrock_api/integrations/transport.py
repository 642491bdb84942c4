"""What the outbound HTTP integrations share: which answers are retried, the backoff between attempts, where plain http is allowed."""

from __future__ import annotations

from typing import Callable

# Transient answers, worth retrying after a pause: throttling, a server error (RTOPilot documents its
# 500s as safe to retry), and the gateway errors of a proxy in front.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Hosts plain http:// may reach: the credentials never cross a network there.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def full_jitter(attempt: int, base: float, cap: float, random_source: Callable[[], float]) -> float:
    """Backoff before retry number `attempt` (1-based): uniform in [0, min(cap, base * 2^(attempt-1))]."""
    return random_source() * min(cap, base * 2 ** (attempt - 1))
