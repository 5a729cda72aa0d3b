-- Argo CD health of a pioneer.dev/DeployedModel: Healthy while it serves a revision; a refused candidate
-- is Healthy too (the gate did its job: nothing worse was deployed) but says so in the message.
local hs = {status = "Progressing", message = "no revision yet"}
if obj.status ~= nil and obj.status.currentRevision ~= nil then
  hs.status = "Healthy"
  hs.message = "serving revision " .. tostring(obj.status.currentRevision)
  if obj.status.lastVerdict ~= nil and obj.status.lastVerdict.passed == false then
    hs.message = hs.message .. "; last candidate refused: " .. (obj.status.lastVerdict.reason or "")
  end
end
return hs
