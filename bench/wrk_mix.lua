-- wrk script: send exactly BUDGET requests of a named mix, then exit.
--
--   wrk -t1 -c16 -d600s -s bench/wrk_mix.lua http://127.0.0.1:PORT -- MIX BUDGET FIRST
--
-- MIX: "shop" (bench/soak.py: examples/shop) or "attack" (tests/integration/test_cardinality.py:
-- tests/integration/apps/cardinality.py). FIRST offsets the numbers and seeds the randomness, so
-- consecutive runs send new ids and tokens. Once BUDGET requests are sent, the connections send
-- GET /healthz (excluded from the apps' metrics) until the last mix response is in; then wrk
-- exits with status 0 at once (wrk itself only stops at -d: exit status 3 = budget not reached).
-- Use one wrk thread (-t1): each thread has its own budget and its exit ends the process.

local mix, budget, first = nil, 0, 0
local sent, got = 0, 0
local filler
local verified = false

function init(args)
  mix, budget, first = args[1], tonumber(args[2]), tonumber(args[3])
  math.randomseed(first + 1)
end

-- A token no app ever uses as a label: tests search the exposition for "zq".
local function token()
  return string.format("zq%x%08x", first + sent, math.random(0, 0x7fffffff))
end

local function attack(i, slot)
  if slot == 0 then -- distinct random paths: 404, no route
    return wrk.format("GET", "/" .. token() .. "/" .. token())
  elseif slot == 1 then -- random unknown methods on random paths
    return wrk.format(string.upper(token()), "/" .. token())
  elseif slot == 2 then -- random unknown methods on a route: 405
    return wrk.format(string.upper(token()), "/items/" .. token())
  elseif slot == 3 then -- a route with random path values, query strings and headers
    local headers = { ["User-Agent"] = token(), ["X-" .. token()] = token() }
    local query = token() .. "=" .. token() .. "&q=" .. token()
    return wrk.format("GET", "/items/" .. token() .. "?" .. query, headers)
  end
  -- the app's own metric labelled by this value: a new tenant per request
  return wrk.format("GET", "/tenants/t" .. i)
end

local payment_methods = { "card", "paypal", "invoice" }
local json = { ["Content-Type"] = "application/json" }

local function shop(i, slot)
  if i % 200 == 0 then -- an unhandled exception: 500, and uvicorn closes the connection, so
    -- ask for that: wrk then reconnects at once instead of losing its next request on it
    return wrk.format("GET", "/error", { Connection = "close" })
  elseif slot < 10 then -- 100 users: cache hits once each was read
    return wrk.format("GET", "/users/" .. math.random(1, 100))
  elseif slot < 13 then -- unknown users: cache miss, SELECT, 404
    return wrk.format("GET", "/users/" .. math.random(101, 1000000000))
  elseif slot < 15 then -- SELECT user, outbound POST /payments/authorize, INSERT
    local body = string.format(
      '{"user_id": %d, "total": %.2f, "payment_method": "%s"}',
      math.random(1, 100), math.random(1, 200000) / 100, payment_methods[math.random(1, 3)]
    )
    return wrk.format("POST", "/orders", json, body)
  elseif slot == 15 then
    return wrk.format("GET", "/orders/" .. math.random(1, i))
  elseif slot < 18 then -- unmatched paths
    return wrk.format("GET", "/" .. token())
  elseif slot == 18 then
    return wrk.format("POST", "/sessions/" .. math.random(1, 100))
  end
  return wrk.format("DELETE", "/sessions/" .. math.random(1, 100))
end

local mixes = { attack = { attack, 5 }, shop = { shop, 20 } }

function request()
  filler = filler or wrk.format("GET", "/healthz")
  -- wrk calls request() once before the run to check the request's syntax (its parser
  -- rejects unknown methods) and never sends that one: it must not use up the budget.
  if not verified then
    verified = true
    return filler
  end
  if sent >= budget then
    return filler
  end
  sent = sent + 1
  local make, slots = unpack(mixes[mix])
  return make(first + sent, sent % slots)
end

function response(status, headers, body)
  if body == '{"status":"ok"}' then
    return -- the filler's response
  end
  got = got + 1
  if got == budget then
    os.exit(0)
  end
end

function done(summary, latency, requests)
  io.stderr:write("wrk_mix.lua: the budget was not reached before -d ran out\n")
  os.exit(3)
end
