-- wrk script: POST one JSON body, each request with its own pre-signed client JWT (a token is
-- good for one call: the service refuses a replayed jti). Threads take disjoint token slices.
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  body = f:read("*a")
  f:close()
  tokens = {}
  if args[2] ~= nil and args[2] ~= "" then
    for line in io.lines(args[2]) do
      table.insert(tokens, line)
    end
  end
  nthreads = tonumber(args[3]) or 1
  index = id
  headers = {["Content-Type"] = "application/json"}
end

function request()
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[((index - 1) % #tokens) + 1]
    index = index + nthreads
  end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "errors": %d, "non2xx": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, errors, summary.errors.status))
end
