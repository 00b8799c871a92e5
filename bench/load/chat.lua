-- wrk: a small non-streamed chat completion, as an SDK sends it.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = "bench-backend-key"
wrk.body = '{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'
