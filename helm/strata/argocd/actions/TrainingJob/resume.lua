-- Resume a suspended TrainingJob: clears spec.suspend; the operator starts the next attempt,
-- which resumes from the last checkpoint.
if obj.spec.suspend ~= true then
  error("spec.suspend is not set: the TrainingJob is not suspended", 0)
end
obj.spec.suspend = false
return obj
