"""Email alerts through Amazon SES (seed 004's 电子邮件提醒): a template, recipients from the record, extras.

    - type: email_alert
      options:
        subject: "Invoice ${INVOICE.ID} for ${OPPORTUNITY.NAME}"
        text: "Hello {{ contact.name.firstName }}, ..."        (text and/or html; placeholders in html are
        html: "<p>Invoice for <b>${COMPANY.NAME}</b></p>"      HTML-escaped)
        recipient_fields: [pointOfContact.emails.primaryEmail] (addresses read from the run's context)
        to: [billing@example.com]                              (extra addresses: to, cc and bcc together
        cc: []                                                  at most 10, seed 004's limit)
        bcc: []
        reply_to: [finance@example.com]

A recipient field is a path into the run's context (`contact.emails.primaryEmail`), into the record
(`emails.primaryEmail`), or through one of the record's relations (`pointOfContact.emails.primaryEmail`
reads the contact the lookup fetched for `pointOfContactId`); it may hold an address, a list of them, or
Twenty's Emails field (its primaryEmail). An address a field holds that is not an address is skipped (and
listed in the request); no recipient at all is a ConfigurationError.

The sender is the SES_FROM_ADDRESS environment variable (a verified SES identity, e.g.
"billflow <billing@example.com>"); SES_CONFIGURATION_SET, when set, names the configuration set. At most 5
email alerts per rule (rules/validation.py).
"""

from __future__ import annotations

import html
import re
from typing import Any

from billflow.actions.base import ActionType
from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.models.run import RunState
from billflow.rules.paths import MISSING, get_path
from billflow.rules.templates import PLACEHOLDER, REFERENCE, render, resolve_reference
from billflow.settings import get_settings
from billflow.storage.email import send_email

MAX_PER_RULE = 5
MAX_EXTRA_RECIPIENTS = 10
MAX_RECIPIENTS = 50  # SES: at most 50 recipients per message
OPTIONS = frozenset({"subject", "text", "html", "recipient_fields", "to", "cc", "bcc", "reply_to"})
EXTRA_LISTS = ("to", "cc", "bcc")
# Pragmatic, not RFC 5322: one @, no spaces, a dot in the domain. SES rejects the rest anyway.
ADDRESS = re.compile(r"^[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[^@\s<>(),;:\"]+$")
FIELD_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")


def from_address() -> str | None:
    return get_settings().ses_from_address or None


def is_address(value: str) -> bool:
    return bool(ADDRESS.match(value))


def addresses_in(value: Any) -> list[str]:
    """The addresses a field holds: a string (comma or semicolon separated), a list, Twenty's Emails."""
    if value is None or value is MISSING:
        return []
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[,;]", value) if part.strip()]
    if isinstance(value, list):
        return [address for item in value for address in addresses_in(item)]
    if isinstance(value, dict) and "primaryEmail" in value:
        return addresses_in(value.get("primaryEmail"))
    return []


def field_value(path: str, context: dict[str, Any]) -> Any:
    """A recipient field: a context path, a record path, a path through a relation, or ${...} style."""
    head, _, rest = path.partition(".")
    if head in context:
        return get_path(context, path)
    record = context.get("record") or {}
    found = get_path(record, path)
    if found is not MISSING:
        return found
    related_id = record.get(f"{head}Id") if isinstance(record, dict) else None
    if related_id and rest:  # pointOfContact.x -> the looked-up record whose id is pointOfContactId
        for candidate in context.values():
            if isinstance(candidate, dict) and candidate.get("id") == related_id:
                return get_path(candidate, rest)
    return resolve_reference(path, context) if "." in path else MISSING


