"""Rule documents checked as the admin API and the CLI check them: the rules engine's checks and every
action type's own (billflow.rules.validation receives the action types from here)."""

from __future__ import annotations

from typing import Any

from billflow.actions import get_action_type
from billflow.models.rules import Rule
from billflow.rules import validation
from billflow.rules.validation import Problem


def validate_rule(document: Any) -> tuple[Rule | None, list[Problem]]:
    """The rule, or None, and every problem of the document with its rule and field path."""
    return validation.validate_rule(document, get_action_type)
