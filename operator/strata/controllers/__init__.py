"""kopf handlers, one module per kind. Importing this package registers all of them."""

from strata.controllers import dataset, feedbackpolicy, modeldeployment, operator, trainingjob

__all__ = ["dataset", "feedbackpolicy", "modeldeployment", "operator", "trainingjob"]
