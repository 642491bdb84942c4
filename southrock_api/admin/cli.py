"""The `southrock` command: db, import, demo-data, demo-setup and tokens are defined here; export, mirror and rtopilot come from integrations/.

The console script is southrock_api.admin:main, which says what to install when Flask is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, ScriptInfo, with_appcontext
from psycopg.errors import ConnectionTimeout
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from southrock_api.admin import tokens, webhooks
from southrock_api.data import migrations
from southrock_api.integrations import export, mirror, rtopilot
from southrock_api.integrations import webhooks as delivery
from southrock_api.config import ConfigError
from southrock_api.data.db import WriteLockTimeout, failure_reason, get_database
from southrock_api.data.deadlines import DatabaseTimeout

if TYPE_CHECKING:
    from southrock_api.data.importer import ImportReport


def _session() -> Session:
    return migrations.migrated_session()


def _writing_session(wait: float | None) -> Session:
    """A session that may write; on SQLite it first waits (saying so) while another command holds the write lock."""
    from flask import current_app

    limit = float(current_app.config["COMMAND_TIMEOUT"]) if wait is None else wait

    def waiting(waited: float) -> None:
        click.echo(
            f"waiting for the database's write lock, which another command (an import?) holds: "
            f"{waited:.0f} s so far, giving up after {limit:g} s (--wait)",
            err=True,
        )

    try:
        return migrations.migrated_session(wait=limit, on_wait=waiting)
    except WriteLockTimeout as error:
        raise click.ClickException(
            f"{error}, which another command (an import?) holds; nothing was changed. Run this again "
            "when it has finished, or wait longer with --wait SECONDS."
        ) from None


def _waits(command: Any) -> Any:
    """Add --wait: how long a writing command waits for another command's write lock (SQLite)."""
    return click.option(
        "--wait",
        type=click.FloatRange(min=0),
        default=None,
        metavar="SECONDS",
        help="How long to wait while another command (an import) is writing (default: SOUTHROCK_COMMAND_TIMEOUT).",
    )(command)


def _import(
    session: Session, directory: Path, progress: bool, full: bool = False, max_delete: float | None = None
) -> ImportReport:
    """import_directory, with a progress bar on stderr if progress is set."""
    from southrock_api.data.importer import MAX_DELETE_PERCENT, import_directory, import_size

    total = import_size(directory)
    options: dict[str, Any] = {
        "retention_days": int(current_app.config["CHANGES_RETENTION_DAYS"]),
        "full": full,
        "max_delete_percent": MAX_DELETE_PERCENT if max_delete is None else max_delete,
    }
    if not progress or not total:
        # No files (import_directory says so) or only empty ones: no bar to show.
        return import_directory(session, directory, **options)
    with click.progressbar(length=total, label="Importing", file=sys.stderr) as bar:
        return import_directory(session, directory, on_progress=bar.update, **options)


