-- wrk script for bench/run.mjs: one fixed POST (body and headers from the environment, so
-- wrk keeps its static-request fast path), and a one-line JSON summary at the end.
--   BENCH_BODY   request body (JSON)
--   BENCH_TOKEN  bearer token, optional
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or ""
wrk.headers["Content-Type"] = "application/json"
local tok = os.getenv("BENCH_TOKEN")
if tok ~= nil and tok ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. tok
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
