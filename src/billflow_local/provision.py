"""Provisioning: every resource of template.yaml the application touches, created on moto with the template's
settings, and the tenants of the connections file stored as the functions will read them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from billflow.storage.rules import get_rule_store
from billflow.storage.secrets import secret_name
from moto.events.models import EventPattern

from billflow_local.bus import EVENTBRIDGE_DEFAULT_MAX_AGE_SECONDS, EVENTBRIDGE_DEFAULT_RETRIES, BusTarget, bus_name
from billflow_local.config import TenantConfig
from billflow_local.template import ACCOUNT_ID, EVENT_BUS, QUEUE, STATE_MACHINE, TABLE, TOPIC, Template

LAMBDA_DEFAULT_ASYNC_RETRIES = 2  # Lambda retries a failed asynchronous invocation twice by default
LAMBDA_DEFAULT_MAX_EVENT_AGE_SECONDS = 21_600


@dataclass(frozen=True)
class AsyncInvokeConfig:
    """A function's EventInvokeConfig: what Lambda does when an asynchronous invocation fails."""

    function: str
    function_arn: str
    max_attempts: int  # 1 + MaximumRetryAttempts
    max_age_seconds: float
    on_failure_url: str | None = None  # an SQS on-failure destination's queue URL


@dataclass
class Provisioned:
    state_machines: dict[str, str] = field(default_factory=dict)  # logical id -> ARN
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # state machine ARN -> ASL
    topic_queues: dict[str, str] = field(default_factory=dict)  # topic ARN -> local subscriber queue URL
    buses: set[str] = field(default_factory=lambda: {"default"})
    targets: list[BusTarget] = field(default_factory=list)
    async_invoke: dict[str, AsyncInvokeConfig] = field(default_factory=dict)  # function logical id -> config


