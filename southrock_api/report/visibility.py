"""The work units a token may see (spec §7, §17.1.1): a walk down both hierarchies."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from southrock_api.data.models import BusinessUnit, WorkUnit


@dataclass(frozen=True)
class WorkUnitInfo:
    """The fields of a work unit the report needs."""

    id: int
    code: str
    name: str


@dataclass(frozen=True)
class VisibleUnit:
    """A work unit as GET /api/v1/units lists it to a token."""

    code: str
    name: str
    business_unit_code: str
    # The parent work unit's code when the token sees the parent too, else None: a token learns no
    # code outside what it sees (spec §7), and every parent named is itself in the list.
    parent_code: str | None


class Hierarchy:
    """Both unit trees, loaded once per data version."""

    def __init__(
        self,
        work_units: dict[int, WorkUnitInfo],
        work_unit_children: dict[int, list[int]],
        business_unit_children: dict[int, list[int]],
        work_units_of_business_unit: dict[int, list[int]],
        work_unit_parents: dict[int, int],
        business_unit_codes: dict[int, str],
    ) -> None:
        self.work_units = work_units
        self._work_unit_children = work_unit_children
        self._business_unit_children = business_unit_children
        self._work_units_of_business_unit = work_units_of_business_unit
        self._work_unit_parents = work_unit_parents
        self._business_unit_code_of = {
            wu: business_unit_codes[bu] for bu, wus in work_units_of_business_unit.items() for wu in wus
        }
        self._visible: dict[tuple[str, int], list[WorkUnitInfo]] = {}
        self._visible_by_code: dict[tuple[str, int], dict[str, WorkUnitInfo]] = {}
        self._listings: dict[tuple[str, int], list[VisibleUnit]] = {}

    @classmethod
    def load(cls, session: Session) -> Hierarchy:
        """Read both trees from the database."""
        work_units: dict[int, WorkUnitInfo] = {}
        work_unit_children: dict[int, list[int]] = defaultdict(list)
        work_unit_parents: dict[int, int] = {}
        of_business_unit: dict[int, list[int]] = defaultdict(list)
        rows = session.execute(
            select(WorkUnit.id, WorkUnit.code, WorkUnit.name, WorkUnit.business_unit_id, WorkUnit.parent_id)
        )
        for wu_id, code, name, bu_id, parent_id in rows:
            work_units[wu_id] = WorkUnitInfo(wu_id, code, name)
            of_business_unit[bu_id].append(wu_id)
            if parent_id is not None:
                work_unit_children[parent_id].append(wu_id)
                work_unit_parents[wu_id] = parent_id
        business_unit_children: dict[int, list[int]] = defaultdict(list)
        business_unit_codes: dict[int, str] = {}
        for bu_id, bu_code, parent_id in session.execute(
            select(BusinessUnit.id, BusinessUnit.code, BusinessUnit.parent_id)
        ):
            business_unit_codes[bu_id] = bu_code
            if parent_id is not None:
                business_unit_children[parent_id].append(bu_id)
        return cls(
            work_units, work_unit_children, business_unit_children, of_business_unit, work_unit_parents,
            business_unit_codes,
        )

    def visible_work_units(self, unit_type: str, unit_id: int) -> list[WorkUnitInfo]:
        """Work units visible to a token of this unit, ordered by code (the report's order)."""
        key = (unit_type, unit_id)
        cached = self._visible.get(key)
        if cached is None:
            if unit_type == "business_unit":
                roots = [
                    wu
                    for bu in _descendants(unit_id, self._business_unit_children)
                    for wu in self._work_units_of_business_unit.get(bu, ())
                ]
            else:
                roots = [unit_id]
            ids: set[int] = set()
            for root in roots:
                ids.update(_descendants(root, self._work_unit_children))
            cached = sorted((self.work_units[i] for i in ids), key=lambda info: info.code)
            self._visible[key] = cached
        return cached

    def listing(self, unit_type: str, unit_id: int) -> list[VisibleUnit]:
        """The work units visible to a token of this unit as GET /api/v1/units lists them, by code."""
        key = (unit_type, unit_id)
        cached = self._listings.get(key)
        if cached is None:
            units = self.visible_work_units(unit_type, unit_id)
            seen = {info.id for info in units}
            cached = []
            for info in units:
                parent = self._work_unit_parents.get(info.id)
                parent_code = self.work_units[parent].code if parent in seen else None
                cached.append(VisibleUnit(info.code, info.name, self._business_unit_code_of[info.id], parent_code))
            self._listings[key] = cached
        return cached

    def visible(self, unit_type: str, unit_id: int, orgcodes: list[str] | None) -> list[WorkUnitInfo]:
        """The visible work units narrowed to ORGCODES; codes not visible are ignored (spec §17.1.2)."""
        units = self.visible_work_units(unit_type, unit_id)
        if not orgcodes:
            return units
        key = (unit_type, unit_id)
        by_code = self._visible_by_code.get(key)
        if by_code is None:
            by_code = {info.code: info for info in units}
            self._visible_by_code[key] = by_code
        # Looked up by code: ORGCODES is short, the visible units may number thousands.
        found = {code: by_code[code] for code in orgcodes if code in by_code}
        return [found[code] for code in sorted(found)]


def _descendants(root: int, children: dict[int, list[int]]) -> list[int]:
    """Return root and every node below it (iterative: trees may be deep)."""
    seen = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:  # a cycle can never make the walk loop forever
                seen.add(child)
                stack.append(child)
    return list(seen)


_lock = threading.Lock()
_cache: dict[str, Hierarchy] = {}


def hierarchy(session: Session, data_version: str) -> Hierarchy:
    """Return the hierarchy for this data version, loading it once per process."""
    with _lock:
        cached = _cache.get(data_version)
    if cached is None:
        cached = Hierarchy.load(session)
        with _lock:
            _cache.clear()  # only the newest version is ever asked for again
            _cache[data_version] = cached
    return cached
