"""How soon does the dashboard show an event that arrived over TCP?

Starts `jobmon serve` (in memory), opens the dashboard in Debian's Chromium
(Playwright), then --events times: sends update_status over TCP and measures
the time until the job's row shows the new status colour. Prints the median
and the worst. The page redraws on the stream's coalesced `changed` events
(at most every 250 ms), so the figure is bounded by that plus one fetch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import orjson
from playwright.async_api import async_playwright

import servers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_dashboard import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402  (one set of browser flags)


async def measure(port: int, http_port: int, events: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send(body: dict) -> None:
        writer.write(orjson.dumps(body) + b"\n")
        await writer.drain()
        await reader.readline()

    await send({"type": "update_status", "job_id": "probe", "status": "queued"})
    latencies = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        await page.goto(f"http://127.0.0.1:{http_port}/")
        await page.wait_for_selector("#live.on")
        await page.wait_for_selector('tr[data-job-id="probe"]')
        for n in range(events):
            status, colour = ("running", "yellow") if n % 2 == 0 else ("completed", "green")
            started = time.perf_counter()
            await send({"type": "update_status", "job_id": "probe", "status": status})
            await page.wait_for_selector(f'tr[data-job-id="probe"][data-colour="{colour}"]')
            latencies.append((time.perf_counter() - started) * 1000)
        await browser.close()
    writer.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40)
    args = parser.parse_args()
    scratch = servers.scratch()
    http_port = servers.free_port()
    server = servers.jobmon(None, "--http-port", str(http_port), log_dir=scratch)
    try:
        latencies = asyncio.run(measure(server.port, http_port, args.events))
    finally:
        server.stop()
    print(
        f"TCP event -> dashboard row, {len(latencies)} events: median "
        f"{statistics.median(latencies):.0f} ms, p90 "
        f"{statistics.quantiles(latencies, n=10)[8]:.0f} ms, max {max(latencies):.0f} ms"
    )


if __name__ == "__main__":
    main()
