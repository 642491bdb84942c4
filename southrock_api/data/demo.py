"""A realistic, deterministic demo data set written as the five import CSVs."""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Cumulative status shares: most enrolments in an LMS extract are finished;
# the rest split between in progress (9%), enrolled (7%) and withdrawn (4%).
COMPLETED_SHARE = 0.80
IN_PROGRESS_UPTO = 0.89
ENROLLED_UPTO = 0.96
FIRST_DATE = dt.date(2017, 1, 1)
LAST_DATE = dt.date(2025, 12, 31)
MAX_WORK_UNIT_DEPTH = 4
BATCH_ROWS = 10_000

# Names carry 2- and 3-byte UTF-8 characters (é, –, ễ, 中) but never 4-byte ones (spec §10).
FIRST_NAMES = (
    "John", "Betty", "Olivia", "Noah", "Aroha", "Siobhán", "José", "Zoë", "Renée", "Łukasz",
    "Mei", "Wei", "Priya", "Arjun", "Fatima", "Omar", "Chloé", "Mateus", "Hana", "Liam",
    "Ngaio", "Thảo", "Đức", "Søren", "Ingrid", "Kofi", "Amara", "Yuki", "Ana", "Grace",
)
SURNAMES = (
    "Student", "Smith", "Nguyễn", "Trần", "O'Brien", "Müller", "García", "Kowalski", "Papadopoulos",
    "Singh", "Patel", "Wang", "李", "张", "Williams", "Brown", "Te Rangi", "MacLeod", "Jones", "Taylor",
    "Lefèvre", "Ødegaard", "Haddad", "Okafor", "Tanaka", "da Silva", "Kim", "Walker", "Evans", "Rossi",
)
DIVISIONS = (
    ("OPS", "Operations"), ("FIN", "Finance"), ("PPL", "People & Culture"), ("ICT", "Technology"),
    ("SAL", "Sales – Retail"), ("HLT", "Health & Safety"), ("EDU", "Education Services"),
    ("LOG", "Logistics"), ("RND", "Research – 研发"), ("CUS", "Customer Care"),
)
REGIONS = (
    ("VIC", "Victoria"), ("NSW", "New South Wales"), ("QLD", "Queensland"), ("WA", "Western Australia"),
    ("SA", "South Australia"), ("TAS", "Tasmania"), ("NZ", "Aotearoa New Zealand"), ("SG", "Singapore – 新加坡"),
)
TEAMS = (
    "Customer Service", "Warehouse", "Front Office", "Back Office", "Field Crew", "Call Centre",
    "Training", "Compliance", "Dispatch", "Maintenance", "Café", "Projects – Delivery", "中央 Support",
)
COURSE_TOPICS = (
    "Fire Safety", "Manual Handling", "Privacy & Data Protection", "Robotic Control", "Robotic Interface",
    "First Aid", "Cyber Security Awareness", "Anti-Bribery", "Customer Experience", "Forklift Operation",
    "Leadership Essentials", "Code of Conduct", "Workplace Harassment", "Food Safety – Café",
    "Mandarin Basics – 中文", "Risk Management", "Induction", "Excel Skills", "Conflict Resolution",
)
COURSE_LEVELS = ("Foundation", "Level 1", "Level 2", "Level 3", "Refresher", "Advanced")


@dataclass(frozen=True)
class Sizes:
    """How many rows of each kind a data set with a given number of enrolments gets."""

    business_units: int
    work_units: int
    courses: int
    learners: int