@click.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema to the newest revision."""
    from flask import current_app

    migrations.upgrade(current_app, revision)
    click.echo(f"database at revision {revision}")


@click.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option(
    "--full",
    is_flag=True,
    help="The files are the whole extract of what they hold: stored rows of those kinds that are absent are deleted.",
)
@click.option(
    "--max-delete",
    type=click.FloatRange(min=0, max=100),
    default=None,
    metavar="PERCENT",
    help="With --full: refuse to delete more than this share of the stored enrolments (default 10).",
)
@_waits
@with_appcontext
def import_command(
    directory: Path, progress: bool | None, full: bool, max_delete: float | None, wait: float | None
) -> None:
    """Load business_units, work_units, courses, learners and enrolments CSVs (and deletions.csv) from DIRECTORY."""
    from southrock_api.data.importer import ImportFailed

    show = sys.stderr.isatty() if progress is None else progress
    with _writing_session(wait) as session:
        try:
            report = _import(session, directory, show, full, max_delete)
        except ImportFailed as failure:
            for problem in failure.problems:
                click.echo(problem, err=True)
            raise click.exceptions.Exit(1) from None
    click.echo(report.summary())


@click.command("demo-data")
@click.option("--enrolments", "enrolment_count", default=5000, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), help="Write the CSVs here instead of importing them.")
@_waits
@with_appcontext
def demo_data_command(enrolment_count: int, seed: int, output: Path | None, wait: float | None) -> None:
    """Generate a realistic, deterministic data set and import it."""
    from southrock_api.data.demo import write_demo_csvs

    if output is not None:
        write_demo_csvs(output, enrolments=enrolment_count, seed=seed)
        click.echo(f"wrote demo CSVs to {output}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_csvs(Path(tmp), enrolments=enrolment_count, seed=seed)
        with _writing_session(wait) as session:
            report = _import(session, Path(tmp), sys.stderr.isatty())
    click.echo(report.summary())


DEMO_TOKEN_DESCRIPTION = "demo token (make serve)"


@click.command("demo-setup")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--enrolments", "enrolment_count", default=5000, show_default=True, type=click.IntRange(min=1))
@_waits
@with_appcontext
def demo_setup_command(host: str, port: int, enrolment_count: int, wait: float | None) -> None:
    """Load demo data into an empty database and print a working curl line for a demo token."""
    from sqlalchemy import func, select

    from southrock_api.data.demo import write_demo_csvs
    from southrock_api.data.importer import import_directory
    from southrock_api.data.models import ApiToken, BusinessUnit

    with _writing_session(wait) as session:
        if not session.scalar(select(func.count()).select_from(BusinessUnit)):
            with tempfile.TemporaryDirectory() as tmp:
                write_demo_csvs(Path(tmp), enrolments=enrolment_count, seed=1)
                click.echo(import_directory(session, Path(tmp)).summary())
        existing = session.scalar(
            select(ApiToken.public_key).where(
                ApiToken.description == DEMO_TOKEN_DESCRIPTION, ApiToken.revoked_at.is_(None)
            )
        )
        if existing:
            # Only a hash of the old private key exists, so show a fresh one.
            issued = tokens.rotate_token(session, existing)
        else:
            root = session.scalar(
                select(BusinessUnit.code).where(BusinessUnit.parent_id.is_(None)).order_by(BusinessUnit.code)
            )
            issued = tokens.create_token(session, business_unit=root, description=DEMO_TOKEN_DESCRIPTION)
        session.commit()
    click.echo(f"\nDemo token for business unit {issued.unit_code} (public key {issued.public_key}). Try:\n")
    click.echo(f"  curl -u '{issued.public_key}:{issued.private_key}' 'http://{host}:{port}/api/v1/enrolments?limit=2'\n")


@click.group("tokens")
def tokens_group() -> None:
    """Create, list, revoke and rotate API tokens (spec §7)."""


def _show_issued(issued: tokens.IssuedToken, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "public_key": issued.public_key,
                    "private_key": issued.private_key,
                    "authorization": issued.authorization,
                    "unit_type": issued.unit_type,
                    "unit": issued.unit_code,
                    "description": issued.description,
                    "expires": issued.expires_at.isoformat() if issued.expires_at else None,
                }
            )
        )
        return
    click.echo(f"Public key:    {issued.public_key}")
    click.echo(f"Private key:   {issued.private_key}")
    click.echo(f"Authorization: {issued.authorization}")
    click.echo(
        "Record the private key now: only its hash is stored, so it can never be shown again.",
        err=True,
    )


def _expiry(value: dt.date | None) -> dt.datetime | None:
    if value is None:
        return None
    if value < dt.datetime.now(dt.timezone.utc).date():
        raise click.BadParameter(f"{value} has passed: the token would never work", param_hint="'--expires'")
    if value >= dt.date.max:
        raise click.BadParameter(f"must be before {dt.date.max}", param_hint="'--expires'")
    # A token is good through the whole of its expiry day (UTC).
    return dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), dt.timezone.utc)


@tokens_group.command("create")
@click.option("--business-unit", "business_unit", metavar="CODE", help="ORGGRP_CODE (Training Coordinator token).")
@click.option("--work-unit", "work_unit", metavar="CODE", help="ORG_CODE (Manager token).")
@click.option("--description", default=None, help="What the token is for.")
@click.option("--expires", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Last day the token works (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_waits
@with_appcontext
def tokens_create(
    business_unit: str | None,
    work_unit: str | None,
    description: str | None,
    expires: dt.datetime | None,
    as_json: bool,
    wait: float | None,
) -> None:
    """Create a token for a business unit or a work unit and show its keys once."""
    with _writing_session(wait) as session:
        try:
            issued = tokens.create_token(
                session,
                business_unit=business_unit,
                work_unit=work_unit,
                description=description,
                expires_at=_expiry(expires.date() if expires else None),
            )
        except tokens.TokenError as error:
            raise click.UsageError(str(error)) from None
        session.commit()
    _show_issued(issued, as_json)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@with_appcontext
def tokens_list(as_json: bool) -> None:
    """List tokens with masked public keys; private keys are never shown."""
    with _session() as session:
        rows = tokens.list_tokens(session)
    _echo_rows(rows, ("public_key", "unit_type", "unit", "state", "created", "expires", "last_used", "description"), as_json)


def _echo_rows(rows: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool) -> None:
    """A listing: a JSON array, or tab-separated columns under a header ('-' for none, lists joined by commas)."""
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo("\t".join(columns))
    for row in rows:
        values = [",".join(value) if isinstance(value, list) else value for value in (row[column] for column in columns)]
        click.echo("\t".join(str(value or "-") for value in values))


@tokens_group.command("revoke")
@click.argument("public_key")
@_waits
@with_appcontext
def tokens_revoke(public_key: str, wait: float | None) -> None:
    """Revoke a token (full or masked public key); effective on the next request."""
    with _writing_session(wait) as session:
        try:
            token = tokens.revoke_token(session, public_key)
        except tokens.TokenError as error:
            raise click.UsageError(str(error)) from None
        session.commit()
        click.echo(f"revoked {tokens.mask(token.public_key)}")


@tokens_group.command("rotate")
@click.argument("public_key")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_waits
@with_appcontext
def tokens_rotate(public_key: str, as_json: bool, wait: float | None) -> None:
    """Give a token a new private key, shown once; the old key stops working at once."""
    with _writing_session(wait) as session:
        try:
            issued = tokens.rotate_token(session, public_key)
        except tokens.TokenError as error:
            raise click.UsageError(str(error)) from None
        session.commit()
    _show_issued(issued, as_json)


@tokens_group.command("audit")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@with_appcontext
def tokens_audit(as_json: bool) -> None:
    """Show who created, revoked or rotated which token, and when."""
    with _session() as session:
        events = tokens.audit_log(session)
    if as_json:
        click.echo(json.dumps(events))
        return
    for event in events:
        click.echo(f"{event['at']}\t{event['actor']}\t{event['action']}\t{event['public_key']}\t{event['detail'] or ''}")


@click.group("webhooks")
def webhooks_group() -> None:
    """Tell receivers when the data their token sees changes: subscriptions, delivery, log and replay."""


def _webhook_step(wait: float | None, step: Any) -> Any:
    """Run one administration step in a writing session and commit it; a refused step is one line, nothing stored."""
    with _writing_session(wait) as session:
        try:
            result = step(session)
        except webhooks.WebhookError as error:
            raise click.UsageError(str(error)) from None
        session.commit()
    return result


def _show_secret(issued: webhooks.IssuedSecret, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"id": issued.public_id, "secret": issued.secret}))
    else:
        click.echo(f"Subscription:   {issued.public_id}")
        click.echo(f"Signing secret: {issued.secret}")
    click.echo("Give the receiver the signing secret now: it is never shown again.", err=True)


@webhooks_group.command("add")
@click.option("--url", required=True, help="The receiver: https:// (http:// for localhost only).")
@click.option("--token", "token_key", required=True, metavar="PUBLIC_KEY", help="The API token whose view it follows.")
@click.option("--orgcodes", default=None, metavar="CODE,…", help="Only changes in these work units.")
@click.option("--description", default=None, help="What the subscription is for.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_waits
@with_appcontext
def webhooks_add(
    url: str, token_key: str, orgcodes: str | None, description: str | None, as_json: bool, wait: float | None
) -> None:
    """Subscribe a receiver to the changes a token sees and show its signing secret once."""
    codes = [code.strip() for code in orgcodes.split(",") if code.strip()] if orgcodes else None
    issued = _webhook_step(wait, lambda session: webhooks.add_subscription(session, url, token_key, codes, description))
    _show_secret(issued, as_json)


@webhooks_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@with_appcontext
def webhooks_list(as_json: bool) -> None:
    """List subscriptions (never their secrets) and why any is disabled."""
    with _session() as session:
        rows = webhooks.list_subscriptions(session)
    _echo_rows(rows, ("id", "url", "token", "orgcodes", "state", "disabled_reason", "secret_overlap_until", "description"), as_json)


@webhooks_group.command("remove")
@click.argument("subscription")
@_waits
@with_appcontext
def webhooks_remove(subscription: str, wait: float | None) -> None:
    """Delete a subscription and its events."""
    _webhook_step(wait, lambda session: webhooks.remove_subscription(session, subscription))
    click.echo(f"removed {subscription}")


@webhooks_group.command("rotate-secret")
@click.argument("subscription")
@click.option(
    "--overlap", default=24.0, show_default=True, type=click.FloatRange(min=0), metavar="HOURS",
    help="How long the old secret signs too (both signatures are sent).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_waits
@with_appcontext
def webhooks_rotate(subscription: str, overlap: float, as_json: bool, wait: float | None) -> None:
    """Give a subscription a new signing secret, shown once; the old one keeps signing during the overlap."""
    issued = _webhook_step(
        wait, lambda session: webhooks.rotate_secret(session, subscription, dt.timedelta(hours=overlap))
    )
    _show_secret(issued, as_json)


@webhooks_group.command("enable")
@click.argument("subscription")
@_waits
@with_appcontext
def webhooks_enable(subscription: str, wait: float | None) -> None:
    """Resume a subscription's deliveries (its waiting events go out)."""
    _webhook_step(wait, lambda session: webhooks.set_enabled(session, subscription, True))
    click.echo(f"enabled {subscription}")


