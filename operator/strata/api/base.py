"""Building blocks shared by the four Strata kinds.

Models use snake_case in Python and camelCase on the wire (Kubernetes convention), reject
unknown fields, and carry their cross-field rules as CEL so the API server enforces them
before the operator ever sees an object.
"""

from __future__ import annotations

from datetime import datetime
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, to_jsonable_python
from pydantic.alias_generators import to_camel

from strata.api.cel import failed_rules
from strata.constants import GROUP, PHASE_DESCRIPTIONS, ConditionStatus

# The pydantic error type of a violated CEL rule; its context carries the rule's fieldPath.
CEL_RULE_ERROR = "cel_rule"

# Kubernetes-shaped scalar types, validated the same way client-side and server-side.
DNS1123Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
Duration = Annotated[
    str,
    StringConstraints(max_length=32, pattern=r"^([0-9]+(s|m|h|d))+$"),
    Field(description="A duration such as 30m, 1h or 7d."),
]
CronSchedule = Annotated[
    str,
    StringConstraints(max_length=128, pattern=r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$"),
    Field(description='A cron schedule in the five-field form ("0 3 * * *") or a macro such as @daily.'),
]
# A resource request or limit, checked as the API server checks it: the quantity grammar
# (resource.ParseQuantity, through the CEL quantity library) and never negative.
QUANTITY_RULES = [
    {"rule": "type(self) == int || isQuantity(self)",
     "message": "must be a Kubernetes quantity such as 500m, 8Gi or 2"},
    {"rule": "type(self) == int ? self >= 0 : !isQuantity(self) || !quantity(self).isLessThan(quantity('0'))",
     "message": "must not be negative"},
]


def _check_quantity(value: int | str) -> int | str:
    failures = failed_rules(QUANTITY_RULES, value)
    if failures:
        raise PydanticCustomError(CEL_RULE_ERROR, "{message}", {"message": failures[0]["message"], "field_path": ""})
    return value


# Like resource.Quantity: `cpu: 4` and `cpu: "500m"` are both accepted.
Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": QUANTITY_RULES,
        }
    ),
]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def cel(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """CEL rules (rule, message[, fieldPath]) as x-kubernetes-validations for json_schema_extra."""
    out = []
    for rule in rules:
        entry = {"rule": rule[0], "message": rule[1]}
        if len(rule) == 3:
            entry["fieldPath"] = rule[2]
        out.append(entry)
    return {"x-kubernetes-validations": out}


def exactly_one_of(*fields: str) -> str:
    """A CEL rule that holds when exactly one of the optional fields is set."""
    present = ", ".join(f"has(self.{f})" for f in fields)
    return f"[{present}].filter(x, x).size() == 1"


@dataclass(frozen=True)
class ObjectReference:
    """Another Strata object, in the same namespace, that a spec names."""

    kind: str
    name: str
    field: str  # where the spec names it, as kubectl writes paths ("spec.dataset.name")


class StrataModel(BaseModel):
    """Base for every spec and status model: camelCase on the wire, unknown fields refused,
    and the model's CEL rules checked here exactly as the API server checks them."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def references(self) -> list[ObjectReference]:
        """The objects this spec names, which must exist for it to be acted on."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _satisfy_cel_rules(cls, data: Any, handler: Any) -> StrataModel:
        """The model's CEL rules, each failure its own error, as the API server reports them.

        Like the API server, the rules are also checked when a nested field broke only a
        value constraint (a bound, a pattern, a nested rule), against the object with its
        defaults applied; a wrong type, a missing field or a value outside an enum skips them.
        """
        rules = (cls.model_config.get("json_schema_extra") or {}).get("x-kubernetes-validations")
        if not rules:
            return handler(data)
        try:
            model = handler(data)
        except ValidationError as error:
            problems = error.errors()
            if not isinstance(data, dict) or any(_blocks_rules(problem["type"]) for problem in problems):
                raise
            failures = failed_rules(rules, _with_defaults(cls, data))
            if not failures:
                raise
            raise ValidationError.from_exception_data(
                cls.__name__, [*map(_error_details, problems), *(_rule_error(rule, data) for rule in failures)]
            ) from None
        failures = failed_rules(rules, model.to_wire())
        if failures:
            raise ValidationError.from_exception_data(cls.__name__, [_rule_error(rule, data) for rule in failures])
        return model


# pydantic error types after which the API server does not evaluate CEL rules (its
# hasBlockingErr): a wrong type, a missing field, a value outside an enum, an over-long
# string or list. Unknown fields are refused before validation even starts.
_BLOCKING_ERRORS = {"missing", "literal_error", "enum", "string_too_long", "too_long", "extra_forbidden"}


def _blocks_rules(error_type: str) -> bool:
    return error_type in _BLOCKING_ERRORS or error_type.endswith(("_type", "_parsing"))


def _rule_error(rule: dict[str, str], data: Any) -> InitErrorDetails:
    context = {"message": rule["message"], "field_path": rule.get("fieldPath", "")}
    return InitErrorDetails(type=PydanticCustomError(CEL_RULE_ERROR, "{message}", context), loc=(), input=data)


def _error_details(problem: Any) -> InitErrorDetails:
    """An error from errors(), fit to be raised again."""
    context = problem.get("ctx") or {}
    if problem["type"] == CEL_RULE_ERROR:
        error_type: Any = PydanticCustomError(CEL_RULE_ERROR, "{message}", context)
    else:
        error_type = problem["type"]
    return InitErrorDetails(type=error_type, loc=problem["loc"], input=problem["input"], ctx=context)


def _model_in(annotation: Any) -> type[StrataModel] | None:
    """The StrataModel in X, X | None or list[X], if any."""
    if isinstance(annotation, type) and issubclass(annotation, StrataModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _with_defaults(model: type[StrataModel], data: dict[str, Any]) -> dict[str, Any]:
    """Wire-form `data` with every unset field defaulted, recursively, as the API server
    defaults an object (from the CRD's schema) before it evaluates the rules."""
    defaulted = dict(data)
    for name, field in model.model_fields.items():
        key = field.alias or name
        nested = _model_in(field.annotation)
        if key in defaulted:
            value = defaulted[key]
            if nested is not None and isinstance(value, dict):
                defaulted[key] = _with_defaults(nested, value)
            elif nested is not None and isinstance(value, list):
                defaulted[key] = [_with_defaults(nested, v) if isinstance(v, dict) else v for v in value]
        elif not field.is_required():
            default = field.get_default(call_default_factory=True)
            if default is not None:
                defaulted[key] = to_jsonable_python(default, by_alias=True, exclude_none=True)
    return defaulted


# ---------------------------------------------------------------------------------------
# References and storage
# ---------------------------------------------------------------------------------------


class SecretRef(StrataModel):
    name: DNS1123Name = Field(description="Name of a Secret in the resource's namespace.")


class LocalObjectRef(StrataModel):
    name: DNS1123Name = Field(description="Name of an object in the same namespace.")


class PVCLocation(StrataModel):
    claim_name: DNS1123Name = Field(description="PersistentVolumeClaim to read from or write to.")
    path: str = Field(default="", max_length=512, description="Sub-path inside the volume.")


class S3Location(StrataModel):
    uri: str = Field(max_length=1024, pattern=r"^s3://[^/]+(/.*)?$", description="s3://bucket/prefix")
    endpoint: str | None = Field(
        default=None, max_length=512, pattern=r"^https?://[^/?#]+/?$",
        description="S3-compatible endpoint URL with its scheme, such as http://seaweedfs.storage:8333 (SeaweedFS, MinIO, Ceph); AWS when unset.",
    )
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    )


class StorageLocation(StrataModel):
    """Where artifacts live: exactly one of a PVC path or an S3 prefix."""

    model_config = ConfigDict(json_schema_extra=cel((exactly_one_of("pvc", "s3"), "set exactly one of pvc or s3")))

    pvc: PVCLocation | None = Field(default=None, description="A directory on a PersistentVolumeClaim in the same namespace.")
    s3: S3Location | None = Field(default=None, description="An S3 (or S3-compatible) prefix.")


class Toleration(StrataModel):
    key: str | None = Field(default=None, max_length=253, description="Taint key the toleration matches; empty with operator Exists matches every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists matches any value of the key; Equal matches only value.")
    value: str | None = Field(default=None, max_length=63, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description="Taint effect to match (NoSchedule, PreferNoSchedule or NoExecute); every effect when unset.")


# ---------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------


class Condition(StrataModel):
    """A metav1.Condition: what Argo CD, kubectl wait and alert rules read."""

    type: str = Field(max_length=316, description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(
        default=ConditionStatus.UNKNOWN, description="Whether the condition holds: True, False or Unknown."
    )
    reason: str = Field(
        default="", max_length=1024, description="Why, as one CamelCase word (such as DatasetNotFound or RolledBack)."
    )
    message: str = Field(default="", max_length=32768, description="Why, in a sentence for people.")
    last_transition_time: datetime | None = Field(
        default=None, description="When status last changed (RFC 3339, UTC)."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the condition was computed from."
    )


class StatusBase(StrataModel):
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status describes."
    )
    phase: Literal[tuple(PHASE_DESCRIPTIONS)] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="One-word summary: " + "; ".join(f"{phase}: {meaning}" for phase, meaning in PHASE_DESCRIPTIONS.items()) + ".",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Progressing and Degraded, each with a reason and a message.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    config_map: str | None = Field(
        default=None,
        max_length=253,
        description="The ConfigMap holding the configuration in effect. Its name carries a hash of its content, so it changes whenever the configuration does.",
    )


# ---------------------------------------------------------------------------------------
# Kind registration: what the CRD generator and the controllers need to know per kind
# ---------------------------------------------------------------------------------------


class PrinterColumn(BaseModel):
    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0

    def to_wire(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


READY_COLUMN = PrinterColumn(
    name="Ready",
    type="string",
    json_path='.status.conditions[?(@.type=="Ready")].status',
    description="Whether the resource is ready.",
)
PHASE_COLUMN = PrinterColumn(name="Phase", type="string", json_path=".status.phase")
AGE_COLUMN = PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp")
REASON_COLUMN = PrinterColumn(
    name="Reason",
    type="string",
    json_path='.status.conditions[?(@.type=="Ready")].reason',
    priority=1,
)


@dataclass(frozen=True)
class KindInfo:
    """One custom resource kind: its models and how its CRD presents it to kubectl."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec_model: type[StrataModel]
    status_model: type[StatusBase]
    # The kind's own columns; every kind also shows Ready, Phase, Reason (-o wide) and Age.
    columns: tuple[PrinterColumn, ...]
    # CEL rules on the whole object (self.spec, self.status; oldSelf on updates), for rules a
    # spec model cannot hold because they read the status: which spec changes a running
    # object refuses. Enforced by the API server only (see cel.is_transition_rule).
    object_rules: tuple[dict[str, str], ...] = ()

    @property
    def printer_columns(self) -> tuple[PrinterColumn, ...]:
        return (READY_COLUMN, PHASE_COLUMN, *self.columns, REASON_COLUMN, AGE_COLUMN)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"
