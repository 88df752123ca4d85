-- Argo CD health check for veil.dev/v1alpha1 Schedule.
-- Installed as `resource.customizations.health.veil.dev_Schedule` in argocd-cm
-- (../argocd-cm.yaml); the rules are explained in ../../README.md.
-- Written for Lua 5.1 (Argo CD's gopher-lua) and 5.4 alike: numbers may be
-- floats, so no integer-only operators.

-- The condition of type `name`, or nil.
local function condition(status, name)
  for _, c in ipairs(status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

-- "Reason: message", or whichever of the two is set.
local function explain(c)
  if c == nil then
    return ""
  end
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  return reason .. message
end

local function health(obj)
  local status = obj.status
  if status == nil or status.conditions == nil or #status.conditions == 0 then
    return "Progressing", "Waiting for the Veil operator to report a status"
  end
  local generation = obj.metadata.generation
  local observed = status.observedGeneration
  if generation ~= nil and (observed == nil or observed < generation) then
    return "Progressing", string.format("Waiting for the Veil operator to observe generation %d", generation)
  end
  local ready = condition(status, "Ready")
  local reconciling = condition(status, "Reconciling")
  local stalled = condition(status, "Stalled")

  -- `suspend: true` is what the spec asks for, like a suspended CronJob.
  if status.phase == "Suspended" then
    return "Suspended", "Schedule is suspended (spec.suspend: true)"
  end
  if stalled ~= nil and stalled.status == "True" then
    return "Degraded", explain(stalled)
  end
  if ready ~= nil and ready.status == "True" then
    return "Healthy", explain(ready)
  end
  if reconciling ~= nil and reconciling.status == "True" then
    if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
      return "Progressing", explain(ready)
    end
    return "Progressing", explain(reconciling)
  end
  -- Not ready and nobody working on it: it will not get better by itself.
  if ready ~= nil and ready.status == "False" then
    return "Degraded", explain(ready)
  end
  return "Progressing", "Waiting for the Veil operator to set the Ready condition"
end

local hs = {}
hs.status, hs.message = health(obj)
return hs
