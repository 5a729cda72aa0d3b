-- Argo CD health of a pioneer.dev/TrainingAttempt
local hs = {status = "Progressing", message = "pending"}
if obj.status ~= nil and obj.status.phase ~= nil then
  if obj.status.phase == "Succeeded" then
    hs.status = "Healthy"
    hs.message = "score " .. tostring(obj.status.score)
  elseif obj.status.phase == "Failed" then
    hs.status = "Degraded"
    hs.message = obj.status.message or "failed"
  else
    hs.message = obj.status.phase
  end
end
return hs
