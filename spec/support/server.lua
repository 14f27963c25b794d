-- Our specs start edge with the same helper users get: lua/edge/testing/server.lua
-- (require "edge.testing.server"). This name stays for the specs that use it.
return require "edge.testing.server"
