"""`southrock demo-data`: a realistic, deterministic data set that imports cleanly."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from flask.testing import FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from southrock_api.data.demo import sizes_for, write_demo_csvs
from southrock_api.data.models import BusinessUnit, Course, Enrolment, Learner, WorkUnit

FILES = ("business_units.csv", "work_units.csv", "courses.csv", "learners.csv", "enrolments.csv")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dictionaries."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def depth(parents: dict[str, str], code: str) -> int:
    """How many ancestors a unit has."""
    levels = 0
    while parents[code]:
        assert levels < len(parents), f"{code}'s parents form a cycle"
        code = parents[code]
        levels += 1
    return levels


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    write_demo_csvs(tmp_path / "a", enrolments=3000, seed=7)
    write_demo_csvs(tmp_path / "b", enrolments=3000, seed=7)
    write_demo_csvs(tmp_path / "c", enrolments=3000, seed=8)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "enrolments.csv").read_bytes() != (tmp_path / "c" / "enrolments.csv").read_bytes()
    assert (tmp_path / "a" / "learners.csv").read_bytes() != (tmp_path / "c" / "learners.csv").read_bytes()


def test_data_set_is_realistic(tmp_path: Path) -> None:
    write_demo_csvs(tmp_path, enrolments=5000, seed=1)
    text = "".join((tmp_path / name).read_text(encoding="utf-8") for name in FILES)
    # spec §10: multi-byte characters up to 3 bytes, never 4.
    assert {"é", "–", "中"} <= set(text)
    assert max(map(ord, text)) <= 0xFFFF
    business = {row["ORGGRP_CODE"]: row["PARENT_ORGGRP_CODE"] for row in read_rows(tmp_path / "business_units.csv")}
    work = {row["ORG_CODE"]: row["PARENT_ORG_CODE"] for row in read_rows(tmp_path / "work_units.csv")}
    assert max(depth(business, code) for code in business) == 2
    assert max(depth(work, code) for code in work) >= 1
    enrolments = read_rows(tmp_path / "enrolments.csv")
    assert len(enrolments) == 5000
    statuses = Counter(row["SCH_STATUS"] for row in enrolments)
    assert set(statuses) == {"COMPLETED", "IN_PROGRESS", "ENROLLED", "WITHDRAWN"}
    assert statuses["COMPLETED"] > 0.7 * len(enrolments)
    completed = [row for row in enrolments if row["SCH_STATUS"] == "COMPLETED"]
    assert all(len(row["SCH_SCORE"].split(".")[1]) == 2 and row["SCH_AEDATE"] for row in completed)
    assert len({row["SCH_AEDATE"][:4] for row in completed}) >= 5


def test_sizes_scale_with_the_enrolment_count() -> None:
    large = sizes_for(1_000_000)
    assert (large.work_units, large.learners, large.courses) == (2000, 100_000, 500)
    assert large.business_units >= 20
    small = sizes_for(5000)
    assert (small.work_units, small.learners) == (10, 500)
    assert 10 <= small.courses <= 50


def test_demo_data_command_imports_every_row(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    result = runner.invoke(args=["demo-data", "--enrolments", "3000", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "enrolments.csv 3000 inserted, 0 updated" in result.stdout
    write_demo_csvs(tmp_path, enrolments=3000, seed=5)
    expected = {model: len(read_rows(tmp_path / f"{model.__tablename__}.csv")) for model in (BusinessUnit, WorkUnit, Course, Learner, Enrolment)}
    assert {model: session.scalar(select(func.count()).select_from(model)) for model in expected} == expected


def test_demo_data_output_writes_the_csvs_without_importing(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    result = runner.invoke(args=["demo-data", "--enrolments", "100", "--seed", "2", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(FILES)
    assert session.scalar(select(func.count()).select_from(Enrolment)) == 0


def test_the_readmes_export_example_finds_rows_in_the_demo_data(tmp_path: Path) -> None:
    """The example is tried against `make serve` (demo-setup: 5000 enrolments, seed 1); an empty file would teach nothing."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [example] = [line.split() for line in readme.splitlines() if line.startswith("southrock export ")]
    options = dict(zip(example[2::2], example[3::2]))
    assert options["--url"] == "http://127.0.0.1:8000"  # where make serve listens
    write_demo_csvs(tmp_path, enrolments=5000, seed=1)
    completed = [
        row["SCH_AEDATE"]
        for row in read_rows(tmp_path / "enrolments.csv")
        if row["SCH_STATUS"] == "COMPLETED"
        and options.get("--sdate", "0000-00-00") <= row["SCH_AEDATE"] <= options.get("--edate", "9999-12-31")
    ]
    assert len(completed) >= 100
