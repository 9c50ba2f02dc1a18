"""In-app notifications (seed 004's 应用内通知): an event on the billflow bus and a message on an SNS topic.

    - type: notification
      options:
        title: "Won: ${OPPORTUNITY.NAME}"                      (optional; default: the rule's name)
        message: "${COMPANY.NAME} signed for ${OPPORTUNITY.AMOUNT}"
        recipients: [finance, sam@example.com]                 (optional; who should see it, for routing)
        level: info                                            (info, success, warning or error)

One notification becomes
- an EventBridge event on the billflow bus (EVENT_BUS_NAME): Source "billflow.notifications", DetailType
  "Notification", Detail = the notification document; an EventBridge rule routes it to any target;
- an SNS message on NOTIFICATION_TOPIC_ARN: MessageStructure json, the same document for every protocol
  ("default") and a readable text for email and SMS, with MessageAttributes tenant, rule, object and level
  for subscription filter policies. A FIFO topic gets the tenant as group and the send key as deduplication
  id. The SNS subject is an ASCII version of the title (SNS refuses anything else); the document keeps it
  whole.
The document's notification_id is the send key: a consumer seeing it twice (a retried send) drops one.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from billflow.actions.base import ActionType
from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.models.run import RunState
from billflow.rules.templates import render
from billflow.settings import get_settings
from billflow.storage.notifications import publish_notification

SOURCE = "billflow.notifications"
DETAIL_TYPE = "Notification"
LEVELS = ("info", "success", "warning", "error")
OPTIONS = frozenset({"title", "message", "recipients", "level"})
MAX_MESSAGE_CHARS = 10_000  # an EventBridge entry is at most 256 KB; a notification is meant to be read


def topic_arn() -> str:
    arn = get_settings().notification_topic_arn
    if not arn:
        raise ConfigurationError("notifications need NOTIFICATION_TOPIC_ARN (the SNS notifications topic)")
    return arn


class NotificationAction(ActionType):
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        options = action.options
        if not isinstance(options.get("message"), str) or not options["message"].strip():
            raise ConfigurationError("a notification needs a message")
        context = state.context()
        message = str(render(options["message"], context))[:MAX_MESSAGE_CHARS]
        title = str(render(options.get("title") or state.rule.name or state.rule.id, context))
        level = options.get("level") or "info"
        if level not in LEVELS:
            raise ConfigurationError(f"notification level {level!r}; one of {', '.join(LEVELS)}")
        return {
            "tenant": state.tenant,
            "rule": {"id": state.rule.id, "name": state.rule.name},
            "source": state.event.source,
            "object": state.event.object,
            "record_id": state.event.record_id,
            "level": level,
            "title": " ".join(title.split()),
            "message": message,
            "recipients": [str(r) for r in render(options.get("recipients") or [], context)],
        }

    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        event, sns = self._requests(request, key)
        event_id, message_id = publish_notification(event, sns)
        return DispatchResult(status="notified", external_id=message_id,
                              details={"event_id": event_id, "level": request["level"]})

    def preview(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> list[dict[str, Any]]:
        event, sns = self._requests(request, key)
        return [{"action": action.type, "service": "events", "operation": "PutEvents", "request": event},
                {"action": action.type, "service": "sns", "operation": "Publish", "request": sns}]

    def check(self, action: Action) -> list[tuple[str, str]]:
        """Problems a saved rule would have (rules/validation.py): (where in the action, what)."""
        options = action.options
        problems = [(f"options.{k}", f"unknown notification option; known: {', '.join(sorted(OPTIONS))}")
                    for k in sorted(set(options) - OPTIONS)]
        if not isinstance(options.get("message"), str) or not options["message"].strip():
            problems.append(("options.message", "a notification needs a message"))
        if "title" in options and not isinstance(options["title"], str):
            problems.append(("options.title", "must be text"))
        if options.get("level", "info") not in LEVELS:
            problems.append(("options.level", f"one of {', '.join(LEVELS)}"))
        recipients = options.get("recipients")
        if recipients is not None and not (isinstance(recipients, list)
                                           and all(isinstance(r, str) for r in recipients)):
            problems.append(("options.recipients", "a list of user names or addresses"))
        return problems

    # --- the two requests ----------------------------------------------------------------------------
    def _requests(self, request: dict[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        bus = get_settings().event_bus_name
        if not bus:
            raise ConfigurationError("notifications need EVENT_BUS_NAME (the billflow bus)")
        document = {"notification_id": key, **request}
        detail = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        event = {"Entries": [{"EventBusName": bus, "Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": detail}]}
        readable = f"{request['title']}\n\n{request['message']}"
        arn = topic_arn()
        sns: dict[str, Any] = {
            "TopicArn": arn,
            "Subject": _sns_subject(request["title"]),
            "MessageStructure": "json",
            "Message": json.dumps({"default": detail, "email": readable, "email-json": detail,
                                   "sms": request["message"][:140]}, ensure_ascii=False),
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": str(value)}
                for name, value in (("tenant", request["tenant"]), ("rule", request["rule"]["id"]),
                                    ("object", request["object"]), ("level", request["level"]))
                if value
            },
        }
        if arn.endswith(".fifo"):
            sns["MessageGroupId"] = request["tenant"]
            sns["MessageDeduplicationId"] = hashlib.sha256(key.encode()).hexdigest()[:128]
        return event, sns


def _sns_subject(title: str) -> str:
    """SNS subjects: ASCII, no line breaks, under 100 characters, starting with a letter, digit or mark."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    cleaned = "".join(ch for ch in ascii_title if ch.isprintable()).strip()
    return (cleaned or "billflow notification")[:99]
