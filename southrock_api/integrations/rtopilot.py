"""`southrock rtopilot sync`: push learner progress to RTOPilot's public API, only what increased."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import random
import re
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import click
import requests
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import Session

from southrock_api.config import ConfigError
from southrock_api.data.migrations import migrated_session
from southrock_api.data.models import COMPLETED, Enrolment, RtopilotPush
from southrock_api.integrations.transport import LOOPBACK_HOSTS, RETRYABLE_STATUSES, full_jitter

# RTOPilot public API: "64-character hex strings prefixed with rtop_".
API_KEY_PATTERN = re.compile(r"rtop_[0-9a-fA-F]{64}")
ENDPOINT_PATH = "/api/enrolments/lms-progress"
# How often the main thread looks up from waiting, so a signal is acted on promptly.
POLL_SECONDS = 0.2
# Exit status of a run that finished but left enrolments refused or pending (1 is a fatal stop).
INCOMPLETE_EXIT_CODE = 3
# Longest error text kept against an enrolment: enough for RTOPilot's messages, never a whole page.
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class Settings:
    """Where and how to push; the key is kept out of repr so it cannot reach a log by accident."""

    endpoint: str
    api_key: str = field(repr=False)
    timeout: float
    max_attempts: int
    backoff_seconds: float
    max_backoff_seconds: float


def endpoint_url(base_url: str) -> str:
    """Return the lms-progress URL for a base given with or without its /api suffix."""
    base = base_url.rstrip("/")
    if base.endswith("/api"):
        base = base[: -len("/api")]
    return base + ENDPOINT_PATH


def target_of(settings: Settings) -> str:
    """Name the RTOPilot a push goes to: a digest of its URL and API key (the key is never stored)."""
    return hashlib.sha256(f"{settings.endpoint}\n{settings.api_key}".encode()).hexdigest()[:32]


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """Validate RTOPILOT_URL and RTOPILOT_API_KEY from the app config; raise ConfigError (never naming the key)."""
    url = str(config.get("RTOPILOT_URL") or "")
    key = str(config.get("RTOPILOT_API_KEY") or "")
    if not url:
        raise ConfigError("SOUTHROCK_RTOPILOT_URL is not set (e.g. https://v2.rtopilot.com.au)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("SOUTHROCK_RTOPILOT_URL must be an http(s) URL, e.g. https://v2.rtopilot.com.au")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        # The Bearer key would cross the network in clear text.
        raise ConfigError("SOUTHROCK_RTOPILOT_URL must use https:// (plain http only for localhost)")
    if not key:
        raise ConfigError("SOUTHROCK_RTOPILOT_API_KEY is not set")
    if not API_KEY_PATTERN.fullmatch(key):
        raise ConfigError("SOUTHROCK_RTOPILOT_API_KEY is malformed: expected rtop_ followed by 64 hex characters")
    return Settings(
        endpoint=endpoint_url(url),
        api_key=key,
        timeout=float(config["RTOPILOT_TIMEOUT"]),
        max_attempts=max(1, int(config["RTOPILOT_MAX_ATTEMPTS"])),
        backoff_seconds=float(config["RTOPILOT_BACKOFF_SECONDS"]),
        max_backoff_seconds=float(config["RTOPILOT_MAX_BACKOFF_SECONDS"]),
    )


def progress_to_push() -> ColumnElement[int]:
    """SQL expression of the progress RTOPilot should hold: 100 once COMPLETED, else SCH_PROGRESS."""
    return case((Enrolment.status == COMPLETED, 100), else_=Enrolment.progress)


@dataclass(frozen=True)
class DuePush:
    """One enrolment whose progress rose above what RTOPilot was last told."""

    enrolment_id: int
    sch_id: str
    progress: int
    pushed_progress: int | None


def due_pushes(session: Session, target: str | None, everything: bool = False) -> list[DuePush]:
    """Return the enrolments to push to `target`, in a stable order.

    An enrolment is due when its progress is above what was last pushed to that target (values
    pushed to another target do not count; with target None, values pushed anywhere do), or,
    with `everything`, whenever its progress is above 0.
    """
    progress = progress_to_push()
    pushed = (
        RtopilotPush.pushed_progress
        if target is None
        else case((RtopilotPush.target == target, RtopilotPush.pushed_progress), else_=None)
    )
    # Never pushed counts as 0: RTOPilot starts there and ignores anything not strictly greater.
    floor = literal(0) if everything else func.coalesce(pushed, 0)
    rows = session.execute(
        select(Enrolment.id, Enrolment.sch_id, progress, pushed)
        .outerjoin(RtopilotPush, RtopilotPush.enrolment_id == Enrolment.id)
        .where(progress > floor)
        .order_by(Enrolment.id)
    )
    return [DuePush(row[0], row[1], int(row[2]), row[3]) for row in rows]


def count_enrolments(session: Session) -> int:
    """Return how many enrolments there are in all."""
    return int(session.scalar(select(func.count()).select_from(Enrolment)) or 0)


class Outcome(enum.Enum):
    """What became of one push."""

    SENT = "sent"
    FAILED = "failed"  # 400 (or 403, 422, …): RTOPilot refused it; recorded, retried next run
    PENDING = "pending"  # not answered after the retries, or not attempted; sent next run
    FATAL = "fatal"  # 401, 404, a redirect: no further push can succeed


@dataclass(frozen=True)
class PushResult:
    """The outcome of one push and the message worth recording."""

    due: DuePush
    outcome: Outcome
    message: str | None = None
    attempted: bool = True


class Pusher:
    """Sends one enrolment's progress with bounded retries; safe to call from several threads."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self._random = random_source
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe: one keep-alive session per thread.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(
                {"Authorization": f"Bearer {self.settings.api_key}", "Content-Type": "application/json"}
            )
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def push(self, due: DuePush) -> PushResult:
        """PUT {lmsEnrolmentId, progress}; retry 500s and connection failures, then give up as pending."""
        body: dict[str, str | int] = {"lmsEnrolmentId": due.sch_id, "progress": due.progress}
        problem = "not attempted"
        for attempt in range(1, self.settings.max_attempts + 1):
            if self.stop.is_set():
                return PushResult(due, Outcome.PENDING, problem, attempted=attempt > 1)
            try:
                # Never follow a redirect: requests would repeat a PUT answered 302 as a GET
                # without its body, and that GET's 200 would be taken for RTOPilot's.
                response = self._session().put(
                    self.settings.endpoint, json=body, timeout=self.settings.timeout, allow_redirects=False
                )
            except requests.RequestException as error:
                # Refused, dropped, timed out, or an answer cut off mid-body: try again later.
                problem = f"no answer from RTOPilot: {type(error).__name__}"
                delay = self._backoff(attempt)
            else:
                if 200 <= response.status_code < 300:
                    return PushResult(due, Outcome.SENT)
                if response.status_code == 401:
                    return PushResult(
                        due,
                        Outcome.FATAL,
                        "RTOPilot refused the API key (401 Unauthorized): it is wrong or has been "
                        "rotated. Update SOUTHROCK_RTOPILOT_API_KEY and run again.",
                    )
                if 300 <= response.status_code < 400:
                    return PushResult(
                        due,
                        Outcome.FATAL,
                        f"RTOPilot answered {response.status_code} (a redirect) instead of 200: point "
                        "SOUTHROCK_RTOPILOT_URL at the API itself (https://, the final host).",
                    )
                if response.status_code == 404:
                    return PushResult(
                        due,
                        Outcome.FATAL,
                        f"RTOPilot has no {ENDPOINT_PATH} at this address (404): check SOUTHROCK_RTOPILOT_URL.",
                    )
                problem = f"HTTP {response.status_code}: {_error_message(response, self.settings.api_key)}"
                if response.status_code not in RETRYABLE_STATUSES:
                    return PushResult(due, Outcome.FAILED, problem)
                delay = self._backoff(attempt)
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), self.settings.max_backoff_seconds))
            if attempt < self.settings.max_attempts and self.stop.wait(delay):
                break
        return PushResult(due, Outcome.PENDING, problem)

    def _backoff(self, attempt: int) -> float:
        return full_jitter(attempt, self.settings.backoff_seconds, self.settings.max_backoff_seconds, self._random)


