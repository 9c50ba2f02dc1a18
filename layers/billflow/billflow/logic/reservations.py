"""Daily limits count what was sent: reserve, then commit or release (issue 8 §4).

The state machine reserves with a DynamoDB service integration on the counters table (CountDaily, before
Dispatch); the Dispatch task commits once the action was sent, or releases when it sent nothing
(logic/action_step.py, storage/day_counters.py); ReleaseFailed releases when the run failed. Reserve's
condition (`count < limit`, count being the sends made and in flight) is one atomic conditional update, so N
runs racing for a limit L send exactly min(N, L), never L + 1; a failed send gives its place back, so replays
of runs that failed in an outage, or were limited while those held places, go through once the limit allows.

Why a lease. Step Functions runs a Catch whenever a task fails, so every failure path reaches Release; a hold
is left behind only when the execution itself ends without running its Catch: StopExecution (an admin), the
execution timing out, or Release failing after its own retries. Each hold therefore carries the epoch second
its lease ends, long enough for the longest legitimate Dispatch (its retries and backoffs; a Retry-After
wait renews it). When Reserve is refused, `settle` looks at the item: lapsed holds are reclaimed (each with a
conditional update, so two runs never reclaim the same place) and Reserve is tried again; a hold of this very
run means an earlier attempt of Reserve succeeded (a retried service call); otherwise the run is limited.
Reclaiming only when the limit would otherwise refuse keeps the hot path two writes per send and needs no
sweeper; DynamoDB's TTL removes the whole day's item after three days.

A committed send whose hold was reclaimed meanwhile (it outlived its lease) is still counted (CommitLate):
the document exists, and over-counting by one errs on the side of the limit.
"""

from __future__ import annotations

import time
from typing import Any

from billflow.observability import logger
from billflow.storage.day_counters import CounterStore, get_counter_store

# Dispatch's worst case without a Retry-After: 1 + 3 + 4 attempts of up to 120 s, backoffs capped at 60 s.
HOLD_LEASE_SECONDS = 30 * 60


def lease_end(now: float | None = None, extra_seconds: int = 0) -> str:
    """When a hold taken now lapses (a number, as DynamoDB's N wants it)."""
    return str(int(now if now is not None else time.time()) + extra_seconds + HOLD_LEASE_SECONDS)


def settle(counter: dict[str, Any], hold: str, store: CounterStore | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Reserve was refused: {"outcome": "reserved" | "retry" | "limited", "reclaimed": n}.

    reserved: this hold is already there (an earlier attempt succeeded); retry: lapsed holds were given
    back, Reserve may succeed now; limited: the day's limit is taken by sends and live holds.
    """
    store = store or get_counter_store()
    now = time.time() if now is None else now
    item = store.read(str(counter["pk"]))
    if hold in item.holds:
        return {"outcome": "reserved", "reclaimed": 0}
    lapsed = {name: end for name, end in item.holds.items() if end <= now}
    reclaimed = sum(1 for name, end in sorted(lapsed.items()) if store.reclaim(item.pk, name, end))
    if reclaimed:
        logger.warning("lapsed daily-limit holds reclaimed", extra={"counter": item.pk, "reclaimed": reclaimed})
    # Retry too when places came free since Reserve was refused (another run reclaimed the lapsed holds,
    # or a send failed and released its hold): the condition decides again, atomically.
    if reclaimed or lapsed or item.count < int(counter["limit"]):
        return {"outcome": "retry", "reclaimed": reclaimed}
    return {"outcome": "limited", "reclaimed": 0}
