-- wrk script template (bench/compare/urls.py fills in the URL file): no URL is requested twice.
--
--   wrk -t2 -c32 -d10s -s OUT.lua http://127.0.0.1:8000 -- THREADS [FIRST [LAST]]
--
-- THREADS must equal -t: thread k (0-based) takes lines FIRST+k, FIRST+k+THREADS, ... up to LAST
-- (default: the whole file), so threads never share a URL. (wrk calls request() once on its first
-- thread to check the script: that URL is skipped, never sent.) A thread that runs out stops rather
-- than repeat one; done() then says EXHAUSTED (the measured rate is no longer valid). done() also
-- prints the statuses and X-App-Cache values seen, to check that every answer was what the run
-- is meant to measure (e.g. `miss`).

local URLS_FILE = "{{URLS_FILE}}"
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local count = tonumber(args[1]) or error("pass the thread count (= -t) after --")
  local first, last = tonumber(args[2]) or 1, tonumber(args[3]) or math.huge
  local id = wrk.thread:get("id")
  urls, next_url, seen = {}, 1, {}
  local n = 0
  for line in io.lines(URLS_FILE) do
    n = n + 1
    if n >= first and n <= last and (n - first) % count == id then
      urls[#urls + 1] = line
    end
  end
end

function request()
  local url = urls[next_url]
  if url == nil then
    wrk.thread:set("exhausted", 1)
    wrk.thread:stop()
    return wrk.format("GET", "/urls-exhausted")  -- stop() lets this one go out: never a listed URL
  end
  next_url = next_url + 1
  return wrk.format("GET", url)
end

function response(status, headers, body)
  local key = status .. " " .. (headers["X-App-Cache"] or "-")
  seen[key] = (seen[key] or 0) + 1
  wrk.thread:set("seen", seen)
end

function done(summary, latency, requests)
  local totals, exhausted = {}, false
  for _, thread in ipairs(threads) do
    exhausted = exhausted or thread:get("exhausted") == 1
    for key, n in pairs(thread:get("seen") or {}) do
      totals[key] = (totals[key] or 0) + n
    end
  end
  for key, n in pairs(totals) do
    io.write(string.format("answers %s %d\n", key, n))
  end
  if exhausted then
    io.write("EXHAUSTED: a thread ran out of URLs (collect more, or run shorter)\n")
  end
end
