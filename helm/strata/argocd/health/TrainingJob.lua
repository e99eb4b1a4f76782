-- TrainingJob: the step it has reached while training, what it exported once done.
local function stepText(status)
  local progress = status.progress
  if type(progress) ~= "table" or progress.step == nil then
    return nil
  end
  local text = "Step " .. whole(progress.step)
  if progress.totalSteps ~= nil and progress.totalSteps > 0 then
    text = text .. " of " .. whole(progress.totalSteps) .. " (" .. whole(100 * progress.step / progress.totalSteps) .. "%)"
  end
  if type(status.loss) == "table" and status.loss.train ~= nil then
    text = text .. ", training loss " .. tostring(status.loss.train)
  end
  return text
end

local function exportText(status)
  local exported = status.exportedModel
  if type(exported) ~= "table" or exported.modelName == nil then
    return stepText(status)
  end
  return "Exported " .. exported.modelName .. " version " .. whole(exported.version)
end

local function failureText(status)
  local text = stepText(status)
  if text ~= nil and status.attempt ~= nil then
    text = text .. ", attempt " .. whole(status.attempt)
  end
  return text
end

-- Suspended by spec.suspend (the operator stopped the workers after a checkpoint), once the
-- operator has acted on it; until then the shared verdict says it is catching up.
local status = obj.status
if type(status) == "table" and status.phase == "Suspended" and status.observedGeneration ~= nil
    and (obj.metadata.generation == nil or status.observedGeneration >= obj.metadata.generation) then
  local ready = findCondition(status, "Ready")
  return {status = "Suspended", message = join(stepText(status), describe(ready, "Suspended by spec.suspend"))}
end

return strataHealth(obj, {healthy = exportText, progressing = stepText, degraded = failureText})
