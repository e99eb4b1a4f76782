"""The Strata API: pydantic models for the spec and status of each kind, the single source of truth.

The CRDs in crds/ are generated from these models (`strata crds`), and the controllers parse
every object through them.
"""

from strata.api.base import KindInfo
from strata.api.dataset import DATASET
from strata.api.deployment import MODEL_DEPLOYMENT
from strata.api.feedback import FEEDBACK_POLICY
from strata.api.training import TRAINING_JOB

KINDS: tuple[KindInfo, ...] = (DATASET, TRAINING_JOB, MODEL_DEPLOYMENT, FEEDBACK_POLICY)
KINDS_BY_NAME: dict[str, KindInfo] = {k.kind: k for k in KINDS}

__all__ = ["KINDS", "KINDS_BY_NAME", "KindInfo", "DATASET", "TRAINING_JOB", "MODEL_DEPLOYMENT", "FEEDBACK_POLICY"]
