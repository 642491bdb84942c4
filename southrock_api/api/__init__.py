"""The HTTP side, in request order: proxy, pipeline (authentication, parameters, ETag), rate limit, views, paging, rendering, errors."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Wire the HTTP side: logs and proxy first, then the API's pipeline before the limiter, then health."""
    # Imported here, not above: a module of this package (errors, paging) can then be imported
    # on its own without loading every view.
    from southrock_api.api import errors, health, logs, pipeline, proxy, ratelimit, views

    logs.init_app(app)
    proxy.init_app(app)
    errors.init_app(app)
    # Order matters (spec §15): the pipeline refuses unauthenticated requests before the
    # limiter's before_request counts them, so only authenticated requests spend the site's bucket.
    pipeline.init_app(app)
    views.init_app(app)
    ratelimit.init_app(app)
    check_order(app)
    health.init_app(app)


def check_order(app: Flask) -> None:
    """Raise unless the pipeline's before_request hooks run before the limiter's check (spec §15)."""
    from southrock_api.api import pipeline, ratelimit

    hooks = app.before_request_funcs.get(None, [])
    limiter = ratelimit.get_limiter(app)
    # flask-limiter registers a bound method of the Limiter as its before_request check.
    counting = [position for position, hook in enumerate(hooks) if getattr(hook, "__self__", None) is limiter]
    ours = [hooks.index(hook) if hook in hooks else -1 for hook in (pipeline.require_https, pipeline.authenticate_request)]
    if not counting or -1 in ours:
        raise RuntimeError("the API pipeline or the rate limiter is not registered as a before_request hook")
    if not ours[0] < ours[1] < min(counting):
        raise RuntimeError(
            "the rate limiter's before_request runs before the API pipeline's: unauthenticated requests "
            "would spend the site's bucket (spec §15)"
        )
