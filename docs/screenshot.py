"""Makes docs/dashboard.png and dashboard-detail.png, the README's screenshots:
a jobmon with a day of made-up history (a fake clock walks through 24 hours),
shown in Debian's Chromium.

    .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from playwright.async_api import async_playwright

from jobmon.clock import FakeClock
from jobmon.config import Config
from jobmon.server import running

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import LineClient, free_port  # noqa: E402
from test_dashboard import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402

JOBS = [
    "nightly-backup", "billing-invoices", "search-reindex", "thumbnail-worker",
    "etl-orders", "etl-customers", "cache-warmup", "report-weekly", "sitemap",
    "cert-renewal", "db-vacuum", "email-digest", "logs-rotate", "ml-train-ranker",
]  # fmt: skip


async def main() -> None:
    rng = random.Random(7)
    clock = FakeClock(time.time() - 24 * 3600)
    config = Config(port=0, in_memory=True, http_port=free_port())
    async with running(config, clock) as server:
        tcp = await LineClient.connect(server.port)
        await tcp.request({"type": "heartbeat", "job_id": "queue-consumer", "ttl_ms": 60_000})
        for _hour in range(24):
            for job_id in JOBS:
                if rng.random() < 0.5:
                    continue
                await tcp.request({"type": "update_status", "job_id": job_id, "status": "running"})
                seconds = rng.uniform(5, 240) * (3 if job_id.startswith("ml") else 1)
                clock.advance(seconds / 20)
                if rng.random() < 0.12:
                    await tcp.request(
                        {"type": "job_failed", "job_id": job_id, "retries": 3,
                         "error": rng.choice(["disk full", "connection refused", "exit status 2"])}
                    )  # fmt: skip
                else:
                    await tcp.request(
                        {"type": "job_completed", "job_id": job_id,
                         "duration_ms": round(seconds * 1000),
                         "resource_usage": {"cpu_percent": rng.randint(20, 190),
                                            "memory_mb": rng.randint(60, 2000)}}
                    )  # fmt: skip
            clock.advance(3600 - 60)
        clock.current = time.time()
        await tcp.request({"type": "heartbeat", "job_id": "queue-consumer"})
        await tcp.request(
            {
                "type": "update_status",
                "job_id": "search-reindex",
                "status": "running",
                "progress": 64,
            }
        )
        await tcp.request(
            {
                "type": "update_status",
                "job_id": "ml-train-ranker",
                "status": "running",
                "progress": 23,
            }
        )
        await tcp.request(
            {"type": "job_failed", "job_id": "etl-orders", "error": "timeout", "retries": 1}
        )
        await tcp.request(
            {"type": "job_failed", "job_id": "billing-invoices", "retries": 3,
             "error": "stripe: 503 Service Unavailable"}
        )  # fmt: skip
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_FLAGS
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(f"http://127.0.0.1:{config.http_port}/")
            await page.wait_for_selector("#live.on")
            await page.wait_for_selector("body[data-loaded=true]")
            out = Path(__file__).resolve().parent / "dashboard.png"
            await page.screenshot(path=str(out))
            await page.click('tr[data-job-id="billing-invoices"]')
            await page.wait_for_selector("#detail:not([hidden])")
            await page.screenshot(path=str(out.with_name("dashboard-detail.png")))
            await browser.close()
        await tcp.close()
    print(f"wrote {out} and {out.with_name('dashboard-detail.png')}")


if __name__ == "__main__":
    asyncio.run(main())