def _error_message(response: requests.Response, api_key: str) -> str:
    # RTOPilot errors are {"title": ..., "message": ...}; anything else is summarised, not echoed whole.
    try:
        data = response.json()
        message = str(data.get("message") or data.get("title") or response.reason or "no message")
    except (ValueError, AttributeError):
        message = response.reason or "no message"
    # A server or proxy that echoes the request's headers must not get the key into the database.
    return message.replace(api_key, "rtop_…")[:MAX_ERROR_LENGTH]


def record(session: Session, result: PushResult, target: str, now: dt.datetime) -> None:
    """Store a push's outcome against its enrolment and commit, so a restart never resends it."""
    if not result.attempted or result.outcome is Outcome.FATAL:
        return
    state = session.get(RtopilotPush, result.due.enrolment_id)
    if state is None:
        state = RtopilotPush(enrolment_id=result.due.enrolment_id, attempted_at=now)
        session.add(state)
    if state.target != target:
        # What an earlier target acknowledged says nothing about this one.
        state.target, state.pushed_progress, state.pushed_at = target, None, None
    state.attempted_at = now
    if result.outcome is Outcome.SENT:
        # Another run may have pushed a higher value meanwhile; what RTOPilot holds never goes down.
        state.pushed_progress = max(result.due.progress, state.pushed_progress or 0)
        state.pushed_at = now
        state.last_error = None
    else:
        state.last_error = result.message
    session.commit()


