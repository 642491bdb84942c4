"""create_app(): the server and the `southrock` command build the application here."""

from __future__ import annotations

import os
from typing import Any, Mapping

from flask import Flask

from southrock_api import api, config, installation
from southrock_api.admin import cli
from southrock_api.apidocs import page
from southrock_api.data import db


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: defaults, then instance/config.py, then SOUTHROCK_* env."""
    # The server and every command run the same code on the same instance folder (config.py,
    # the SQLite files), or refuse to start: see installation.py.
    installation.check_running_copy()
    app = Flask(
        "southrock_api",
        instance_relative_config=True,
        instance_path=installation.instance_path(),
        static_folder=None,  # the /docs page serves its own (apidocs/static)
    )
    # Private when this creates it: the SQLite files in it hold learners' personal data.
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    _configure(app, test_config)
    db.init_app(app)
    api.init_app(app)
    page.init_app(app)
    cli.init_app(app)
    return app


def _configure(app: Flask, test_config: Mapping[str, Any] | None) -> None:
    """Load and check the settings; set what the spec fixes about URLs, methods and JSON."""
    app.config.from_mapping(config.defaults(app.instance_path))
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("SOUTHROCK")
    else:
        app.config.from_mapping(test_config)
    for name in config.FLAGS:
        app.config[name] = config.flag(name, app.config[name])
    config.check(app.config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # An API answers its own URLs or a JSON error; it never redirects `//` to `/`.
    app.url_map.merge_slashes = False
    # spec §18: unsupported methods, OPTIONS included, are E2030 rather than an automatic answer.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # spec §10: UTF-8 on the wire
