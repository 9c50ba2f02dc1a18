"""template.yaml as the local runtime reads it: short tags, intrinsic functions, local names.

CloudFormation short tags (!Ref, !Sub, !GetAtt...) are loaded into their long forms ({"Ref": ...},
{"Fn::Sub": ...}) so the same dictionaries a deployed stack would see can be resolved here, against names
the local runtime gives each resource instead of the ones CloudFormation would generate.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account: ARNs built here match the ones moto builds
PARTITION = "aws"
DEFAULT_STACK_NAME = "billflow"

FUNCTION = "AWS::Serverless::Function"
STATE_MACHINE = "AWS::Serverless::StateMachine"
TABLE = "AWS::DynamoDB::Table"
EVENT_BUS = "AWS::Events::EventBus"
TOPIC = "AWS::SNS::Topic"
QUEUE = "AWS::SQS::Queue"
HTTP_API = "AWS::Serverless::HttpApi"


class TemplateError(Exception):
    """The template uses something this resolver cannot resolve locally."""


# --------------------------------------------------------------------------------------------- loading
class CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that turns CloudFormation short tags into their long forms."""


def _long_form(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _long_form)


def load_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        doc = yaml.load(handle, Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return doc


# --------------------------------------------------------------------------------------------- model
@dataclass
class Template:
    """A loaded template and the local names of its resources."""

    path: Path
    doc: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    stack_name: str = DEFAULT_STACK_NAME

    @classmethod
    def load(
        cls, path: Path, parameters: Mapping[str, Any] | None = None, stack_name: str = DEFAULT_STACK_NAME
    ) -> Template:
        doc = load_template(path)
        declared = doc.get("Parameters") or {}
        unknown = sorted(set(parameters or {}) - set(declared))
        if unknown:
            raise TemplateError(f"unknown template parameter(s): {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(declared))}")
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if parameters and name in parameters:
                values[name] = str(parameters[name])
            elif "Default" in spec:
                values[name] = _scalar_text(spec["Default"])
            else:
                raise TemplateError(f"template parameter {name} has no Default; pass a value for it")
            allowed = spec.get("AllowedValues")
            if allowed and values[name] not in [str(a) for a in allowed]:
                raise TemplateError(f"parameter {name}={values[name]!r} is not one of {allowed}")
        return cls(path=path, doc=doc, parameters=values, stack_name=stack_name)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.doc["Resources"]
        return resources

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Resources of one type whose Condition (if any) holds, by logical id, in template order."""
        return {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if resource.get("Type") == resource_type and self.condition_holds(resource.get("Condition"))
        }

    def properties(self, logical_id: str) -> dict[str, Any]:
        props: dict[str, Any] = self.resources[logical_id].get("Properties") or {}
        return props

    def function_globals(self) -> dict[str, Any]:
        found: dict[str, Any] = (self.doc.get("Globals") or {}).get("Function") or {}
        return found

    def function_setting(self, logical_id: str, key: str, default: Any = None) -> Any:
        """A function property, falling back to Globals.Function as SAM does."""
        props = self.properties(logical_id)
        if key in props:
            return props[key]
        return self.function_globals().get(key, default)

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals variables overlaid with the function's own, resolved to local names."""
        merged: dict[str, Any] = {}
        for source in (self.function_globals(), self.properties(logical_id)):
            merged.update(((source.get("Environment") or {}).get("Variables")) or {})
        return {name: _scalar_text(self.resolve(value)) for name, value in merged.items()}

    def function_events(self, logical_id: str, event_type: str) -> dict[str, dict[str, Any]]:
        events = self.properties(logical_id).get("Events") or {}
        return {name: ev.get("Properties") or {} for name, ev in events.items() if ev.get("Type") == event_type}

    # ----------------------------------------------------------------------------------- local names
    def physical_name(self, logical_id: str) -> str:
        """The name a resource gets locally when its template does not name it."""
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"no resource {logical_id} in {self.path.name}")
        props = resource.get("Properties") or {}
        explicit = {
            TABLE: "TableName", EVENT_BUS: "Name", TOPIC: "TopicName", QUEUE: "QueueName",
            STATE_MACHINE: "Name", FUNCTION: "FunctionName",
        }.get(resource.get("Type", ""))
        if explicit and props.get(explicit):
            return _scalar_text(self.resolve(props[explicit]))
        if resource.get("Type") == FUNCTION:
            return logical_id  # short and readable in ARNs, progress lines and errors
        return f"{self.stack_name}-{logical_id}"

    def ref(self, logical_id: str) -> str:
        """What !Ref gives for a parameter, pseudo parameter or resource, locally."""
        if logical_id in self.parameters:
            return self.parameters[logical_id]
        pseudo = self._pseudo(logical_id)
        if pseudo is not None:
            return pseudo
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"!Ref {logical_id}: no such parameter or resource")
        kind = resource.get("Type", "")
        name = self.physical_name(logical_id)
        if kind == TOPIC:
            return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{name}"
        if kind == QUEUE:
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{name}"
        if kind == STATE_MACHINE:
            return self.get_att(logical_id, "Arn")
        if kind == HTTP_API:
            return "local"
        if kind == "AWS::Serverless::LayerVersion":
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:layer:{name}:1"
        return name  # tables, buses, functions, log groups: their name

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"!GetAtt {logical_id}.{attribute}: no such resource")
        kind = resource.get("Type", "")
        name = self.physical_name(logical_id)
        arns = {
            FUNCTION: f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
            STATE_MACHINE: f"arn:{PARTITION}:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}",
            TABLE: f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}",
            EVENT_BUS: f"arn:{PARTITION}:events:{REGION}:{ACCOUNT_ID}:event-bus/{name}",
            TOPIC: f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{name}",
            QUEUE: f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{name}",
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT_ID}:role/{name}",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if attribute in ("Name", "TopicName", "QueueName"):
            return name
        if attribute == "QueueUrl" and kind == QUEUE:
            return self.ref(logical_id)
        raise TemplateError(f"!GetAtt {logical_id}.{attribute} is not supported locally ({kind})")

    def _pseudo(self, name: str) -> str | None:
        return {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": PARTITION,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self.stack_name}/local",
            "AWS::URLSuffix": "amazonaws.com",
        }.get(name)

    # ----------------------------------------------------------------------------------- intrinsics
    def resolve(self, value: Any) -> Any:
        """Resolve intrinsic functions in a value (recursively), as CloudFormation would locally."""
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return _NO_VALUE if arg == "AWS::NoValue" else self.ref(arg)
            if key.startswith("Fn::") or key == "Condition":
                return self._function(key, arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            target = arg.split(".", 1) if isinstance(arg, str) else self.resolve(arg)
            return self.get_att(str(target[0]), str(target[1]))
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::FindInMap":
            name, top, second = (_scalar_text(self.resolve(a)) for a in arg)
            try:
                return self.doc["Mappings"][name][top][second]
            except KeyError:
                raise TemplateError(f"!FindInMap [{name}, {top}, {second}]: no such entry") from None
        if key == "Fn::If":
            condition, when_true, when_false = arg
            return self.resolve(when_true if self.condition_holds(condition) else when_false)
        if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
            return self._condition_value({key: arg})
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if key == "Fn::Join":
            separator, items = arg
            return separator.join(_scalar_text(i) for i in self.resolve(items))
        if key == "Fn::Split":
            separator, text = arg
            return _scalar_text(self.resolve(text)).split(separator)
        if key == "Fn::GetAZs":
            return [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
        raise TemplateError(f"{key} is not supported by the local runtime")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"  # ${!Literal} stays literal
            if inner in variables:
                return _scalar_text(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                resource, _, attribute = inner.partition(".")
                return self.get_att(resource, attribute)
            return self.ref(inner)

        return _SUB_VARIABLE.sub(replace, text)

    # ----------------------------------------------------------------------------------- conditions
    def condition_holds(self, condition: Any) -> bool:
        if condition is None:
            return True
        if isinstance(condition, str):
            return self._condition_value({"Condition": condition})
        return self._condition_value(condition)

    def _condition_value(self, expression: Any) -> bool:
        if not isinstance(expression, dict) or len(expression) != 1:
            raise TemplateError(f"not a condition: {expression!r}")
        (key, arg), = expression.items()
        if key == "Condition":
            conditions = self.doc.get("Conditions") or {}
            if arg not in conditions:
                raise TemplateError(f"no condition named {arg}")
            return self._condition_value(conditions[arg])
        if key == "Fn::Equals":
            left, right = (_scalar_text(self.resolve(a)) for a in arg)
            return left == right
        if key == "Fn::Not":
            return not self._condition_value(arg[0])
        if key == "Fn::And":
            return all(self._condition_value(a) for a in arg)
        if key == "Fn::Or":
            return any(self._condition_value(a) for a in arg)
        raise TemplateError(f"{key} is not a condition function")

    # ----------------------------------------------------------------------------------- helpers
    def iter_functions(self) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from self.resources_of_type(FUNCTION).items()


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE: Any = _NoValue()
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _scalar_text(value: Any) -> str:
    """CloudFormation passes numbers and booleans around as strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
