"""The `southrock` command line and token administration, for Training Coordinators, Managers and operators."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the `southrock` command; without the server's packages, say in one line what to install."""
    try:
        from southrock_api.admin.cli import main as southrock
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] == "southrock_api":
            raise
        # A client-only install (README, Integrations) has no Flask or database driver.
        sys.exit(
            f"Error: the `southrock` command needs the server's packages ({missing.name} is not installed): "
            "pip install 'southrock_api[server]'. `southrock-export` and `southrock-mirror` need only the client's."
        )
    southrock()
