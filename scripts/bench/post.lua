-- wrk script (LuaJIT / Lua 5.1): every request is a POST with an empty body (Content-Length: 0).
-- The proxy benchmark uses it because no cache keys a POST, neither edge's lua/proxy.lua (cache_key
-- for GET and HEAD only) nor nginx's proxy_cache: both servers pass every request to the origin and
-- do no cache work, as a proxy_pass without proxy_cache does.
--   wrk -t1 -c64 -d10s --latency -s scripts/bench/post.lua https://127.0.0.1:PORT/
wrk.method = "POST"
wrk.body = ""
