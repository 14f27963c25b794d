-- LuaRocks build of edge's Lua side: the `edge` C module (the server's own C,
-- as `make lua-module` builds it) and the Lua libraries edge.router,
-- edge.request, edge.response and edge.testing.*, so that plain `busted`
-- finds require "edge" in any directory. From the repository's root:
--
--   luarocks --lua-version=5.4 make scripts/edge-dev-1.rockspec            # system tree
--   luarocks --lua-version=5.4 make --local scripts/edge-dev-1.rockspec    # ~/.luarocks
--
-- The build is the Makefile's (make lua-module, then make install-lua into
-- the rock's directories), so the C sources are listed once. It needs the
-- Debian packages scripts/install-deps.sh installs (liblua5.4-dev, libev-dev,
-- ...); edge.response needs lua-cjson (Debian: lua-cjson), not listed as a
-- rock dependency because Debian's copy is not a rock. The server binary
-- itself is installed by `make install`, not by this rock.
rockspec_format = "3.0"
package = "edge"
version = "dev-1"
source = {
  url = "git+file:///dev/null",   -- unused: `luarocks make` builds the working tree
}
description = {
  summary = "The Lua side of edge, a Lua-scriptable HTTPS edge server: the edge module and its libraries",
  detailed = [[
    require "edge" outside the server (a virtual clock, the real C cache),
    edge.router, edge.request, edge.response and edge.testing.{clock,request,server,upstream}
    for unit and end-to-end specs of edge scripts.
  ]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "make",
  build_target = "lua-module",
  build_variables = {
    CFLAGS = "$(CFLAGS)",        -- added to the module's own flags (-std=c11 -Wall ... -fPIC)
  },
  install_target = "install-lua",
  install_variables = {
    LUADIR = "$(LUADIR)",
    CMODDIR = "$(LIBDIR)",
  },
}