class Provisioner:
    def __init__(self, template: Template, client: Callable[[str], Any]) -> None:
        self.template = template
        self.client = client

    def provision(self) -> Provisioned:
        t = self.template
        done = Provisioned()
        for logical_id in t.resources_of_type(TABLE):
            self._create_table(logical_id)
        for logical_id in t.resources_of_type(QUEUE):
            self._create_queue(logical_id)
        for logical_id in t.resources_of_type(EVENT_BUS):
            self.client("events").create_event_bus(Name=t.physical_name(logical_id))
            done.buses.add(t.physical_name(logical_id))
        for logical_id in t.resources_of_type(TOPIC):
            arn, url = self._create_topic(logical_id)
            done.topic_queues[arn] = url
        for logical_id in t.resources_of_type("AWS::SNS::Subscription"):
            props = t.resolve(t.properties(logical_id))
            self.client("sns").subscribe(TopicArn=props["TopicArn"], Protocol=props["Protocol"],
                                         Endpoint=props["Endpoint"])
        for logical_id in t.resources_of_type(STATE_MACHINE):
            arn, definition = self._create_state_machine(logical_id)
            done.state_machines[logical_id] = arn
            done.definitions[arn] = definition
        for logical_id, _ in t.iter_functions():
            done.async_invoke[logical_id] = self._async_invoke_config(logical_id)
            for event_name, props in t.function_events(logical_id, "EventBridgeRule").items():
                done.targets.append(self._create_bus_target(logical_id, event_name, t.resolve(props)))
        return done

    def _create_table(self, logical_id: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id))
        name = self.template.physical_name(logical_id)
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        for index_kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if props.get(index_kind):
                kwargs[index_kind] = [
                    {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection",
                                                              "ProvisionedThroughput")}
                    for index in props[index_kind]
                ]
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = props.get(
                "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
        if props.get("StreamSpecification"):
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        ddb = self.client("dynamodb")
        ddb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and truthy(ttl.get("Enabled")):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )

    def _create_queue(self, logical_id: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id))
        attributes = {key: str(props[key]) for key in (
            "MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds", "MaximumMessageSize",
            "ReceiveMessageWaitTimeSeconds") if key in props}
        for flag in ("FifoQueue", "ContentBasedDeduplication"):
            if flag in props:
                attributes[flag] = "true" if truthy(props[flag]) else "false"
        if props.get("RedrivePolicy"):
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        self.client("sqs").create_queue(QueueName=self.template.physical_name(logical_id),
                                        Attributes=attributes)

    def _create_topic(self, logical_id: str) -> tuple[str, str]:
        props = self.template.resolve(self.template.properties(logical_id))
        attributes = {"DisplayName": str(props["DisplayName"])} if props.get("DisplayName") else {}
        arn = self.client("sns").create_topic(Name=self.template.physical_name(logical_id),
                                              Attributes=attributes)["TopicArn"]
        # A local-only subscriber, so what the state machine publishes can be shown and asserted.
        queue = f"{self.template.stack_name}-local-{logical_id}"
        url = self.client("sqs").create_queue(QueueName=queue)["QueueUrl"]
        self.client("sns").subscribe(TopicArn=arn, Protocol="sqs", Endpoint=self._queue_arn(url))
        return str(arn), str(url)

    def _create_state_machine(self, logical_id: str) -> tuple[str, dict[str, Any]]:
        t = self.template
        props = t.properties(logical_id)
        if "DefinitionUri" in props:
            uri = t.resolve(props["DefinitionUri"])
            if not isinstance(uri, str):
                raise ValueError(f"{logical_id}: DefinitionUri must be a local file for the local runtime")
            text = (t.root / uri).read_text(encoding="utf-8")
        else:
            text = json.dumps(t.resolve(props["Definition"]))
        substitutions = {k: str(v) for k, v in t.resolve(props.get("DefinitionSubstitutions") or {}).items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            return substitutions.get(name, match.group(0))  # as SAM: other ${...} are left alone

        definition = re.sub(r"\$\{([A-Za-z0-9_]+)\}", substitute, text)
        arn = self.client("stepfunctions").create_state_machine(
            name=t.physical_name(logical_id),
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{t.stack_name}-{logical_id}Role",
            type=str(t.resolve(props.get("Type", "STANDARD"))),
        )["stateMachineArn"]
        return str(arn), json.loads(definition)

    def _create_bus_target(self, function: str, event_name: str, props: dict[str, Any]) -> BusTarget:
        stack = self.template.stack_name
        bus = bus_name(props.get("EventBusName"))
        rule = props.get("RuleName") or f"{stack}-{function}-{event_name}"[:64]
        pattern = json.dumps(props["Pattern"])
        state = str(props.get("State", "ENABLED"))
        # The rule exists in moto too (events.list_rules shows it), without targets: the bus here delivers.
        rule_arn = self.client("events").put_rule(Name=rule, EventBusName=bus, EventPattern=pattern,
                                                  State=state)["RuleArn"]
        retry = props.get("RetryPolicy") or {}
        dead_letter = props.get("DeadLetterConfig") or {}
        if dead_letter and not dead_letter.get("Arn"):
            raise ValueError(f"{function}.Events.{event_name}.DeadLetterConfig: give the queue's Arn; "
                             "SAM-created dead-letter queues (Type: SQS) are not supported locally")
        return BusTarget(
            function=function, function_arn=self.template.get_att(function, "Arn"), event_name=event_name,
            rule_name=rule, rule_arn=rule_arn, bus=bus,
            pattern=EventPattern.load(pattern), enabled=state == "ENABLED",
            max_attempts=int(retry.get("MaximumRetryAttempts", EVENTBRIDGE_DEFAULT_RETRIES)) + 1,
            max_age_seconds=float(retry.get("MaximumEventAgeInSeconds", EVENTBRIDGE_DEFAULT_MAX_AGE_SECONDS)),
            dead_letter_arn=dead_letter.get("Arn"),
            dead_letter_url=self._queue_url(dead_letter["Arn"]) if dead_letter.get("Arn") else None,
            input={k: props[k] for k in ("Input", "InputPath", "InputTransformer") if k in props},
        )

    def _async_invoke_config(self, function: str) -> AsyncInvokeConfig:
        config = self.template.resolve(self.template.function_setting(function, "EventInvokeConfig") or {})
        on_failure = ((config.get("DestinationConfig") or {}).get("OnFailure")) or {}
        if on_failure and on_failure.get("Type", "SQS") != "SQS":
            raise ValueError(f"{function}.EventInvokeConfig: only SQS on-failure destinations run locally")
        return AsyncInvokeConfig(
            function=function, function_arn=self.template.get_att(function, "Arn"),
            max_attempts=int(config.get("MaximumRetryAttempts", LAMBDA_DEFAULT_ASYNC_RETRIES)) + 1,
            max_age_seconds=float(config.get("MaximumEventAgeInSeconds", LAMBDA_DEFAULT_MAX_EVENT_AGE_SECONDS)),
            on_failure_url=self._queue_url(on_failure["Destination"]) if on_failure.get("Destination") else None,
        )

    def _queue_url(self, arn: str) -> str:
        return str(self.client("sqs").get_queue_url(QueueName=str(arn).rsplit(":", 1)[-1])["QueueUrl"])

    def _queue_arn(self, url: str) -> str:
        attrs = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])


# ---- secret names: storage/secrets.py will expose the one function that names them; swap it in here.
def store_tenants(client: Callable[[str], Any], prefix: str, tenants: dict[str, TenantConfig]) -> None:
    """The connections file's secrets in Secrets Manager and settings in the rules table."""
    secrets = client("secretsmanager")
    for tenant, config in tenants.items():
        for source, secret in config.sources.items():
            secrets.create_secret(Name=secret_name(tenant, "source", source, prefix), SecretString=json.dumps(secret))
        for name, connection in config.connections.items():
            secrets.create_secret(Name=secret_name(tenant, "connection", name, prefix),
                                  SecretString=json.dumps(connection))
        if config.settings is not None:
            get_rule_store().put_tenant_settings(tenant, config.settings)


def paged(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        page = getattr(client, operation)(**kwargs, **({"nextToken": token} if token else {}))
        yield from page.get(key, [])
        token = page.get("nextToken")
        if not token:
            return


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
