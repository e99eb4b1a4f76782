-- Actions on a TrainingJob: "suspend" stops its workers (each checkpoints on the way out),
-- "resume" continues from the last checkpoint. Each is offered when it would change something
-- and the job has not finished.
local actions = {}
local suspended = type(obj.spec) == "table" and obj.spec.suspend == true
local finished = false
if type(obj.status) == "table" then
  finished = obj.status.phase == "Succeeded" or obj.status.phase == "Failed"
end
actions["suspend"] = {
  ["disabled"] = suspended or finished,
  ["iconClass"] = "fa fa-fw fa-pause",
  ["displayName"] = "Suspend training (checkpoint and stop the workers)",
}
actions["resume"] = {
  ["disabled"] = not suspended or finished,
  ["iconClass"] = "fa fa-fw fa-play",
  ["displayName"] = "Resume training from the last checkpoint",
}
return actions
