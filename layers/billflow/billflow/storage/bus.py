"""Publishing normalised events on the billflow bus."""

from __future__ import annotations

from billflow.aws import client
from billflow.errors import TransientError
from billflow.models.events import EVENT_DETAIL_TYPE, EVENT_SOURCE, CrmEvent
from billflow.settings import get_settings

_MAX_ENTRIES = 10  # PutEvents takes at most 10 entries a call


def publish_events(events: list[CrmEvent]) -> None:
    bus = get_settings().event_bus_name
    for start in range(0, len(events), _MAX_ENTRIES):
        chunk = events[start : start + _MAX_ENTRIES]
        answer = client("events").put_events(
            Entries=[
                {
                    "EventBusName": bus,
                    "Source": EVENT_SOURCE,
                    "DetailType": EVENT_DETAIL_TYPE,
                    "Detail": event.model_dump_json(),
                }
                for event in chunk
            ]
        )
        if answer.get("FailedEntryCount"):
            # The webhook caller gets a 5xx and retries: nothing valid is dropped.
            raise TransientError("the event bus refused some events; retry the delivery")
