"""`southrock export`: the Completed Training Summary from a Southrock site, as CSV or JSON Lines.

The same command is `southrock-export` (and `python -m southrock_api.integrations.export`), which
needs only requests and click: nothing here may import the server's packages (Flask, SQLAlchemy, …).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

import click

from southrock_api.integrations.client import (
    MAX_PAGE_SIZE,
    SPEC_FIELDS,
    DataChanged,
    EnrolmentRecord,
    SouthrockApiError,
    SouthrockClient,
)

# The names /docs's examples and the client's use too: one pair of variables for every tool.
PUBLIC_KEY_ENV = "SOUTHROCK_PUBLIC_KEY"
PRIVATE_KEY_ENV = "SOUTHROCK_PRIVATE_KEY"
# Their names before: still read when the new one is unset, with a warning (README, Configuration).
DEPRECATED_ENV = {PUBLIC_KEY_ENV: "SOUTHROCK_EXPORT_PUBLIC_KEY", PRIVATE_KEY_ENV: "SOUTHROCK_EXPORT_PRIVATE_KEY"}
# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# An import during the export moves rows between pages: the export starts again, this many times at most.
EXPORT_ATTEMPTS = 3
TEXT_COLUMNS = frozenset(
    {"ORG_CODE", "ORG_NAME", "CRS_CODE", "CRS_DESC", "LR_ID", "LR_SNAME", "LR_FNAME", "LR_EMAIL"}
)


def _guard_formula(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def write_csv(records: Iterable[EnrolmentRecord], stream: IO[str], guard_formulas: bool = True) -> int:
    """Write a header of the spec's column names and one row per record; return the row count."""
    writer = csv.writer(stream)
    writer.writerow(SPEC_FIELDS)
    count = 0
    for record in records:
        row = record.to_spec()
        if guard_formulas:
            row = {name: _guard_formula(value) if name in TEXT_COLUMNS else value for name, value in row.items()}
        writer.writerow(row.values())
        count += 1
    return count


def write_jsonl(records: Iterable[EnrolmentRecord], stream: IO[str]) -> int:
    """Write one JSON object per line, shaped as the API's rows; return the row count."""
    count = 0
    for record in records:
        stream.write(json.dumps(record.to_spec(), ensure_ascii=False) + "\n")
        count += 1
    return count


@contextlib.contextmanager
def atomic_output(target: Path, encoding: str) -> Iterator[IO[str]]:
    """Yield a temp file beside target; on success fsync and rename it over target, else delete it."""
    directory = target.parent
    # The name is chosen before the file exists, so an interrupt at any point can still remove it.
    temporary = directory / f".{target.name}.{secrets.token_hex(6)}.part"
    try:
        # 0600: the rows are learners' personal data.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "w", encoding=encoding, newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry itself reaches the disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration, so `kill` cleans up like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _from_deprecated(name: str, used: list[str]) -> str | None:
    """The value of name's deprecated alias, noting in used that it was read."""
    value = os.environ.get(DEPRECATED_ENV[name])
    if value:
        used.append(name)
    return value or None


def _warn_deprecated(used: list[str]) -> None:
    # One line for both names: the export runs unattended, and its log should stay short.
    if used:
        old = " and ".join(DEPRECATED_ENV[name] for name in used)
        what = "is a deprecated name" if len(used) == 1 else "are deprecated names"
        click.echo(f"warning: {old} {what}; set {' and '.join(used)} instead", err=True)


def _public_key(public_key: str | None, used: list[str]) -> str:
    value = public_key or _from_deprecated(PUBLIC_KEY_ENV, used)
    if not value:
        raise click.UsageError(f"give the token's public key: --public-key or the environment variable {PUBLIC_KEY_ENV}")
    return value


def _private_key(private_key: str | None, private_key_env: str, used: list[str]) -> str:
    if private_key is not None:
        click.echo(
            "warning: a private key on the command line is visible to other users (ps, shell "
            f"history); prefer --private-key-env (default {PRIVATE_KEY_ENV}).",
            err=True,
        )
        return private_key
    value = os.environ.get(private_key_env)
    if not value and private_key_env == PRIVATE_KEY_ENV:
        value = _from_deprecated(PRIVATE_KEY_ENV, used)
    if not value:
        raise click.UsageError(f"set the private key in the environment variable {private_key_env}")
    return value


