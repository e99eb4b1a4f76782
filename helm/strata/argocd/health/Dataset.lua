-- Dataset: its current content-addressed version and how many records it holds.
local function versionText(status)
  if status.version == nil then
    return nil
  end
  local text = "Version " .. status.version
  if type(status.records) == "table" and status.records.out ~= nil then
    text = text .. " with " .. whole(status.records.out) .. " records"
  end
  return text
end

return strataHealth(obj, {healthy = versionText})
