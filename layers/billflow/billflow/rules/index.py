"""Rules indexed by the changes they watch, so an event meets only the rules its changes can match.

A block of criteria needs a transition criterion (changed, changed_to, changed_from) when its pattern is
false whenever that criterion is false, whatever the others say. A rule whose every block needs one can
only match an event that changed one of those fields (to, or from, the value the criterion names); it is
filed under them. A rule with a block that needs no change (criteria on values only) is always a candidate.
Candidates keep the rules' order. Date-triggered rules never match an event: they are kept, not indexed.

A container keeps each object's index while the rules partition's version token is unchanged (every rule
write through RuleStore changes it right after; the cache is never older than CACHE_SECONDS), so an event
reads one small item of the partition instead of every rule of the object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from billflow.models.rules import Block, Rule
from billflow.rules import comparators
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import kleene
from billflow.rules.pattern import default_pattern, parse_pattern


class RuleSource(Protocol):
    """What the index reads (storage.rules.RuleStore): passed in, so rules/ never imports storage."""

    @property
    def table(self) -> str: ...

    def version(self, tenant: str, source: str, object_name: str) -> str | None: ...

    def rules_for(self, tenant: str, source: str, object_name: str) -> list[Rule]: ...


@dataclass(frozen=True, eq=False)
class WatchedChange:
    """A change a block cannot match without: `comparator` on `path` (with `value` for _to and _from)."""

    path: str
    comparator: str
    value: Any

    def happened(self, change: FieldChange) -> bool:
        return bool(comparators.TRANSITION_COMPARATORS[self.comparator](change, self.value))


def required_change(block: Block) -> WatchedChange | None:
    """A transition criterion the block's pattern cannot hold without, or None."""
    tree = parse_pattern(block.pattern, len(block.criteria)) if block.pattern else default_pattern(
        len(block.criteria))
    for number, criterion in enumerate(block.criteria, start=1):
        name = comparators.canonical(criterion.comparator)
        if name not in comparators.TRANSITION_COMPARATORS:
            continue
        if kleene(tree, _false_only(number)) is False:
            return WatchedChange(criterion.field, name, criterion.value)
    return None


def _false_only(number: int) -> Callable[[int], bool | None]:
    """Criterion `number` false, every other one unknown."""
    return lambda n: False if n == number else None


class RuleIndex:
    """The rules of one object, in order, filed by the changes they need."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self.event_rules = [r for r in self.rules if not r.is_date_triggered]
        self.dated = [r for r in self.rules if r.is_date_triggered]
        self.watched: set[str] = set().union(*(r.watched_paths() for r in self.event_rules))
        self._always: list[int] = []
        self._by_path: dict[str, list[tuple[int, WatchedChange]]] = {}
        for position, rule in enumerate(self.rules):
            if rule.is_date_triggered:
                continue
            needed = [required_change(block) for block in rule.blocks]
            if not needed or any(change is None for change in needed):
                self._always.append(position)
                continue
            for change in dict.fromkeys(c for c in needed if c is not None):
                self._by_path.setdefault(change.path, []).append((position, change))

    def candidates(self, changes: dict[str, FieldChange]) -> list[Rule]:
        """The rules these changes may match, in the rules' order; the others cannot match."""
        positions = set(self._always)
        for path, change in changes.items():
            for position, watched in self._by_path.get(path, ()):
                if position not in positions and watched.happened(change):
                    positions.add(position)
        return [self.rules[p] for p in sorted(positions)]


CACHE_SECONDS = 60.0  # at most this old, whatever the token says (a rule write cut short of its token)
_indexes: dict[tuple[str, str, str, str], tuple[str | None, float, RuleIndex]] = {}


def indexed_rules(store: RuleSource, tenant: str, source: str, object_name: str) -> RuleIndex:
    """The object's active rules, indexed: read again only when the partition's version token changed."""
    key = (store.table, tenant, source, object_name)
    token = store.version(tenant, source, object_name)  # read before the rules: they are at least this new
    cached = _indexes.get(key)
    now = time.monotonic()
    if cached is not None and cached[0] == token and now - cached[1] < CACHE_SECONDS:
        return cached[2]
    stored = store.rules_for(tenant, source, object_name)
    index = RuleIndex([r for r in stored if r.active])
    # Rules written before version tokens existed are read every time. A partition with no token and no rule
    # (an object no rule was ever written for: most of a CRM's events) is kept: the first rule written there
    # writes its token, which differs from None.
    if token is not None or not stored:
        _indexes[key] = (token, now, index)
    return index
