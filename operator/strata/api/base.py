"""Building blocks shared by the four Strata kinds.

Models use snake_case in Python and camelCase on the wire (Kubernetes convention), reject
unknown fields, and carry their cross-field rules as CEL so the API server enforces them
before the operator ever sees an object.
"""

from __future__ import annotations

from datetime import datetime
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError
from pydantic.alias_generators import to_camel

from strata.api.cel import failed_rules
from strata.constants import GROUP, ConditionStatus

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
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (such as 500m, 8Gi or 2)")
    return value


# Like resource.Quantity: `cpu: 4` and `cpu: "500m"` are both accepted.
Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
    Field(description="A Kubernetes resource quantity such as 500m, 8Gi or 2."),
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

    @model_validator(mode="after")
    def _satisfy_cel_rules(self) -> StrataModel:
        rules = (type(self).model_config.get("json_schema_extra") or {}).get("x-kubernetes-validations")
        if rules:
            failures = failed_rules(rules, self.to_wire())
            if failures:
                raise PydanticCustomError(
                    CEL_RULE_ERROR,
                    "{message}",
                    {
                        "message": "; ".join(rule["message"] for rule in failures),
                        "field_path": failures[0].get("fieldPath", ""),
                    },
                )
        return self


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
        default=None, max_length=512, description="S3-compatible endpoint URL (MinIO, Ceph); AWS when unset."
    )
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    )


class StorageLocation(StrataModel):
    """Where artifacts live: exactly one of a PVC path or an S3 prefix."""

    model_config = ConfigDict(json_schema_extra=cel((exactly_one_of("pvc", "s3"), "set exactly one of pvc or s3")))

    pvc: PVCLocation | None = None
    s3: S3Location | None = None


class Toleration(StrataModel):
    key: str | None = Field(default=None, max_length=253)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


# ---------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------


class Condition(StrataModel):
    """A metav1.Condition: what Argo CD, kubectl wait and alert rules read."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"] = ConditionStatus.UNKNOWN
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime | None = None
    observed_generation: int | None = Field(default=None, ge=0)


class StatusBase(StrataModel):
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status describes."
    )
    phase: str | None = Field(default=None, max_length=32, description="One-word summary of the lifecycle.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
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

    @property
    def printer_columns(self) -> tuple[PrinterColumn, ...]:
        return (READY_COLUMN, PHASE_COLUMN, *self.columns, REASON_COLUMN, AGE_COLUMN)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"
