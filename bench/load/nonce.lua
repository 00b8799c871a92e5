-- wrk: POST the chat body of $BENCH_BODY with a per-request nonce, so no two requests are equal.
-- The nonce ("[n 42] ") is inserted at the start of the LAST message's content: the body is split
-- once, when the script loads, around that point, and each request() joins prefix, nonce, suffix.
-- The JSON stays valid: the nonce has no character that needs escaping.
local path = os.getenv("BENCH_BODY") or error("BENCH_BODY: path of the request body")
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

-- The opening quote of the last `"content": "` (whitespace allowed around the colon). Inside a
-- JSON string every quote is escaped, so this pattern only matches a real key.
local function last_content_start(text)
  local found, from = nil, 1
  while true do
    local _, stop = text:find('"content"%s*:%s*"', from)
    if not stop then return found end
    found, from = stop, stop + 1
  end
end

local split = last_content_start(body) or error(path .. ": no string \"content\" to put a nonce in")
local prefix, suffix = body:sub(1, split), body:sub(split + 1)
local headers = {
  ["Content-Type"] = "application/json",
  ["api-key"] = os.getenv("BENCH_KEY") or "bench-backend-key",
}
local counter = 0
local threads = 0   -- in wrk's setup state: numbers the threads, so nonces differ across them

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function request()
  counter = counter + 1
  local nonce = "[n " .. (thread_id or 0) .. "." .. counter .. "] "
  return wrk.format("POST", nil, headers, prefix .. nonce .. suffix)
end
