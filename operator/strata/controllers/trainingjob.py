"""TrainingJob controller.

This version validates the resource, publishes its resolved configuration as a ConfigMap the
workload pods will mount, and reports Ready=False/NotImplemented: running training comes next.
"""

from strata.api import TRAINING_JOB
from strata.controllers.registration import config_only_kind

config_only_kind(TRAINING_JOB, what="running training")
