"""Issue 8 §5: hostile requests to every route of the local runtime are answered 4xx, never 5xx, never
with a stack trace; the runtime stays up, and valid won deals sent in between are each invoiced once.

A seeded generator (the same requests on every run; FUZZ_SEED picks another set) mutates what each route
expects: path parameters, methods, query strings, headers, and bodies (bytes that are not UTF-8, JSON
nested thousands deep, huge numbers, overlong ids, deeply nested patterns, signed Twenty events whose
fields are hostile). Bounded by FUZZ_REQUESTS so CI stays under a minute.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import os
import random
import socket
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from tests.e2e.conftest import SIGNING_SECRET, TENANT, WON_EVENT, Stack
from tests.fakes.signing import twenty_body, twenty_headers

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("FUZZ_SEED", "20260318"))
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "3000"))
ADMIN_TENANT = "fuzzing"
VALID_EVERY = 200  # a valid won deal after this many hostile requests
TRACE_MARKERS = ("Traceback", 'File "/', "site-packages", ".py\", line")
PRE_ENCODED = {"%00", "%2F", "%2e%2e", "%FF%FE", "%C0%AF", "rule%20id", "%25"}  # sent as they are
RULE = yaml.safe_load((ROOT / "examples" / "rules" / "won-to-stripe.yaml").read_text())
RULE["trigger"] = {("on" if key is True else key): value for key, value in RULE["trigger"].items()}  # YAML 1.1


@dataclass
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answer: bytes = b""

    def shown(self) -> str:
        return (f"{self.method} {self.path[:120]} headers={ {k: v[:60] for k, v in self.headers.items()} } "
                f"body={self.body[:160]!r}... ({len(self.body)} bytes) -> {self.status} {self.answer[:300]!r}")


class Fuzzer:
    def __init__(self, rng: random.Random, routes: list[str]) -> None:
        self.rng = rng
        self.routes = routes  # "POST /webhooks/{tenant}/{source}", ...
        self.webhook = False

    def pick(self, options: list[Any]) -> Any:
        return self.rng.choice(options)

    def junk_text(self, most: int = 40) -> str:
        alphabet = string.printable + "éß漢字\u202e\u0000\ud7ff🙂"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, most)))

    def segment(self, name: str) -> str:
        hostile = ["", "%00", "%2F", "..", "%2e%2e", "a" * 3000, "%FF%FE", "%C0%AF", self.junk_text(12),
                   "Ünïcødé", "UPPER", "-leading-dash", "rule%20id", "%25", "null", "0"]
        # Admin calls go to another tenant: a valid DELETE or deactivate must not stop the deals checked here.
        valid = {"tenant": TENANT if self.webhook else ADMIN_TENANT, "source": "twenty", "rule_id": RULE["id"],
                 "name": "not-a-run"}
        return valid.get(name, "x") if self.rng.random() < 0.5 else self.pick(hostile)

    def path(self, template: str) -> str:
        parts = []
        for part in template.strip("/").split("/"):
            if part.startswith("{"):
                value = self.segment(part.strip("{}+"))
                parts.append(value if value in PRE_ENCODED else _quote(value))
            else:
                parts.append(part)
        path = "/" + "/".join(parts)
        if self.rng.random() < 0.3:
            path += "?" + "&".join(f"{self.pick(['limit', 'status', 'rule', 'record', 'next', 'x'])}="
                                   f"{_quote(self.pick(['-1', '0', '1e9', 'abc', '9' * 400, '', self.junk_text(8)]))}"
                                   for _ in range(self.rng.randint(1, 3)))
        return path

    def json_value(self, depth: int = 0) -> Any:
        makers: list[Callable[[], Any]] = [
            lambda: None, lambda: True, lambda: self.rng.randint(-(10**40), 10**40), lambda: 1e308,
            self.junk_text, lambda: self.pick([0, -1, 1.5, "", "0", []]),
            lambda: [self.json_value(depth + 1) for _ in range(self.rng.randint(0, 3))],
            lambda: {self.junk_text(8): self.json_value(depth + 1) for _ in range(self.rng.randint(0, 3))},
            lambda: {"rules": [self.rule_document() for _ in range(self.rng.randint(0, 2))]},
            self.rule_document,
        ]
        return makers[self.rng.randint(0, 9 if depth < 3 else 5)]()

    def rule_document(self) -> dict[str, Any]:
        doc = copy.deepcopy(RULE)
        mutations: list[Callable[[], None]] = [
            lambda: doc.update(pattern="(" * 5000 + "1" + ")" * 5000),
            lambda: doc.update(pattern="NOT " * 4000 + "1"),
            lambda: doc.update(id=self.junk_text(300)),
            lambda: doc.update(criteria=[{"field": "a." * 2000 + "b", "comparator": "is", "value": 1}]),
            lambda: doc.update(criteria=[{"field": "amount.amountMicros", "comparator": "greater_than",
                                          "value": 10**40}]),
            lambda: doc.update(actions=[{"type": self.junk_text(10), "options": {"x": self.json_value(3)}}]),
            lambda: doc.update(trigger={"type": "date", "field": "closeDate", "offset_days": 10**30}),
            lambda: doc.update(trigger=self.json_value(3)),
            lambda: doc.update(name=self.junk_text(5000)),
            lambda: doc.pop(self.pick(sorted(doc))),
            lambda: doc.update({self.junk_text(6): self.json_value(2)}),
        ]
        for _ in range(self.rng.randint(1, 3)):
            self.pick(mutations)()
        return doc

    def deep(self) -> bytes:
        depth = self.rng.choice([1000, 5000, 20000])
        opener, closer = self.pick([(b"[", b"]"), (b'{"a":', b"}")])
        return opener * depth + b"1" + closer * depth

    def body(self) -> bytes:
        choices: list[Callable[[], bytes]] = [
            lambda: b"",
            lambda: bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 300))),
            lambda: b"\xff\xfe" + json.dumps({"rules": []}).encode(),
            lambda: json.dumps({"name": "caf"}).encode().replace(b"caf", b"caf\xe9"),
            self.deep,
            lambda: json.dumps(self.json_value()).encode(),
            lambda: json.dumps(self.json_value()).encode()[: self.rng.randint(0, 50)],
            lambda: b"9" * self.rng.choice([400, 5000, 100_000]),
            lambda: b'{"rules": [' + b"1e999999," * 10 + b"1]}",
            lambda: json.dumps({"rules": [self.rule_document()], "prune": self.pick([True, "yes", None])}).encode(),
            lambda: json.dumps(self.rule_document()).encode(),
            lambda: json.dumps({"event": self.hostile_twenty_event(), "previous": self.json_value(2)}).encode(),
        ]
        return self.pick(choices)()

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.pick(["application/json", "text/plain", "application/json; charset=latin-1",
                                              "multipart/form-data; boundary=" + "-" * 500])}
        if self.rng.random() < 0.2:
            headers[self.pick(["X-Twenty-Webhook-Timestamp", "X-Twenty-Webhook-Signature", "Cookie",
                               "Authorization", "X-Forwarded-For"])] = self.pick(
                ["9" * 330, "-1", "", "é" * 10, "a" * 8000, "; ; =", self.junk_text(30).replace("\n", " ")
                 .replace("\r", " ").replace("\x00", " ").replace("\x0b", " ").replace("\x0c", " ")])
        return headers

    def hostile_twenty_event(self) -> dict[str, Any]:
        event = copy.deepcopy(WON_EVENT)
        record = event["record"]
        record["id"] = str(uuid.uuid4())
        record["stage"] = "PROPOSAL"  # matches no rule: hostile records must not start runs here
        mutations: list[Callable[[], None]] = [
            lambda: record.update(id="r" * self.rng.choice([1100, 5000])),
            lambda: record.update(id=self.pick([12, None, "", ["x"], {"a": 1}])),
            lambda: record.update(amount={"amountMicros": self.pick([10**34, 1e34, "1e34", -(10**30), "NaN"]),
                                          "currencyCode": self.pick(["USD", "", "ZZZ", 5])}),
            lambda: record.update(name=self.junk_text(2000)),
            lambda: record.update(nested=json.loads("[" * 150 + "]" * 150)),
            lambda: event.update(eventDate=self.pick(["", "not a date", "9999-99-99", 10**20, None])),
            lambda: event.update(eventName=self.pick(["opportunity.", ".updated", "x" * 3000, 5])),
            lambda: event.update(updatedFields=self.pick([None, "stage", [None], [{"a": 1}], ["x" * 5000]])),
            lambda: event.update(objectMetadata={"nameSingular": self.pick(["", "o" * 2000, None, 7])}),
            lambda: event.pop(self.pick(sorted(event))),
        ]
        for _ in range(self.rng.randint(1, 3)):
            self.pick(mutations)()
        return event

    def request(self) -> Sent:
        route = self.pick(self.routes + ["POST /webhooks/{tenant}/{source}"] * 4)  # webhooks: unauthenticated
        method, template = route.split(" ", 1)
        if self.rng.random() < 0.1:
            method = self.pick(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        self.webhook = template.startswith("/webhooks")
        path = self.path(template)
        if template.startswith("/webhooks") and self.rng.random() < 0.5:
            # Signed with the tenant's secret, so the hostile body reaches parsing, keying and the bus.
            body = twenty_body(self.hostile_twenty_event()) if self.rng.random() < 0.8 else self.body()
            headers = twenty_headers(SIGNING_SECRET, body)
            return Sent(method, f"/webhooks/{TENANT}/twenty", headers, body)
        return Sent(method, path, self.headers(), self.body() if method not in ("GET", "HEAD") else b"")


def _quote(value: str) -> str:
    return quote(value, safe="")


def send(stack: Stack, sent: Sent) -> Sent:
    conn = http.client.HTTPConnection("127.0.0.1", int(stack.runtime.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.putrequest(sent.method, sent.path)
        for name, value in sent.headers.items():
            conn.putheader(name, value.encode())  # UTF-8 bytes, as a hostile client may send
        if sent.body or sent.method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(sent.body)))
        conn.endheaders(sent.body or None)
        response = conn.getresponse()
        sent.status, sent.answer = response.status, response.read()
    finally:
        conn.close()
    return sent


def test_thousands_of_hostile_requests_get_4xx_and_valid_deals_between_them_are_invoiced_once(
    stack: Stack,
) -> None:
    routes = json.loads(send(stack, Sent("GET", "/_local/health", {}, b"")).answer)["routes"]
    assert any(r.startswith("POST /admin/") for r in routes) and "POST /webhooks/{tenant}/{source}" in routes
    seeded = send(stack, Sent("POST", f"/admin/tenants/{ADMIN_TENANT}/rules", {"Content-Type": "application/json"},
                              json.dumps(RULE).encode()))
    assert seeded.status == 200, seeded.shown()  # so the admin tenant's valid paths have a rule to act on
    fuzzer = Fuzzer(random.Random(SEED), routes)
    server_errors: list[Sent] = []
    leaks: list[Sent] = []
    valid: list[str] = []
    started = time.monotonic()
    for i in range(REQUESTS):
        sent = send(stack, fuzzer.request())
        if sent.status >= 500:
            server_errors.append(sent)
        elif any(marker in sent.answer.decode("utf-8", "replace") for marker in TRACE_MARKERS):
            leaks.append(sent)
        if i % VALID_EVERY == 0:
            won = stack.new_opportunity()
            status, _ = stack.post_signed(won)
            assert status == 202
            valid.append(won["record"]["id"])
    elapsed = time.monotonic() - started
    stack.runtime.wait_idle(120)

    by_route = Counter(f"{s.method} {s.path.split('?')[0][:80]}" for s in server_errors + leaks)
    report = "\n".join(s.shown() for s in (server_errors + leaks)[:15])
    assert not server_errors and not leaks, (
        f"{len(server_errors)} 5xx and {len(leaks)} answers with internals out of {REQUESTS} "
        f"(seed {SEED}), by route: {dict(by_route.most_common(20))}\n{report}")
    health = send(stack, Sent("GET", "/_local/health", {}, b""))
    assert health.status == 200  # the runtime stays up
    for record_id in valid:
        assert len(stack.invoices_for(record_id)) == 1, record_id
    assert elapsed < 60, f"{REQUESTS} requests took {elapsed:.0f} s"


def raw(stack: Stack, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as they are; the status and body of the answer (0 if the connection closed without one)."""
    port = int(stack.runtime.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # A server may answer 413 and close before reading everything: the answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    head, _, rest = answer.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), None)
                    if length is not None and len(rest) >= length:
                        break
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer.partition(b"\r\n\r\n")[2]


def test_the_server_answers_malformed_http_as_api_gateway_does(stack: Stack) -> None:
    """API Gateway: an unknown method is a 404 JSON, a bad Content-Length a 400, a body over 10 MB a 413
    before it is read in full; never an HTML page, a hang or a dropped connection."""
    path = f"/webhooks/{TENANT}/twenty"
    cases = {
        "unknown method": (b"BREW " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404),
        "negative length": (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        "non-numeric length": (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n\r\n",
                               400),
        "11 MB body": (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 11534336\r\n\r\n"
                       + b"x" * 11_534_336, 413),
    }
    answers = {name: raw(stack, request) for name, (request, _) in cases.items()}

    assert {name: status for name, (status, _) in answers.items()} == {
        name: expected for name, (_, expected) in cases.items()}
    for name, (_, body) in answers.items():
        assert body.startswith(b"{"), f"{name}: {body[:200]!r}"  # JSON, as API Gateway, never an HTML page
    assert send(stack, Sent("GET", "/_local/health", {}, b"")).status == 200
