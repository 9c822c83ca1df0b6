-- wrk script: POST one fixed body and print the results as one JSON line at the end.
-- The body is read from the file named by $BENCH_BODY_FILE; its media type is
-- $BENCH_CONTENT_TYPE (default application/json). wrk adds Content-Length itself.

local path = assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE is not set")
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
-- An optional extra header, "Name: value" in $BENCH_HEADER (a sticky policy's unit key).
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
   local name, value = extra:match("^([^:]+):%s*(.*)$")
   wrk.headers[name] = value
end

-- summary.duration and latency are in microseconds; errors.status counts answers >= 400.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
      '"status_errors": %.0f, "connect_errors": %.0f, "read_errors": %.0f, ' ..
      '"write_errors": %.0f, "timeouts": %.0f, "p50_us": %.1f, "p90_us": %.1f, ' ..
      '"p99_us": %.1f, "max_us": %.1f, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes,
      e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
