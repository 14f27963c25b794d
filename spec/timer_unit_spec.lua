-- Unit specs for edge.timer in plain busted: timers run on the virtual clock
-- (lua/edge/testing/clock.lua), firing in time order as the clock passes
-- them (clock.advance, edge.sleep), each in a coroutine of its own.
local edge = require "edge"
local clock = require "edge.testing.clock"

-- Timers left pending by one spec would fire in the next: specs end with
-- none but the every() timers (which cannot be cancelled: the specs that make
-- one count it here, and make it do nothing once they end).
local every_left = 0
local function settle()
  clock.advance(3600)
  assert.are.equal(every_left, edge.timer.pending_count())
end

describe("edge.timer on the virtual clock", function()
  before_each(function()
    clock.set(math.floor(clock.now()) + 10000)
  end)

  it("at() runs fn(false, ...) when the clock passes its time, not before", function()
    local got
    assert.is_true(edge.timer.at(5, function(...) got = table.pack(...) end, "a", nil, 3))
    clock.advance(4.999)
    assert.is_nil(got)
    clock.advance(0.001)
    assert.are.same({ n = 4, false, "a", nil, 3 }, got)
    assert.are.equal(every_left, edge.timer.pending_count())
  end)

  it("timers fire in time order, then in creation order, each at its own time", function()
    local t0, seen = clock.now(), {}
    local function note(_, name) seen[#seen + 1] = { name, edge.now() - t0 } end
    edge.timer.at(3, note, "c")
    edge.timer.at(1, note, "a")
    edge.timer.at(2, note, "b1")
    edge.timer.at(2, note, "b2")
    edge.timer.at(0, note, "zero")
    assert.are.equal(5, edge.timer.pending_count())
    clock.advance(10)
    assert.are.same({ { "zero", 0 }, { "a", 1 }, { "b1", 2 }, { "b2", 2 }, { "c", 3 } }, seen)
    assert.are.equal(t0 + 10, clock.now())
  end)

  it("edge.sleep outside a timer runs the timers it passes", function()
    local fired_at
    edge.timer.at(0.5, function() fired_at = edge.now() end)
    local t0 = clock.now()
    edge.sleep(1)
    assert.are.equal(t0 + 0.5, fired_at)
    assert.are.equal(t0 + 1, edge.now())
  end)

  it("a timer made by a timer runs when its own time comes", function()
    local t0, seen = clock.now(), {}
    edge.timer.at(1, function()
      seen[#seen + 1] = "outer"
      edge.timer.at(1, function() seen[#seen + 1] = edge.now() - t0 end)
    end)
    clock.advance(1.5)
    assert.are.same({ "outer" }, seen)
    clock.advance(1)
    assert.are.same({ "outer", 2 }, seen)
  end)

  it("every() reschedules itself at a fixed cadence", function()
    local t0, ticks, stop = clock.now(), {}, false
    every_left = every_left + 1
    assert.is_true(edge.timer.every(2, function(premature, tag)
      if stop then return end
      ticks[#ticks + 1] = { edge.now() - t0, premature, tag }
    end, "t"))
    clock.advance(7)
    assert.are.same({ { 2, false, "t" }, { 4, false, "t" }, { 6, false, "t" } }, ticks)
    assert.are.equal(1, edge.timer.pending_count())
    stop = true
  end)

  it("a timer that sleeps is suspended, not the spec: the clock moves on", function()
    local t0, seen = clock.now(), {}
    edge.timer.at(1, function()
      seen[#seen + 1] = { "before", edge.now() - t0 }
      edge.sleep(5)
      seen[#seen + 1] = { "after", edge.now() - t0 }
    end)
    edge.timer.at(2, function() seen[#seen + 1] = { "other", edge.now() - t0 } end)
    clock.advance(3)
    assert.are.same({ { "before", 1 }, { "other", 2 } }, seen)
    assert.are.equal(t0 + 3, clock.now())
    assert.are.equal(1, edge.timer.running_count())
    assert.are.equal(every_left, edge.timer.pending_count())
    clock.advance(3)
    assert.are.same({ { "before", 1 }, { "other", 2 }, { "after", 6 } }, seen)
    assert.are.equal(0, edge.timer.running_count())
  end)

  it("a sleep inside pcall in a timer suspends it too", function()
    local t0, woke = clock.now(), nil
    edge.timer.at(1, function()
      assert(pcall(edge.sleep, 2))
      woke = edge.now() - t0
    end)
    clock.advance(2)
    assert.is_nil(woke)
    clock.advance(1)
    assert.are.equal(3, woke)
  end)

  it("every() never overlaps its runs: a tick while the previous run sleeps is skipped", function()
    local t0, starts, stop = clock.now(), {}, false
    every_left = every_left + 1
    edge.timer.every(1, function()
      if stop then return end
      starts[#starts + 1] = edge.now() - t0
      edge.sleep(2.5)
    end)
    clock.advance(8.5)
    -- runs start at 1 (sleeps to 3.5: ticks 2 and 3 skipped), 4 (to 6.5), 7
    assert.are.same({ 1, 4, 7 }, starts)
    stop = true
    clock.advance(10)
  end)

  it("pending_count and running_count count this process's timers", function()
    local before = edge.timer.pending_count()
    edge.timer.at(1, function() end)
    edge.timer.at(2, function() end)
    assert.are.equal(before + 2, edge.timer.pending_count())
    clock.advance(1)
    assert.are.equal(before + 1, edge.timer.pending_count())
    local running
    edge.timer.at(0, function() running = edge.timer.running_count() end)
    clock.advance(0)
    assert.are.equal(1, running)
    settle()
  end)

  it("bounds the pending timers at 1024: past it, nil and a message", function()
    local before = edge.timer.pending_count()
    for _ = before + 1, 1024 do assert.is_true(edge.timer.at(1, function() end)) end
    local ok, err = edge.timer.at(1, function() end)
    assert.is_nil(ok)
    assert.are.equal("too many pending timers", err)
    ok, err = edge.timer.every(1, function() end)
    assert.is_nil(ok)
    assert.are.equal("too many pending timers", err)
    clock.advance(1)
    assert.is_true(edge.timer.at(1, function() end))
    settle()
  end)

  it("an error in a timer is logged, not raised into the spec; later timers still run", function()
    local after
    edge.timer.at(1, function() error("boom in a timer") end)
    edge.timer.at(2, function() after = true end)
    assert.has_no.errors(function() clock.advance(2) end)
    assert.is_true(after)
  end)

  it("rejects bad arguments", function()
    local fn = function() end
    assert.has_error(function() edge.timer.at(-1, fn) end)
    assert.has_error(function() edge.timer.at(0 / 0, fn) end)
    assert.has_error(function() edge.timer.at(math.huge, fn) end)
    assert.has_error(function() edge.timer.at("soon", fn) end)
    assert.has_error(function() edge.timer.at(1, "not a function") end)
    assert.has_error(function() edge.timer.at(1) end)
    assert.has_error(function() edge.timer.every(0, fn) end, "bad argument #1 to 'every' (interval must be > 0)")
    assert.are.equal(0, edge.timer.pending_count() - every_left)
  end)
end)
