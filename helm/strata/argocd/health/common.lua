-- Strata health check, shared part: every kind's script starts with this.
-- Argo CD runs health scripts with only Lua's base, table and (safe) os libraries:
-- no string or math library, so text is built with `..` and numbers floored by hand.

local function findCondition(status, conditionType)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

-- "Reason: message" of a condition, or `fallback` when it says nothing.
local function describe(condition, fallback)
  if condition == nil then
    return fallback
  end
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. condition.message
  end
  if text == "" then
    return fallback
  end
  return text
end

local function whole(number)
  return tostring(number - number % 1)
end

local function join(first, second)
  if first == nil or first == "" then
    return second
  end
  if second == nil or second == "" then
    return first
  end
  return first .. "; " .. second
end

-- The verdict every kind shares. `details` holds optional functions of the status that add
-- what a kind's status says beyond its conditions, per verdict (healthy, progressing, degraded).
local function strataHealth(obj, details)
  local status = obj.status
  local generation = obj.metadata.generation
  if status == nil then
    return {status = "Progressing", message = "Waiting for the Strata operator to report status (is it running?)"}
  end
  local observed = status.observedGeneration
  if generation ~= nil and (observed == nil or observed < generation) then
    return {
      status = "Progressing",
      message = "Waiting for the Strata operator to observe generation " .. whole(generation)
        .. " (status describes " .. (observed ~= nil and whole(observed) or "none") .. ")",
    }
  end
  local ready = findCondition(status, "Ready")
  local progressing = findCondition(status, "Progressing")
  local degraded = findCondition(status, "Degraded")
  if ready ~= nil and ready.observedGeneration ~= nil and generation ~= nil and ready.observedGeneration < generation then
    return {
      status = "Progressing",
      message = "Waiting for the Strata operator to report Ready for generation " .. whole(generation),
    }
  end

  local function verdict(healthStatus, conditionText, detail)
    local extra = nil
    if detail ~= nil then
      extra = detail(status)
    end
    return {status = healthStatus, message = join(extra, conditionText)}
  end

  -- Degraded=True is the operator's own verdict: an invalid spec (phase Invalid), children it
  -- cannot apply (Retrying), or an object the spec names that does not exist (Waiting, reason
  -- DatasetNotFound, TrainingJobNotFound or ModelDeploymentNotFound). Waiting reads Degraded,
  -- not Progressing: synced in waves, a referenced object exists before its dependent is
  -- applied, so a dependent still waiting names something missing from Git or misspelt, which
  -- only a commit fixes. Degraded stops the sync at that wave, naming the missing object (and
  -- fires on-health-degraded notifications); Progressing would hold the sync open with nothing
  -- to end it. It clears by itself: the operator re-checks when the object appears.
  if degraded ~= nil and degraded.status == "True" then
    return verdict("Degraded", describe(degraded, "Degraded"), details.degraded)
  end
  -- The same phases without the Degraded condition (a status not written by the operator).
  if status.phase == "Invalid" or status.phase == "Retrying" or status.phase == "Waiting"
    or status.phase == "RolledBack" or status.phase == "Failed" then
    return verdict("Degraded", describe(ready, "Phase " .. status.phase), details.degraded)
  end
  if ready ~= nil and ready.status == "True" then
    return verdict("Healthy", describe(ready, "Ready"), details.healthy)
  end
  if progressing ~= nil and progressing.status == "True" then
    return verdict("Progressing", describe(progressing, "Progressing"), details.progressing)
  end
  if ready == nil then
    return {status = "Progressing", message = "Waiting for the Strata operator to report the Ready condition"}
  end
  if ready.status ~= "False" then
    return {status = "Progressing", message = "Ready is " .. tostring(ready.status) .. ": " .. describe(ready, "no reason given")}
  end
  -- Not ready, not progressing, not degraded: nothing will change without someone acting.
  return verdict("Degraded", "Not ready and not progressing: " .. describe(ready, "no reason given"), details.degraded)
end
