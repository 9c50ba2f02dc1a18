"""Rules indexed by the changes they watch, so an event meets only the rules its changes can match.

A block of criteria needs a transition criterion (changed, changed_to, changed_from) when its pattern is
false whenever that criterion is false, whatever the others say. A rule whose every block needs one can
only match an event that changed one of those fields (to, or from, the value the criterion names); it is
filed under them. A rule with a block that needs no change (criteria on values only) is always a candidate.
Candidates keep the rules' order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from billflow.models.rules import Block, Rule
from billflow.rules import comparators
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import kleene
from billflow.rules.pattern import default_pattern, parse_pattern


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
        if kleene(tree, lambda n, number=number: False if n == number else None) is False:
            return WatchedChange(criterion.field, name, criterion.value)
    return None


class RuleIndex:
    """The rules of one object, in order, filed by the changes they need."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._always: list[int] = []
        self._by_path: dict[str, list[tuple[int, WatchedChange]]] = {}
        for position, rule in enumerate(self.rules):
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
