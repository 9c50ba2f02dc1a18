"""The example rules the README and `make run` use are valid, as `billflow rules validate` checks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from billflow_cli.rulesfile import load_rules

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("folder", ["rules", "more-rules", "hubspot"])
def test_example_rules_are_valid(folder: str) -> None:
    rules = load_rules(EXAMPLES / folder, tenant="demo")
    assert rules
    assert all(rule.trigger.on == "edited" for rule in rules)  # YAML 1.2: `on:` is a key, not True


def test_the_follow_up_example_uses_blocks_and_a_time_based_group() -> None:
    [rule] = load_rules(EXAMPLES / "more-rules", tenant="demo")
    assert rule.blocks_match == "every"
    assert len(rule.blocks) == 2
    assert rule.blocks[0].time_based[0].recheck_criteria
