-- Suspend a TrainingJob: sets spec.suspend, which the operator acts on by stopping the
-- workers after each writes a checkpoint. Resume continues from it.
if type(obj.status) == "table" and (obj.status.phase == "Succeeded" or obj.status.phase == "Failed") then
  error("the TrainingJob is " .. obj.status.phase .. ": there are no workers to suspend", 0)
end
obj.spec.suspend = true
return obj
