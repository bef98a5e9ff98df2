"""Badges as Healthchecks serves them: SVG that parses as XML with the right
words per state, shields.io's endpoint JSON, per tag and for every check."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import aiohttp

from helpers import free_port
from jobmon.clock import FakeClock

TOKEN = "s3cret"
SVG = "{http://www.w3.org/2000/svg}"


def shields(label: str, message: str, color: str) -> dict[str, Any]:
    """shields.io's endpoint format (https://shields.io/badges/endpoint-badge)."""
    return {"schemaVersion": 1, "label": label, "message": message, "color": color}


async def test_badges_by_tag_in_every_format(start_server: Any, clock: FakeClock) -> None:
    async with start_server(http_port=free_port(), token=TOKEN) as server:
        base = f"http://127.0.0.1:{server.http.port}"
        headers = {"X-Api-Key": TOKEN}
        async with aiohttp.ClientSession(headers=headers) as api, aiohttp.ClientSession() as anon:

            async def create(**spec: Any) -> str:
                async with api.post(f"{base}/api/v3/checks/", json=spec) as response:
                    assert response.status == 201
                    return str((await response.json())["uuid"])

            async def badges() -> dict[str, Any]:
                async with api.get(f"{base}/api/v3/badges/") as response:
                    return dict((await response.json())["badges"])

            async def svg(url: str) -> list[str]:
                async with anon.get(url) as response:  # no token: the key is the secret
                    assert response.status == 200
                    assert response.content_type == "image/svg+xml"
                    root = ET.fromstring(await response.text())
                assert root.tag == f"{SVG}svg"
                return [t.text or "" for t in root.iter(f"{SVG}text")]

            async def json(url: str) -> Any:
                async with anon.get(url) as response:
                    assert response.status == 200
                    return await response.json()

            web = await create(name="web", tags="prod web", timeout=60, grace=60)
            db = await create(name="db", tags="prod db", timeout=3600, grace=60)
            await anon.get(f"{base}/ping/{web}")
            await anon.get(f"{base}/ping/{db}")
            urls = await badges()
            assert set(urls) == {"*", "prod", "web", "db"}
            prod = urls["prod"]
            assert await svg(prod["svg3"]) == ["prod", "up"]
            assert await json(prod["shields3"]) == {
                "schemaVersion": 1,
                "label": "prod",
                "message": "up",
                "color": "success",
            }
            assert await json(prod["json3"]) == {
                **shields("prod", "up", "success"),
                **{"status": "up", "total": 2, "grace": 0, "down": 0},
            }

            clock.advance(61)  # web is late
            assert await svg(prod["svg3"]) == ["prod", "late"]
            assert await svg(prod["svg"]) == ["prod", "up"]  # two states: late counts as up
            assert (await json(prod["shields3"]))["color"] == "important"
            assert await json(urls["web"]["json"]) == {
                **shields("web", "up", "success"),
                "status": "up",
                "total": 1,
                "grace": 1,
                "down": 0,
            }
            assert await svg(urls["db"]["svg3"]) == ["db", "up"]

            await anon.post(f"{base}/ping/{db}/fail")
            assert await svg(urls["*"]["svg3"]) == ["jobmon", "down"]
            assert await json(urls["*"]["shields"]) == {
                "schemaVersion": 1,
                "label": "jobmon",
                "message": "down",
                "color": "critical",
            }
            assert await json(urls["*"]["json3"]) == {
                **shields("jobmon", "down", "critical"),
                "status": "down",
                "total": 2,
                "grace": 1,
                "down": 1,
            }

            wrong = prod["svg3"].replace(prod["svg3"].split("/")[-2], "0" * 24)
            async with anon.get(wrong) as response:
                assert response.status == 404
            async with anon.get(f"{base}/api/v3/badges/") as response:
                assert response.status == 401
                assert await response.json() == {"error": "missing api key"}
