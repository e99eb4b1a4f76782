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

return strataHealth(obj, {healthy = exportText, progressing = stepText, degraded = failureText})
