"""ModelDeployment controller.

This version validates the resource, publishes its resolved configuration as a ConfigMap the
workload pods will mount, and reports Ready=False/NotImplemented: serving the model comes next.
"""

from strata.api import MODEL_DEPLOYMENT
from strata.controllers.registration import config_only_kind

config_only_kind(MODEL_DEPLOYMENT, what="serving the model")