@webhooks_group.command("disable")
@click.argument("subscription")
@_waits
@with_appcontext
def webhooks_disable(subscription: str, wait: float | None) -> None:
    """Pause a subscription's deliveries; its events wait."""
    _webhook_step(wait, lambda session: webhooks.set_enabled(session, subscription, False))
    click.echo(f"disabled {subscription}")


@webhooks_group.command("deliver")
@click.option("--loop", is_flag=True, help="Keep delivering until stopped (SIGTERM or Ctrl-C): for a service.")
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1), metavar="SECONDS", help="With --loop: pause between passes.")
@with_appcontext
def webhooks_deliver(loop: bool, interval: float) -> None:
    """Send the events that are due; several workers may run at once on PostgreSQL (one on SQLite)."""
    from southrock_api.config import backoff_schedule

    config = current_app.config
    schedule = backoff_schedule(config["WEBHOOK_BACKOFF_SECONDS"]) or []
    timeout = float(config["WEBHOOK_TIMEOUT"])
    if not loop:
        click.echo(delivery.deliver_due(_session, timeout, schedule).line())
        return
    stop = threading.Event()
    with rtopilot.stop_on_signals(stop):
        while not stop.is_set():
            tally = delivery.deliver_due(_session, timeout, schedule, stop=stop)
            if tally.succeeded or tally.retrying or tally.dead:
                click.echo(tally.line())
            stop.wait(interval)


