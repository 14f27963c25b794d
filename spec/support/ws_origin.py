#!/usr/bin/python3
"""A WebSocket origin for spec/websocket_spec.lua, for what websocketd cannot
do (Debian's python3-websockets):

    ws_origin.py PORT

Paths:
  /push?n=N&size=S   sends N text messages of S bytes at once, then echoes
                     until the client closes (a client that does not read
                     makes the proxy between hold back)
  /drop?after=S      after S seconds drops the TCP connection, no close frame
  anything else      echoes every message
"""
import asyncio
import sys
from urllib.parse import parse_qs, urlsplit

import websockets


def payload(n, seed):
    # The same bytes as ws_client.py's payload(): the client checks them.
    unit = "abcdefghijklmnopqrstuvwxyz0123456789"
    s = (unit[seed % len(unit):] + unit) * (n // len(unit) + 2)
    return s[:n]


async def echo(ws):
    async for msg in ws:
        await ws.send(msg)


async def handler(ws, path):
    url = urlsplit(path)
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    if url.path == "/push":
        for i in range(int(q.get("n", "1"))):
            await ws.send(payload(int(q.get("size", "1")), i))
    elif url.path == "/drop":
        await asyncio.sleep(float(q.get("after", "0.5")))
        ws.transport.abort()
        return
    await echo(ws)


async def main(port):
    async with websockets.serve(handler, "127.0.0.1", port, max_size=None, ping_interval=None,
                                compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
