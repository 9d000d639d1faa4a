-- Argo CD health of kube-mapserver resources (MapDataset, MapService, MapJob), read like kstatus:
-- Stalled=True: Degraded; Reconciling=True or a generation not observed yet: Progressing;
-- Ready=True: Healthy.
local hs = { status = "Progressing", message = "waiting for the operator" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end
local found = {}
for _, c in ipairs(obj.status.conditions or {}) do
  found[c.type] = c
end
local function text(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end
if found.Stalled ~= nil and found.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(found.Stalled)
elseif found.Reconciling ~= nil and found.Reconciling.status == "True" then
  hs.message = text(found.Reconciling)
elseif found.Ready ~= nil and found.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(found.Ready)
elseif found.Ready ~= nil then
  hs.message = text(found.Ready)
end
return hs
