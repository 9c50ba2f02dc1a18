"""A tenant's usage: today's count against each daily limit (the day counters the state machine keeps), and
documents sent, failed and limited per day (the execution log's by-status index)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from billflow.models.admin import UsageAnswer, UsageDay, UsageToday
from billflow.models.rules import TenantSettings
from billflow.settings import get_settings
from billflow.storage.day_counters import CounterStore
from billflow.storage.execution_log import ExecutionLog
from billflow.storage.keys import counter_pk
from billflow.storage.rules import RuleStore

USAGE_STATUSES = ("sent", "failed", "limited")
MAX_DAYS = 400  # the longest a log item is kept (prod)
MAX_ITEMS = 20_000  # log items read per status at most: a usage page stays one bounded read


def usage(
    tenant: str, days: int, *, settings: TenantSettings, rules: RuleStore, counters: CounterStore,
    log: ExecutionLog, now: datetime | None = None,
) -> UsageAnswer:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    default_limit = get_settings().default_daily_limit if settings.default_daily_limit is None \
        else settings.default_daily_limit
    # Action types with a limit of their own, and those the tenant's rules use (the default limit applies).
    action_types = set(settings.daily_limits)
    for rule in rules.all_rules(tenant):
        for block in rule.blocks:
            action_types.update(action.limit_key for action in block.every_action())
    day = now.strftime("%Y-%m-%d")
    today = [UsageToday(action_type=kind, count=counters.read(counter_pk(tenant, kind, day)).count,
                        limit=settings.daily_limits.get(kind, default_limit)) for kind in sorted(action_types)]

    first = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # between() is (since, until]: a millisecond before midnight takes the first day whole
    end_of_today = first + timedelta(days=days)  # the log's times have milliseconds: now would cut them
    items = log.between(tenant, USAGE_STATUSES, first - timedelta(milliseconds=1), end_of_today, most=MAX_ITEMS)
    per_day: dict[str, Counter[str]] = {}
    for item in items:
        per_day.setdefault(str(item.get("at", ""))[:10], Counter())[str(item.get("status"))] += 1
    answer_days = []
    for offset in range(days):
        date = (first + timedelta(days=offset)).strftime("%Y-%m-%d")
        seen = per_day.get(date, Counter())
        answer_days.append(UsageDay(date=date, sent=seen["sent"], failed=seen["failed"], limited=seen["limited"]))
    return UsageAnswer(today=today, days=answer_days)
