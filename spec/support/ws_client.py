#!/usr/bin/python3
"""A WebSocket client for spec/websocket_spec.lua (Debian's python3-websockets).

    ws_client.py URL ACTION...

Connects to URL (wss:// with the certificate unverified: the dev cert), runs
the actions in order, prints one line per action ("ok ..." or "FAIL ...") and
exits 0 when every action passed, 1 otherwise (2: could not connect; the
handshake's status, when there was one, is printed as "status N").

Actions:
  echo:TEXT        send TEXT, expect TEXT back
  big:N            send one N-byte text message, expect it back whole
  drain:N:SIZE:S   read nothing for S seconds, then N messages of SIZE bytes
                   (ws_origin.py's /push), checked byte for byte and in order
  hold:S           send nothing for S seconds (the connection must stay open)
  expect-close:S   the server must close within S seconds; prints the time
  close            close handshake; prints how long until the TCP close
  abort            drop the TCP connection without a close handshake
"""
import asyncio
import ssl
import sys
import time

import websockets
import websockets.exceptions


def say(line):
    print(line, flush=True)


def payload(n, seed):
    # Printable, no newline: websocketd passes messages to `cat` as lines.
    unit = "abcdefghijklmnopqrstuvwxyz0123456789"
    s = (unit[seed % len(unit):] + unit) * (n // len(unit) + 2)
    return s[:n]


async def recv_within(ws, seconds):
    return await asyncio.wait_for(ws.recv(), seconds)


async def do_echo(ws, arg):
    await ws.send(arg)
    got = await recv_within(ws, 10)
    return got == arg, "echo %r -> %r" % (arg, got[:80])


async def do_big(ws, arg):
    n = int(arg)
    msg = payload(n, 7)
    await ws.send(msg)
    got = await recv_within(ws, 20)
    return got == msg, "big %d -> %d bytes, equal=%s" % (n, len(got), got == msg)


async def do_drain(ws, arg):
    count, size, delay = arg.split(":")
    await asyncio.sleep(float(delay))   # not reading: the proxy must hold back, not drop
    for i in range(int(count)):
        got = await recv_within(ws, 20)
        if got != payload(int(size), i):
            return False, "drain: message %d differs (%d bytes)" % (i, len(got))
    return True, "drain %s x %s bytes in order" % (count, size)


async def do_hold(ws, arg):
    await asyncio.sleep(float(arg))
    return ws.open, "hold %s: open=%s" % (arg, ws.open)


async def do_expect_close(ws, arg):
    t0 = time.monotonic()
    try:
        while True:
            await recv_within(ws, float(arg))
    except asyncio.TimeoutError:
        return False, "expect-close: still open after %s s" % arg
    except websockets.exceptions.ConnectionClosed as e:
        # The TCP connection itself must end too, not only the close frames.
        try:
            await asyncio.wait_for(ws.wait_closed(), float(arg))
        except asyncio.TimeoutError:
            return False, "expect-close: closed (code %s) but TCP still open" % e.code
        return True, "closed after %.2f s code %s" % (time.monotonic() - t0, e.code)


async def do_close(ws, arg):
    t0 = time.monotonic()
    await ws.close()
    return True, "closed after %.2f s" % (time.monotonic() - t0)


async def do_abort(ws, arg):
    ws.transport.abort()
    return True, "aborted"


ACTIONS = {
    "echo": do_echo, "big": do_big, "drain": do_drain, "hold": do_hold,
    "expect-close": do_expect_close, "close": do_close, "abort": do_abort,
}


async def main(url, actions):
    ctx = None
    if url.startswith("wss:"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        ws = await asyncio.wait_for(
            websockets.connect(url, ssl=ctx, max_size=None, close_timeout=5,
                               ping_interval=None, compression=None), 10)
    except websockets.exceptions.InvalidStatusCode as e:
        say("status %d" % e.status_code)
        return 2
    except Exception as e:  # noqa: BLE001 - reported to the spec as is
        say("FAIL connect: %r" % e)
        return 2
    say("connected")
    ok_all = True
    for a in actions:
        name, _, arg = a.partition(":")
        try:
            ok, msg = await ACTIONS[name](ws, arg)
        except Exception as e:  # noqa: BLE001
            ok, msg = False, "%s raised %r" % (name, e)
        say(("ok " if ok else "FAIL ") + msg)
        ok_all = ok_all and ok
        if not ok:
            break
    if ws.open:
        ws.transport.abort()
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2:])))
