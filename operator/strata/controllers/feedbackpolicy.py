"""FeedbackPolicy controller.

This version validates the resource, publishes its resolved configuration as a ConfigMap the
workload pods will mount, and reports Ready=False/NotImplemented: monitoring and retraining comes next.
"""

from strata.api import FEEDBACK_POLICY
from strata.controllers.registration import config_only_kind

config_only_kind(FEEDBACK_POLICY, what="monitoring and retraining")
