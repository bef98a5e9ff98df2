"""The ceiling: a bare uvloop server that parses each line with orjson and writes a reply, no state.

jobmon's figures are reported as ratios to this, measured in the same run. A
Maelstrom envelope is answered with one (what any server of that framing must
at least do), a bare body bare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import orjson
import uvloop

_NL = orjson.OPT_APPEND_NEWLINE


class Bare(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        lines = data.split(b"\n")
        self.buffer = lines.pop()
        out = []
        for line in lines:
            obj = orjson.loads(line)
            body = obj.get("body")
            if body is None:
                reply = {"type": "ok", "in_reply_to": obj.get("msg_id")}
            else:
                ok = {"type": "ok", "in_reply_to": body.get("msg_id")}
                reply = {"src": obj.get("dest"), "dest": obj.get("src"), "body": ok}
            out.append(orjson.dumps(reply, option=_NL))
        self.transport.write(b"".join(out))  # type: ignore[attr-defined]


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Bare, host, port, backlog=1024)
    print(
        f"ceiling listening on {host}:{server.sockets[0].getsockname()[1]}",
        file=sys.stderr,
        flush=True,
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main(args.host, args.port))
