"""Names shared by the API models, the renderers and the controllers.

Condition types and reasons live here, beside the API, so that status written by the
operator and status read by users (kubectl, Argo CD, alert rules) agree on one spelling.
"""

GROUP = "strata.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "strata"

# The one field manager for every server-side apply the operator makes.
FIELD_MANAGER = "strata-operator"

# Recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "strata"
MANAGED_BY = "strata-operator"
# Which custom resource a child belongs to, so children can be listed by owner.
LABEL_OWNER_KIND = "strata.dev/owner-kind"
LABEL_OWNER_NAME = "strata.dev/owner-name"


class ConditionType:
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class ConditionStatus:
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason:
    """CamelCase reasons, as Kubernetes conventions require."""

    RECONCILED = "Reconciled"
    INVALID_SPEC = "InvalidSpec"
    NOT_IMPLEMENTED = "NotImplemented"
    APPLY_FAILED = "ApplyFailed"
    AS_EXPECTED = "AsExpected"
    CHILDREN_APPLIED = "ChildrenApplied"


class Phase:
    PENDING = "Pending"
    RUNNING = "Running"
    READY = "Ready"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INVALID = "Invalid"