def read_keys(public_key: str | None, private_key_env: str, private_key: str | None) -> tuple[str, str]:
    """The token's public and private keys from the options and the environment, as every command reads them."""
    deprecated: list[str] = []
    public = _public_key(public_key, deprecated)
    secret = _private_key(private_key, private_key_env, deprecated)
    _warn_deprecated(deprecated)
    return public, secret


@click.command("export")
@click.option("--url", required=True, envvar="SOUTHROCK_EXPORT_URL", show_envvar=True, help="Site URL, e.g. https://yoursite.southrock.com.")
@click.option("--public-key", envvar=PUBLIC_KEY_ENV, show_envvar=True, help="Token public key.")
@click.option("--private-key-env", default=PRIVATE_KEY_ENV, show_default=True, metavar="VAR", help="Environment variable holding the private key.")
@click.option("--private-key", default=None, help="The private key itself (discouraged: visible in ps and history).")
@click.option("--orgcodes", multiple=True, metavar="CODE", help="Only these work units (repeat the option).")
@click.option("--sdate", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Completed on or after (YYYY-MM-DD).")
@click.option("--edate", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Completed on or before (YYYY-MM-DD).")
@click.option("--format", "file_format", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--output", required=True, type=click.Path(dir_okay=False, writable=True, path_type=Path), help="File to write (replaced only when complete).")
@click.option("--page-size", default=MAX_PAGE_SIZE, show_default=True, type=click.IntRange(1, MAX_PAGE_SIZE))
@click.option("--guard-formulas/--no-guard-formulas", default=True, show_default=True, help="CSV: prefix text cells starting with = + - @, a tab or a CR with ' so spreadsheets show them as text.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: on a terminal).")
def export_command(
    url: str,
    public_key: str | None,
    private_key_env: str,
    private_key: str | None,
    orgcodes: tuple[str, ...],
    sdate: dt.datetime | None,
    edate: dt.datetime | None,
    file_format: str,
    output: Path,
    page_size: int,
    guard_formulas: bool,
    progress: bool | None,
) -> None:
    """Write the Completed Training Summary visible to a token to a CSV or JSON Lines file."""
    if not output.parent.is_dir():
        raise click.UsageError(f"directory {output.parent} does not exist")
    public_key, secret = read_keys(public_key, private_key_env, private_key)
    show = sys.stderr.isatty() if progress is None else progress
    # CSV gets a BOM: Excel reads BOM-less CSV in the local code page and garbles names.
    encoding = "utf-8-sig" if file_format == "csv" else "utf-8"
    write: Callable[[Iterable[EnrolmentRecord], IO[str]], int] = (
        (lambda rows, stream: write_csv(rows, stream, guard_formulas)) if file_format == "csv" else write_jsonl
    )
    try:
        client = SouthrockClient(url, public_key, secret)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--url") from None
    try:
        with terminate_as_interrupt(), client:
            for attempt in range(1, EXPORT_ATTEMPTS + 1):
                records = client.iter_enrolments(
                    orgcodes=orgcodes or None,
                    sdate=sdate.date() if sdate else None,
                    edate=edate.date() if edate else None,
                    page_size=page_size,
                )
                try:
                    with atomic_output(output, encoding) as stream:
                        with click.progressbar(
                            records, length=records.total, label="Exporting", hidden=not show, file=sys.stderr
                        ) as bar:
                            count = write(bar, stream)
                    break
                except DataChanged:
                    if attempt == EXPORT_ATTEMPTS:
                        raise
                    click.echo(
                        f"the site's data changed during the export (an import ran); starting again "
                        f"(attempt {attempt + 1} of {EXPORT_ATTEMPTS})",
                        err=True,
                    )
    except SouthrockApiError as error:
        raise click.ClickException(f"export failed, {output} not written: {error}") from None
    click.echo(f"wrote {count} enrolments to {output}")


def main() -> None:
    """Run the export on its own (`southrock-export`), without the server's packages."""
    export_command()


if __name__ == "__main__":
    main()
