"""Format task: pick the run's next action and build its request, or say the run is done.

Called with the run itself (NextAction), or with {"task": "decide" | "resume", "run": <the run>} by the
Decide and Resume states, which take the whole run back (logic/run.py says what each answers).
"""

from __future__ import annotations

from typing import Any

from billflow.logic.run import decide, plan_next, resume
from billflow.models.run import RunState
from billflow.observability import logger

_TASKS = {"decide": decide, "resume": resume}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    task = event.get("task")
    if task is None:
        return plan_next(RunState.model_validate(event))
    if task not in _TASKS:
        raise ValueError(f"unknown format task {task!r}; known: {', '.join(sorted(_TASKS))}")
    return _TASKS[task](RunState.model_validate(event["run"]))
