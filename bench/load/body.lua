-- wrk: POST the same chat body on every request. The body is the file named by $BENCH_BODY,
-- read once when the script loads; wrk then sends one pre-built request over and over.
local path = os.getenv("BENCH_BODY") or error("BENCH_BODY: path of the request body")
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = os.getenv("BENCH_KEY") or "bench-backend-key"
wrk.body = file:read("*a")
file:close()