@dataclass
class Summary:
    """Counts for the final line."""

    sent: int = 0
    unchanged: int = 0
    failed: int = 0
    pending: int = 0
    fatal: str | None = None

    def add(self, result: PushResult) -> None:
        """Count one result."""
        if result.outcome is Outcome.SENT:
            self.sent += 1
        elif result.outcome is Outcome.FAILED:
            self.failed += 1
        else:
            self.pending += 1

    def line(self) -> str:
        """Return the summary line."""
        return f"sent {self.sent}, unchanged {self.unchanged}, failed {self.failed}, pending {self.pending}"


def run(
    session: Session,
    pusher: Pusher,
    due: list[DuePush],
    unchanged: int,
    concurrency: int,
    on_result: Callable[[PushResult], None] = lambda _result: None,
) -> Summary:
    """Push every due enrolment with at most `concurrency` in flight; record each result as it lands."""
    summary = Summary(unchanged=unchanged)
    target = target_of(pusher.settings)
    queue = iter(due)
    handled = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rtopilot") as pool:
        in_flight: set[Future[PushResult]] = set()
        while True:
            # Submit only a little ahead, so a stop leaves few requests to drain.
            while not pusher.stop.is_set() and len(in_flight) < concurrency:
                item = next(queue, None)
                if item is None:
                    break
                in_flight.add(pool.submit(pusher.push, item))
            if not in_flight:
                break
            done, in_flight = wait(in_flight, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                # The database is written from this thread only, one commit per result.
                record(session, result, target, dt.datetime.now(dt.timezone.utc))
                summary.add(result)
                handled += 1
                on_result(result)
                if result.outcome is Outcome.FATAL:
                    summary.fatal = summary.fatal or result.message
                    pusher.stop.set()
    summary.pending += len(due) - handled
    return summary


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """While inside, SIGINT and SIGTERM set `stop` (finish in-flight pushes, record, exit) instead of killing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _dry_run(settings: Settings | None, everything: bool) -> None:
    """List what a sync would send, writing nothing."""
    with migrated_session() as session:
        due = due_pushes(session, target_of(settings) if settings else None, everything)
        unchanged = count_enrolments(session) - len(due)
    for item in due:
        was = "never" if item.pushed_progress is None else str(item.pushed_progress)
        click.echo(f"{item.sch_id}\t{item.progress}\t(last pushed: {was})")
    click.echo(f"dry run: would send {len(due)}, unchanged {unchanged}")


def _dry_run_settings(config: Mapping[str, Any]) -> Settings | None:
    """The settings if they are complete: a dry run needs no key, but compares with its target if it has one."""
    try:
        return settings_from_config(config)
    except ConfigError:
        return None


@click.group("rtopilot")
def rtopilot_group() -> None:
    """Push learner progress to RTOPilot (PUT /api/enrolments/lms-progress)."""


@rtopilot_group.command("sync")
@click.option("--dry-run", is_flag=True, help="List what would be sent; send nothing, write nothing.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 32), help="Pushes in flight at once.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: on a terminal).")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Send every enrolment with progress, not only increases (RTOPilot ignores what it already holds).",
)
@with_appcontext
def sync_command(dry_run: bool, concurrency: int, progress: bool | None, everything: bool) -> None:
    """Send each enrolment's progress to RTOPilot if it rose since the last successful push there."""
    if dry_run:
        _dry_run(_dry_run_settings(current_app.config), everything)
        return
    try:
        settings = settings_from_config(current_app.config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    with migrated_session() as session:
        due = due_pushes(session, target_of(settings), everything)
        unchanged = count_enrolments(session) - len(due)
        # The session's snapshot is not needed while pushing; each commit starts a fresh one.
        session.commit()
        stop = threading.Event()
        pusher = Pusher(settings, stop)
        show = sys.stderr.isatty() if progress is None else progress
        try:
            with stop_on_signals(stop) as received, click.progressbar(
                length=len(due), label="Pushing to RTOPilot", hidden=not show, file=sys.stderr
            ) as bar:
                summary = run(session, pusher, due, unchanged, concurrency, lambda _result: bar.update(1))
        finally:
            pusher.close()
    click.echo(summary.line())
    if summary.fatal:
        raise click.ClickException(summary.fatal)
    if received:
        click.echo("interrupted: the pending enrolments will be sent on the next run", err=True)
        raise click.exceptions.Exit(128 + received[0])
    if summary.failed or summary.pending:
        # A scheduler (cron, systemd) sees a run that left work behind; the next run retries it.
        click.echo(
            f"incomplete: {summary.failed} refused by RTOPilot, {summary.pending} pending; "
            "both are sent again on the next run",
            err=True,
        )
        raise click.exceptions.Exit(INCOMPLETE_EXIT_CODE)
