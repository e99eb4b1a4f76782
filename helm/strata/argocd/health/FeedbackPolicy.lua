-- FeedbackPolicy: how many monitors are breached, and the last retraining it started.
local function monitorText(status)
  local text = nil
  if status.breached ~= nil then
    text = whole(status.breached) .. " monitor(s) breached"
  end
  if type(status.lastRetrain) == "table" and status.lastRetrain.trainingJob ~= nil then
    text = join(text, "last retrained by TrainingJob " .. status.lastRetrain.trainingJob)
  end
  return text
end

return strataHealth(obj, {healthy = monitorText, progressing = monitorText, degraded = monitorText})
