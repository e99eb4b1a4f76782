-- ModelDeployment: which model version it serves and how many replicas are ready.
local function servingText(status)
  local text = nil
  if type(status.modelVersion) == "table" and status.modelVersion.current ~= nil then
    text = "Model version " .. whole(status.modelVersion.current)
  end
  if type(status.replicas) == "table" and status.replicas.desired ~= nil then
    text = join(text, whole(status.replicas.ready or 0) .. "/" .. whole(status.replicas.desired) .. " replicas ready")
  end
  return text
end

return strataHealth(obj, {healthy = servingText, progressing = servingText, degraded = servingText})
