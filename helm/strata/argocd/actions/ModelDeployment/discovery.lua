-- Actions on a ModelDeployment. "rollback" pins spec.model.repository.version to the version
-- the operator recorded in status.modelVersion.previous; it is offered only when both exist.
local actions = {}
local previous = nil
if type(obj.status) == "table" and type(obj.status.modelVersion) == "table" then
  previous = obj.status.modelVersion.previous
end
local fromRepository = type(obj.spec) == "table" and type(obj.spec.model) == "table"
  and type(obj.spec.model.repository) == "table"
actions["rollback"] = {
  ["disabled"] = previous == nil or not fromRepository,
  ["iconClass"] = "fa fa-fw fa-undo",
  ["displayName"] = "Roll back to the previous model version",
}
return actions
