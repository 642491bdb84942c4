"""The HTTP side, in request order: proxy, authentication, rate limit, parameters, views, paging, rendering, errors."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Wire the HTTP side: logs and proxy first, then the API's pipeline before the limiter, then health."""
    # Imported here, not above: a module of this package (errors, paging) can then be imported
    # on its own without loading every view.
    from southrock_api.api import errors, health, logs, proxy, ratelimit, views

    logs.init_app(app)
    proxy.init_app(app)
    errors.init_app(app)
    # Order matters: authentication must run before the limiter's before_request
    # so that only authenticated requests spend the site's bucket.
    views.init_app(app)
    ratelimit.init_app(app)
    health.init_app(app)