class EmailAlertAction(ActionType):
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        options = action.options
        if not options.get("recipient_fields") and not any(options.get(k) for k in EXTRA_LISTS):
            raise ConfigurationError(
                "an email alert needs recipients: recipient_fields (record fields holding addresses) "
                "and/or to/cc/bcc (at most 10 extra addresses)"
            )
        context = state.context()
        skipped: list[str] = []
        from_fields: list[str] = []
        for path in _strings(options.get("recipient_fields")):
            for address in addresses_in(field_value(path, context)):
                (from_fields if is_address(address) else skipped).append(address)
        extras = {name: self._extra(name, options, context) for name in (*EXTRA_LISTS, "reply_to")}
        to = _unique([*from_fields, *extras["to"]])
        cc = [a for a in _unique(extras["cc"]) if a not in to]
        bcc = [a for a in _unique(extras["bcc"]) if a not in to and a not in cc]
        if not to and not cc and not bcc:
            fields = ", ".join(_strings(options.get("recipient_fields"))) or "none"
            raise ConfigurationError(
                f"the email alert has no recipient in this run: recipient_fields ({fields}) hold no address"
                + (f" (not addresses: {', '.join(skipped)})" if skipped else "")
                + " and to/cc/bcc are empty"
            )
        if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
            raise ConfigurationError(f"an email goes to at most {MAX_RECIPIENTS} recipients (SES)")
        subject = render(options.get("subject") or "", context)
        text = render(options["text"], context) if options.get("text") else None
        body_html = render(options["html"], context, escape=html.escape) if options.get("html") else None
        if not text and not body_html:
            raise ConfigurationError("an email alert needs a text and/or an html body")
        request: dict[str, Any] = {
            "from": from_address(),
            "to": to, "cc": cc, "bcc": bcc, "reply_to": _unique(extras["reply_to"]),
            "subject": " ".join(str(subject).split()),  # one line: a subject cannot hold line breaks
            "text": text, "html": body_html,
        }
        if skipped:
            request["skipped"] = skipped
        return request

    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        message_id = send_email(self._ses_request(request, state))
        recipients = len(request["to"]) + len(request["cc"]) + len(request["bcc"])
        return DispatchResult(status="sent", external_id=message_id,
                              details={"recipients": recipients})

    def preview(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> list[dict[str, Any]]:
        return [{"action": action.type, "service": "sesv2", "operation": "SendEmail",
                 "request": self._ses_request(request, state)}]

    def check(self, action: Action) -> list[tuple[str, str]]:
        """Problems a saved rule would have (rules/validation.py): (where in the action, what)."""
        options = action.options
        problems = [(f"options.{k}", f"unknown email alert option; known: {', '.join(sorted(OPTIONS))}")
                    for k in sorted(set(options) - OPTIONS)]
        if not isinstance(options.get("subject"), str) or not options["subject"].strip():
            problems.append(("options.subject", "an email alert needs a subject"))
        for name in ("text", "html"):
            if name in options and not isinstance(options[name], str):
                problems.append((f"options.{name}", "must be text"))
        if not options.get("text") and not options.get("html"):
            problems.append(("options", "an email alert needs a text and/or an html body"))
        fields = options.get("recipient_fields")
        if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
            problems.append(("options.recipient_fields", "a list of field paths"))
        for i, path in enumerate(_strings(fields)):
            if not FIELD_PATH.match(path):
                problems.append((f"options.recipient_fields.{i}", f"{path!r} is not a field path"))
        extra = 0
        for name in (*EXTRA_LISTS, "reply_to"):
            value = options.get(name)
            if value is None:
                continue
            if not isinstance(value, list | str) or (isinstance(value, list) and not all(
                    isinstance(v, str) for v in value)):
                problems.append((f"options.{name}", "a list of addresses"))
                continue
            for i, address in enumerate(_listed(value)):
                templated = PLACEHOLDER.search(address) or REFERENCE.search(address)
                if not templated and not is_address(address):
                    problems.append((f"options.{name}.{i}", f"{address!r} is not an email address"))
            if name != "reply_to":
                extra += len(_listed(value))
        if extra > MAX_EXTRA_RECIPIENTS:
            problems.append(("options.to", f"at most {MAX_EXTRA_RECIPIENTS} extra recipients (to, cc and bcc "
                                           f"together); this alert has {extra}"))
        if not _strings(fields) and extra == 0:
            problems.append(("options", "an email alert needs recipients: recipient_fields and/or to/cc/bcc"))
        return problems

    # --- helpers ------------------------------------------------------------------------------------
    def _extra(self, name: str, options: dict[str, Any], context: dict[str, Any]) -> list[str]:
        addresses: list[str] = []
        for entry in _listed(options.get(name)):
            for address in addresses_in(render(entry, context)):
                if not is_address(address):
                    raise ConfigurationError(f"email alert {name}: {address!r} is not an email address")
                addresses.append(address)
        return addresses

    def _ses_request(self, request: dict[str, Any], state: RunState) -> dict[str, Any]:
        sender = request.get("from") or from_address()
        if not sender:
            raise ConfigurationError("email alerts need SES_FROM_ADDRESS (a verified SES identity) to be set")
        destination = {key: request[name] for key, name in
                       (("ToAddresses", "to"), ("CcAddresses", "cc"), ("BccAddresses", "bcc")) if request[name]}
        body: dict[str, Any] = {}
        if request.get("text"):
            body["Text"] = {"Data": request["text"], "Charset": "UTF-8"}
        if request.get("html"):
            body["Html"] = {"Data": request["html"], "Charset": "UTF-8"}
        params: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": destination,
            "Content": {"Simple": {"Subject": {"Data": request["subject"], "Charset": "UTF-8"}, "Body": body}},
            # Tags let SES event destinations route by tenant and rule; values: letters, digits, _ and -.
            "EmailTags": [{"Name": "tenant", "Value": _tag(state.tenant)},
                          {"Name": "rule", "Value": _tag(state.rule.id)}],
        }
        if request.get("reply_to"):
            params["ReplyToAddresses"] = request["reply_to"]
        configuration_set = get_settings().ses_configuration_set
        if configuration_set:
            params["ConfigurationSetName"] = configuration_set
        return params


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _listed(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return _strings(value)


def _unique(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    unique: list[str] = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def _tag(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:256] or "_"
