-- Roll a ModelDeployment back to the model version it served before the current one.
-- Reads status.modelVersion.previous (written by the operator); writes only
-- spec.model.repository.version. Refuses, saying why, when either is missing.
local model = obj.spec.model
if type(model) ~= "table" or type(model.repository) ~= "table" then
  error("rollback needs spec.model.repository: this ModelDeployment serves a TrainingJob's export, "
    .. "which has no version to pin; roll back by serving the model from its Triton repository "
    .. "(spec.model.repository with version)", 0)
end
local versions = nil
if type(obj.status) == "table" then
  versions = obj.status.modelVersion
end
if type(versions) ~= "table" or versions.previous == nil then
  error("status.modelVersion.previous is not set: the operator has not recorded a model version "
    .. "served before the current one, so there is nothing to roll back to", 0)
end
if versions.current ~= nil and versions.previous == versions.current then
  error("status.modelVersion.previous equals the current version " .. tostring(versions.current)
    .. ": already serving it", 0)
end
model.repository.version = versions.previous
return obj