@webhooks_group.command("deliveries")
@click.option("--failed", is_flag=True, help="Only the attempts that failed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@with_appcontext
def webhooks_deliveries(failed: bool, as_json: bool) -> None:
    """Show each delivery attempt: status, duration, error and the next try."""
    with _session() as session:
        rows = delivery.delivery_log(session, failed)
    if as_json:
        click.echo(json.dumps(rows))
        return
    columns = ("at", "subscription", "event", "attempt", "status", "duration_ms", "delivery", "next_try", "error")
    click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join(str(row[column] if row[column] is not None else "-") for column in columns))


def _since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date and time such as 2026-12-03T08:00 (UTC unless it names its offset)",
            param_hint="'--since'",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


@webhooks_group.command("replay")
@click.option("--event", "event_id", default=None, metavar="ID", help="One event (evt_…).")
@click.option("--since", default=None, metavar="DATETIME", help="Every event written since then (ISO 8601, UTC by default).")
@_waits
@with_appcontext
def webhooks_replay(event_id: str | None, since: str | None, wait: float | None) -> None:
    """Send events again, with the same ids (receivers deduplicate on webhook-id)."""
    if (event_id is None) == (since is None):
        raise click.UsageError("give exactly one of --event ID or --since DATETIME")
    after = _since(since)
    with _writing_session(wait) as session:
        replayed = delivery.replay(session, event_id, after)
        if event_id is not None and not replayed:
            raise click.UsageError(f"no event {event_id!r} (see `southrock webhooks deliveries`)")
        session.commit()
    click.echo(f"{len(replayed)} event(s) due again; `southrock webhooks deliver` sends them")


