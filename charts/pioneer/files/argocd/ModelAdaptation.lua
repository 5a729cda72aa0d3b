-- Argo CD health of a pioneer.dev/ModelAdaptation (resource.customizations.health.pioneer.dev_ModelAdaptation)
local hs = {status = "Progressing", message = "waiting for the operator"}
if obj.status ~= nil and obj.status.phase ~= nil then
  local phase = obj.status.phase
  local message = obj.status.message or phase
  if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
     and obj.status.observedGeneration < obj.metadata.generation then
    return {status = "Progressing", message = "the operator has not seen the latest spec yet"}
  end
  if phase == "Succeeded" then
    hs.status = "Healthy"
  elseif phase == "Failed" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = message
end
return hs