def sizes_for(enrolments: int) -> Sizes:
    """Scale the hierarchy with the enrolment count (1M → ~2,000 work units, 100k learners, 500 courses)."""
    work_units = max(8, enrolments // 500)
    return Sizes(
        business_units=min(1 + len(DIVISIONS) * (1 + len(REGIONS)), max(4, work_units // 30)),
        work_units=work_units,
        courses=min(500, max(10, round(math.sqrt(enrolments) / 2))),
        learners=max(20, enrolments // 10),
    )


def _pick(rng: random.Random, items: tuple[str, ...] | list[str]) -> str:
    # rng.random() is the one generator whose output Python guarantees across versions,
    # so the same seed gives the same bytes on every interpreter.
    return items[int(rng.random() * len(items))]


# Letters that Unicode decomposition does not reduce to an ASCII base letter.
_ASCII_LETTERS = str.maketrans(
    {"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ø": "O", "ø": "o", "李": "Li", "张": "Zhang"}
)


def _ascii_slug(name: str) -> str:
    # Login ids and email addresses stay ASCII, as most LMS sites require.
    decomposed = unicodedata.normalize("NFKD", name.translate(_ASCII_LETTERS)).lower()
    return "".join(ch for ch in decomposed if ch.isascii() and ch.isalnum()) or "user"


def _write(path: Path, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _business_units(count: int) -> list[tuple[str, str, str]]:
    # A root, its divisions and each division's regions, depth first, so that
    # even a small data set has all three levels.
    rows = [("SOUTHROCK", "Southrock Group", "")]
    for division, division_name in DIVISIONS:
        rows.append((division, division_name, "SOUTHROCK"))
        rows += [(f"{division}-{region}", f"{division_name} – {region_name}", division) for region, region_name in REGIONS]
    return rows[:count]


def _work_units(rng: random.Random, count: int, business_codes: list[str]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    depth: list[int] = []
    by_business: dict[str, list[int]] = {}
    for index in range(count):
        business = _pick(rng, business_codes)
        siblings = by_business.setdefault(business, [])
        parent = ""
        level = 0
        # Parents are always earlier rows of the same business unit, so the tree has no cycle.
        if siblings and rng.random() < 0.6:
            candidate = siblings[int(rng.random() * len(siblings))]
            if depth[candidate] < MAX_WORK_UNIT_DEPTH:
                parent = rows[candidate][0]
                level = depth[candidate] + 1
        code = f"{business}-{index + 1:05d}"
        rows.append((code, f"{_pick(rng, TEAMS)} {index + 1}", business, parent))
        depth.append(level)
        siblings.append(index)
    return rows


def _courses(count: int) -> list[tuple[str, str]]:
    rows = []
    for index in range(count):
        topic = COURSE_TOPICS[index % len(COURSE_TOPICS)]
        level = COURSE_LEVELS[(index // len(COURSE_TOPICS)) % len(COURSE_LEVELS)]
        # Past every topic × level, later courses are new editions of earlier ones.
        edition = index // (len(COURSE_TOPICS) * len(COURSE_LEVELS))
        rows.append((f"CRS{index + 1:04d}", f"{topic} – {level}" + (f" (edition {edition + 1})" if edition else "")))
    return rows


def _learners(rng: random.Random, count: int, work_codes: list[str]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for index in range(count):
        first = _pick(rng, FIRST_NAMES)
        surname = _pick(rng, SURNAMES)
        lr_id = f"{_ascii_slug(first)}.{_ascii_slug(surname)}.{index + 1}"
        rows.append((lr_id, first, surname, f"{lr_id}@example.com", _pick(rng, work_codes)))
    return rows


def _write_enrolments(path: Path, rng: random.Random, count: int, lr_ids: list[str], course_codes: list[str]) -> None:
    days = [(FIRST_DATE + dt.timedelta(days=offset)).isoformat() for offset in range((LAST_DATE - FIRST_DATE).days + 1)]
    scores = [f"{hundredths // 100}.{hundredths % 100:02d}" for hundredths in range(10001)]
    progress = [str(value) for value in range(101)]
    random_ = rng.random
    learners, courses, day_count = len(lr_ids), len(course_codes), len(days)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("SCH_ID", "LR_ID", "CRS_CODE", "SCH_STATUS", "SCH_AEDATE", "SCH_SCORE", "SCH_PROGRESS"))
        batch: list[tuple[str, ...]] = []
        for index in range(count):
            sch_id = f"SCH{index + 1:08d}"
            draw = random_()
            lr_id = lr_ids[int(random_() * learners)]
            course = course_codes[int(random_() * courses)]
            if draw < COMPLETED_SHARE:
                # A third of the scores are full marks; the rest spread over 50.00–99.99.
                score = scores[10000] if random_() < 0.33 else scores[5000 + int(random_() * 5000)]
                row = (sch_id, lr_id, course, "COMPLETED", days[int(random_() * day_count)], score, "100")
            elif draw < IN_PROGRESS_UPTO:
                row = (sch_id, lr_id, course, "IN_PROGRESS", "", "", progress[1 + int(random_() * 99)])
            elif draw < ENROLLED_UPTO:
                row = (sch_id, lr_id, course, "ENROLLED", "", "", "")
            else:
                row = (sch_id, lr_id, course, "WITHDRAWN", "", "", progress[int(random_() * 100)])
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                writer.writerows(batch)
                batch.clear()
        writer.writerows(batch)


def write_demo_csvs(directory: Path, enrolments: int, seed: int) -> None:
    """Write business_units, work_units, courses, learners and enrolments CSVs for a seed."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes = sizes_for(enrolments)
    business_units = _business_units(sizes.business_units)
    work_units = _work_units(rng, sizes.work_units, [row[0] for row in business_units])
    courses = _courses(sizes.courses)
    learners = _learners(rng, sizes.learners, [row[0] for row in work_units])
    _write(directory / "business_units.csv", ("ORGGRP_CODE", "ORGGRP_NAME", "PARENT_ORGGRP_CODE"), business_units)
    _write(directory / "work_units.csv", ("ORG_CODE", "ORG_NAME", "ORGGRP_CODE", "PARENT_ORG_CODE"), work_units)
    _write(directory / "courses.csv", ("CRS_CODE", "CRS_DESC"), courses)
    _write(directory / "learners.csv", ("LR_ID", "LR_FNAME", "LR_SNAME", "LR_EMAIL", "ORG_CODE"), learners)
    _write_enrolments(
        directory / "enrolments.csv", rng, enrolments, [row[0] for row in learners], [row[0] for row in courses]
    )