def init_app(app: Flask) -> None:
    """Register the commands on the app's CLI."""
    for command in (db_group, import_command, demo_data_command, demo_setup_command, tokens_group, webhooks_group):
        app.cli.add_command(command)
    app.cli.add_command(rtopilot.rtopilot_group)


def _create_app() -> Flask:
    from southrock_api.app import create_app

    app = create_app()
    # Commands are not requests: an import's statements may run for minutes (docs/deployment.md).
    get_database(app).for_commands(float(app.config["COMMAND_TIMEOUT"]))
    return app


# The `flask.commands` entry points of the pinned requirements.
_PLUGGED_IN = frozenset({"limiter"})
_FLASK_OPTIONS = frozenset({"app", "debug", "env_file"})


class SouthrockGroup(FlaskGroup):
    """Flask's command group, with only this application's commands, options and configuration.

    Other installed packages plug commands into every Flask CLI: flask-limiter's `limiter config`
    prints the store's URI, password and all. Flask's `--app`, `--debug` and `--env-file` have no
    use here, and a `.env` file would give these commands another configuration than the server
    (gunicorn never reads one): both read the environment and the instance's config.py only.
    """

    def __init__(self, **extra: Any) -> None:
        super().__init__(load_dotenv=False, **extra)
        self.params = [param for param in self.params if param.name not in _FLASK_OPTIONS]

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a mistake in the setup is one line saying what to fix, not a traceback."""
        try:
            return super().invoke(ctx)
        except (ConfigError, migrations.NotMigrated) as error:
            raise click.ClickException(str(error)) from None
        except (SQLAlchemyError, DatabaseTimeout) as error:
            seconds = float(ctx.ensure_object(ScriptInfo).load_app().config["COMMAND_TIMEOUT"])
            raise click.ClickException(database_problem(error, seconds)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Name this application's commands (none, after one line saying why, while a setting is wrong)."""
        try:
            ctx.ensure_object(ScriptInfo).load_app()
        except ConfigError as error:
            # Flask would print the traceback above the help; the application's commands would all
            # fail anyway. export and mirror read no setting of the server's: they work still.
            click.echo(f"Error: {error}", err=True)
            return sorted(self.commands)
        return [name for name in super().list_commands(ctx) if name not in _PLUGGED_IN]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """Find one of this application's commands."""
        return None if name in _PLUGGED_IN else super().get_command(ctx, name)


def database_problem(error: Exception, command_timeout: float) -> str:
    """The one line a command prints when the database failed it, saying what to check."""
    original = getattr(error, "orig", None) or error
    if isinstance(original, DatabaseTimeout):
        return (
            f"the database did not answer within SOUTHROCK_COMMAND_TIMEOUT ({command_timeout:g} s): check that it "
            "is running and reachable; a command waits that long for each answer."
        )
    if isinstance(original, ConnectionTimeout):
        return f"the database did not answer: {failure_reason(error)}. Check that it is running and reachable at SOUTHROCK_DATABASE_URL."
    return (
        f"the database failed: {failure_reason(error)}. Check that SOUTHROCK_DATABASE_URL names a "
        "reachable database and that `southrock db upgrade` has been run."
    )


@click.group(cls=SouthrockGroup, create_app=_create_app, add_version_option=False, add_default_commands=False)
def main() -> None:
    """Southrock LMS Enrolment API administration."""


# The group's own, not the application's: an export or a mirror reads none of the server's settings,
# so it needs neither a valid configuration nor an instance folder.
main.add_command(export.export_command)
main.add_command(mirror.mirror_command)
