"""Which copy of the code runs, and the instance folder it uses: the same for the server and every `southrock` command.

gunicorn puts its working directory first on the import path, so started in a checkout it imports
the checkout's package while the `southrock` command imports the installed one: two releases, two
sets of migrations, and (by Flask's default) two instance folders. Neither may happen silently.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import metadata
from pathlib import Path

from southrock_api.config import ConfigError

# The package this process runs.
PACKAGE = Path(__file__).resolve().parent
DISTRIBUTION = "southrock_api"


def checkout() -> Path | None:
    """The source checkout this code runs from (make serve, an editable install), or None for an installed copy."""
    root = PACKAGE.parent
    return root if (root / "setup.cfg").is_file() and (root / "wsgi.py").is_file() else None


@functools.cache
def installed_package() -> Path | None:
    """Where the installed distribution put its package; None when none is installed, or it is editable (a checkout)."""
    for distribution in metadata.distributions(name=DISTRIBUTION):
        # An installer writes RECORD; a build leaves an egg-info without one in the checkout,
        # which is first on gunicorn's path and proves nothing about what is installed.
        if distribution.read_text("RECORD") is None:
            continue
        origin = json.loads(distribution.read_text("direct_url.json") or "{}")
        if origin.get("dir_info", {}).get("editable"):
            # A developer's install: the code is the checkout itself, wherever it is imported from.
            return None
        return Path(str(distribution.locate_file(DISTRIBUTION))).resolve()
    return None


def check_running_copy() -> None:
    """Refuse to run a copy of the code other than the installed one, which `southrock` commands run."""
    installed = installed_package()
    if installed is not None and installed != PACKAGE:
        raise ConfigError(
            f"this process imports southrock_api from {PACKAGE}, not the installed release the `southrock` "
            f"command runs ({installed}): start gunicorn with southrock_api.wsgi:app from a directory "
            "without a southrock_api folder, such as the instance folder (docs/deployment.md §4)"
        )


def instance_path() -> str:
    """SOUTHROCK_INSTANCE_PATH, or instance/ of the checkout the code runs from; an installed copy must be told."""
    configured = os.environ.get("SOUTHROCK_INSTANCE_PATH", "")
    if configured:
        # Relative, it would name another folder for each directory a command is started in.
        if not os.path.isabs(configured):
            raise ConfigError(f"SOUTHROCK_INSTANCE_PATH must be an absolute path, not {configured!r}")
        return os.path.normpath(configured)
    root = checkout()
    if root is None:
        # Flask's default would be inside the virtualenv: lost with it, and unknown to a server
        # started from elsewhere.
        raise ConfigError(
            "SOUTHROCK_INSTANCE_PATH is not set: an installed southrock_api needs a folder for config.py "
            "and its SQLite files that outlives releases, such as /var/lib/southrock (docs/deployment.md §4)"
        )
    return str(root / "instance")
