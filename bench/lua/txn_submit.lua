-- wrk script: each request is a one-shot two-phase-commit submit with two branches (the
-- coordinator generates the gid). PARTICIPANT_A and PARTICIPANT_B are base URLs.
local a = os.getenv("PARTICIPANT_A")
local b = os.getenv("PARTICIPANT_B")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"commit": true, "branches": ['
  .. '{"branch_id": "debit", "url": "' .. a .. '", "payload": {"account": "a", "amount": 1}},'
  .. '{"branch_id": "credit", "url": "' .. b .. '", "payload": {"account": "b", "amount": 1}}]}'
