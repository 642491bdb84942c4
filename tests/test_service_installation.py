"""The server and the `southrock` command run the same code on the same instance folder, or refuse to start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from flask import Flask

from southrock_api import create_app, installation
from tests import servers

SOUTHROCK = "import sys; from southrock_api.admin import main; sys.argv[0] = 'southrock'; main()"


def install_release(target: Path) -> Path:
    """Install this checkout's package into target as `pip install /path/to/checkout` does; return target.

    What pip leaves in site-packages: a copy of the package and a dist-info whose RECORD says an
    installer wrote it and whose direct_url.json says it is not editable. (Written here rather than
    by pip: building a wheel needs packages this offline test environment does not have.)
    """
    shutil.copytree(servers.ROOT / "southrock_api", target / "southrock_api", ignore=shutil.ignore_patterns("__pycache__"))
    info = target / "southrock_api-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: southrock_api\nVersion: 1.0.0\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "direct_url.json").write_text(json.dumps({"dir_info": {}, "url": servers.ROOT.as_uri()}))
    files = sorted(path.relative_to(target).as_posix() for path in target.rglob("*") if path.is_file())
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in files) + f"{info.name}/RECORD,,\n")
    return target


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    """An installed copy of the package, in a site directory of its own."""
    return install_release(tmp_path / "site")


def environment(release: Path, **settings: str) -> dict[str, str]:
    """The process environment with the installed release importable and no SOUTHROCK_ setting but these."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SOUTHROCK_")}
    return {**env, "PYTHONPATH": str(release), **settings}


def southrock(release: Path, cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run the installed release's `southrock` command (what its console script runs)."""
    return subprocess.run(
        [sys.executable, "-c", SOUTHROCK, *args], env=environment(release, **settings), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_a_checkout_keeps_its_instance_folder_without_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """make serve and the tests run from a checkout (an editable install is one): its instance/ is the default."""
    monkeypatch.delenv("SOUTHROCK_INSTANCE_PATH", raising=False)
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite'}", "RATELIMIT_STORAGE_URI": "memory://"})
    servers.dispose(app)
    assert app.instance_path == str(servers.ROOT / "instance")
    assert installation.checkout() == servers.ROOT


@pytest.mark.parametrize(
    ("instance", "says"),
    [
        (None, "Error: SOUTHROCK_INSTANCE_PATH is not set: an installed southrock_api needs a folder for config.py"),
        ("instance", "Error: SOUTHROCK_INSTANCE_PATH must be an absolute path, not 'instance'"),
    ],
    ids=["unset", "relative"],
)
def test_an_installed_release_needs_an_absolute_instance_folder(release: Path, tmp_path: Path, instance: str | None, says: str) -> None:
    """Flask's default would be inside the virtualenv, and a relative folder differs with each directory a command starts in."""
    settings = {} if instance is None else {"SOUTHROCK_INSTANCE_PATH": instance}
    result = southrock(release, tmp_path, "db", "upgrade", **settings)
    assert result.returncode == 1
    assert result.stderr.startswith(says) and len(result.stderr.splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == [release]  # nothing was created anywhere
    assert not list(release.rglob("*.sqlite"))


@pytest.mark.e2e
def test_the_installed_release_and_its_command_share_one_instance_folder(release: Path, tmp_path: Path) -> None:
    """On SQLite (the default), a token the command creates is one the server accepts."""
    instance = tmp_path / "instance"
    instance.mkdir()
    settings = {"SOUTHROCK_INSTANCE_PATH": str(instance)}
    for args in (("db", "upgrade"), ("demo-data", "--enrolments", "30")):
        assert southrock(release, tmp_path, *args, **settings).returncode == 0
    created = southrock(release, tmp_path, "tokens", "create", "--business-unit", "SOUTHROCK", "--json", **settings)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    # As docs/deployment.md §4 runs it: the installed release's WSGI module, started in the instance folder.
    env = environment(release, **settings)
    with servers.gunicorn(env, workers=1, cwd=instance, application="southrock_api.wsgi:app") as base_url:
        answer = requests.get(base_url + "/api/v1", headers={"Authorization": token["authorization"]}, timeout=10)
    assert answer.status_code == 200 and answer.json()["ORGGRP_CODE"] == "SOUTHROCK"
    assert sorted(path.name for path in instance.glob("*.sqlite")) == ["ratelimit.sqlite", "southrock.sqlite"]
    assert not list(release.rglob("*.sqlite"))


@pytest.mark.e2e
def test_a_server_started_in_the_checkout_refuses_to_serve_other_code_than_the_installed_release(release: Path, tmp_path: Path) -> None:
    """`cd checkout && gunicorn … wsgi:app` imports the checkout's package, while `southrock` runs the installed one."""
    env = environment(release, SOUTHROCK_INSTANCE_PATH=str(tmp_path), SOUTHROCK_BIND=f"127.0.0.1:{servers.free_port()}")
    command = [sys.executable, "-m", "gunicorn", "-c", str(servers.ROOT / "gunicorn.conf.py"), "wsgi:app"]
    result = subprocess.run(command, env=env, cwd=servers.ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    [line] = [line for line in result.stderr.splitlines() if "[INFO] Starting gunicorn" not in line]
    assert (
        f"this process imports southrock_api from {servers.ROOT / 'southrock_api'}, not the installed release the "
        f"`southrock` command runs ({release / 'southrock_api'})"
    ) in line


def test_a_build_left_in_the_checkout_is_not_taken_for_an_installation(tmp_path: Path) -> None:
    """pip leaves southrock_api.egg-info in the checkout it installed from, which gunicorn puts first on the path."""
    checkout = tmp_path / "checkout"
    shutil.copytree(servers.ROOT / "southrock_api", checkout / "southrock_api", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "wsgi.py"):
        shutil.copy(servers.ROOT / name, checkout / name)
    egg = checkout / "southrock_api.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: southrock_api\nVersion: 1.0.0\n")
    release = install_release(tmp_path / "site")
    probe = "from southrock_api import installation; print(installation.installed_package())"
    env = {**environment(release), "PYTHONPATH": os.pathsep.join([str(checkout), str(release)])}
    found = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == str(release / "southrock_api")


def test_a_relative_sqlite_path_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each command would open another file, in the directory it was started in."""
    monkeypatch.setenv("SOUTHROCK_INSTANCE_PATH", str(tmp_path))
    from southrock_api.config import ConfigError

    with pytest.raises(ConfigError, match="SOUTHROCK_DATABASE_URL: a SQLite file's path must be absolute"):
        create_app({"DATABASE_URL": "sqlite:///instance/southrock.sqlite", "RATELIMIT_STORAGE_URI": "memory://"})
    app: Flask = create_app({"DATABASE_URL": "sqlite://", "RATELIMIT_STORAGE_URI": "memory://"})
    servers.dispose(app)
