"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against
the real server. Screenshots go to tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from helpers import LineClient, free_port
from jobmon.clock import FakeClock
from jobmon.server import Server

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
# As the machine's notes advise: no background traffic to hosts this network cannot reach.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's waits fail after this long; the page normally takes well under a second.
WAIT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def web_server(start_server: Any, clock: FakeClock) -> AsyncIterator[Server]:
    clock.current = time.time()  # the page shows times in the browser's clock
    async with start_server(http_port=free_port()) as server:
        yield server


@pytest.fixture
async def page(browser: Browser, web_server: Server) -> AsyncIterator[Page]:
    assert web_server.http is not None
    # The page's Content-Security-Policy forbids eval, which Playwright's
    # wait_for_function uses; bypassing it also means the escaping test below
    # shows the page's own escaping at work, not the policy behind it.
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.set_default_timeout(WAIT_MS)
    response = await page.goto(f"http://127.0.0.1:{web_server.http.port}/")
    assert response is not None
    assert "script-src 'self'" in (await response.all_headers())["content-security-policy"]
    await page.wait_for_selector("body[data-loaded=true]")
    await page.wait_for_selector("#live.on")  # subscribed to /api/stream
    yield page
    await context.close()
    assert problems == []  # no script error, no failed request, during the whole test


@pytest.fixture
async def tcp(web_server: Server) -> AsyncIterator[LineClient]:
    client = await LineClient.connect(web_server.port)
    try:
        yield client
    finally:
        await client.close()


def row(job_id: str) -> str:
    return f'#jobs tbody tr[data-job-id="{job_id}"]'


async def colour_of(page: Page, job_id: str, colour: str) -> None:
    await page.wait_for_selector(f'{row(job_id)}[data-colour="{colour}"]')


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def test_a_job_reported_over_tcp_appears_and_changes_colour_live(
    page: Page, tcp: LineClient
) -> None:
    assert await page.text_content("#jobs tbody") == "No job has reported yet."
    await tcp.request(
        {"type": "update_status", "job_id": "nightly-backup", "status": "running", "progress": 40}
    )
    await colour_of(page, "nightly-backup", "yellow")
    assert (
        await page.get_attribute(f"{row('nightly-backup')} [role=progressbar]", "aria-valuenow")
        == "40"
    )
    assert await page.text_content("#counts button[data-status=running]") == "running 1"

    await tcp.request(
        {"type": "job_failed", "job_id": "nightly-backup", "error": "disk full", "retries": 0}
    )
    await colour_of(page, "nightly-backup", "orange")  # retrying
    await tcp.request(
        {"type": "job_failed", "job_id": "nightly-backup", "error": "disk full", "retries": 3}
    )
    await colour_of(page, "nightly-backup", "red")
    alert = page.locator('#alerts li[data-job-id="nightly-backup"]')
    await alert.wait_for()
    assert await alert.locator(".kind").text_content() == "failed"
    assert await page.text_content("#alert-count") == "1"
    assert await page.text_content(f"{row('nightly-backup')} td.error") == "disk full"
    await shot(page, "dashboard-failed")

    await tcp.request({"type": "update_status", "job_id": "nightly-backup", "status": "running"})
    await tcp.request({"type": "job_completed", "job_id": "nightly-backup", "duration_ms": 61_500})
    await colour_of(page, "nightly-backup", "green")
    await page.wait_for_selector("#alerts li.empty")
    assert await page.text_content(f"{row('nightly-backup')} td:nth-child(5)") == "61.5 s"
    # The failures chart has one bar per hour, the last hour holding the failure.
    bars = page.locator("#failures-chart rect")
    assert await bars.count() == 24
    assert (await bars.nth(23).text_content() or "").endswith(": 1 failed")


async def test_the_detail_view_shows_recent_runs_and_a_duration_chart(
    page: Page, tcp: LineClient, clock: FakeClock
) -> None:
    durations = [1_200, 3_400, 2_500, 8_000]
    for duration_ms in durations:
        await tcp.request({"type": "update_status", "job_id": "etl", "status": "running"})
        await tcp.request({"type": "job_completed", "job_id": "etl", "duration_ms": duration_ms})
    await tcp.request({"type": "update_status", "job_id": "etl", "status": "running"})
    clock.advance(2)
    await tcp.request({"type": "job_failed", "job_id": "etl", "error": "no input", "retries": 3})
    await colour_of(page, "etl", "red")
    await page.click(row("etl"))
    await page.wait_for_selector("#detail:not([hidden])")
    assert await page.text_content("#detail-title") == "etl"
    runs = page.locator("#runs tbody tr")
    await page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 5")
    assert [await runs.nth(i).locator("td").nth(1).text_content() for i in range(5)] == [
        "failed",
        "completed",
        "completed",
        "completed",
        "completed",
    ]
    assert await runs.nth(0).locator("td.error").text_content() == "no input"
    assert await runs.nth(1).locator("td").nth(2).text_content() == "8.00 s"
    # One bar per run, oldest first; the failed run's duration runs from its start.
    titles = await page.locator("#duration-chart rect title").all_text_contents()
    assert [t.split(": ")[1] for t in titles] == [
        "1.20 s (completed)",
        "3.40 s (completed)",
        "2.50 s (completed)",
        "8.00 s (completed)",
        "2.00 s (failed)",
    ]
    assert "#job=etl" in page.url  # linkable
    await shot(page, "dashboard-detail")
    # The open detail view follows the job live too.
    await tcp.request({"type": "update_status", "job_id": "etl", "status": "running"})
    await tcp.request({"type": "job_completed", "job_id": "etl", "duration_ms": 500})
    await page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 6")
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#detail", state="hidden")


HOSTILE_IDS = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "\"'><svg onload=window.__pwned=3>",
]


async def test_every_job_id_error_and_label_is_shown_as_text_never_run(
    page: Page, tcp: LineClient
) -> None:
    for job_id in HOSTILE_IDS:
        await tcp.request(
            {
                "type": "register_job",
                "job_id": job_id,
                "schedule": {"every_ms": 3_600_000},
                "labels": {"team": "<b onmouseover=window.__pwned=4>ops</b>"},
            }
        )
        await tcp.request(
            {
                "type": "job_failed",
                "job_id": job_id,
                "error": "<img src=y onerror=window.__pwned=5>",
                "retries": 3,
            }
        )
    # Every row with its error: a redraw may land between a job's two events.
    await page.wait_for_function(
        "[...document.querySelectorAll('#jobs td.error')].filter(td => td.textContent)"
        f".length === {len(HOSTILE_IDS)}"
    )
    shown = await page.locator("#jobs td.job").all_text_contents()
    assert shown == HOSTILE_IDS
    errors = await page.locator("#jobs td.error").all_text_contents()
    assert errors == ["<img src=y onerror=window.__pwned=5>"] * 3
    alert_jobs = await page.locator("#alerts .job").all_text_contents()
    assert sorted(alert_jobs) == sorted(HOSTILE_IDS)
    await page.locator("#jobs td.job", has_text="<img").click()
    await page.wait_for_selector("#detail:not([hidden])")
    assert await page.text_content("#detail-title") == HOSTILE_IDS[1]
    assert "<b onmouseover=window.__pwned=4>ops</b>" in (
        await page.text_content("#detail-fields") or ""
    )
    # Nothing ran, and no element came from the data.
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("main img, main svg[onload], aside img, aside b").count() == 0
    # Search with markup in it is a search for that text.
    await page.fill("#search", "<img")
    await page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length === 1")
    assert await page.locator("#jobs td.job").all_text_contents() == [HOSTILE_IDS[1]]
    await shot(page, "dashboard-escaping")


async def test_ten_thousand_jobs_are_paged_not_rendered_at_once(
    page: Page, tcp: LineClient
) -> None:
    total = 10_000
    for start in range(0, total, 1000):
        batch = [
            {
                "type": "update_status",
                "msg_id": n,
                "job_id": f"job-{n:05d}",
                "status": "completed" if n % 10 else "failed",
            }
            for n in range(start, start + 1000)
        ]
        replies = await tcp.pipeline(batch)
        assert all(r["type"] == "status_updated" for r in replies)
    await page.wait_for_selector(f'#counts button[data-status=""]:text("all {total}")')
    assert await page.locator("#jobs tbody tr").count() == 50
    assert await page.text_content("#counts button[data-status=failed]") == "failed 1000"
    await page.click("#next")
    await page.wait_for_selector(f"{row('job-00050')}")
    assert await page.text_content("#page-info") == "page 2"
    assert await page.locator("#jobs tbody tr").count() == 50
    # The status filter asks the server; every row shown is failed.
    await page.select_option("#status-filter", "failed")
    await page.wait_for_selector(f"{row('job-00000')}[data-colour=red]")
    colours = await page.locator("#jobs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.colour)"
    )
    assert colours == ["red"] * 50
    await shot(page, "dashboard-10k")


PHONE = {"width": 375, "height": 812}  # an iPhone's CSS pixels, the narrowest in common use
LONG_JOB = "a-rather-long-job-name-for-a-phone-that-goes-on-and-on"
PAGE_OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
# Each table's box: where its right edge is, how wide the table inside is, and
# whether scrolling the box moves it (the page itself staying put).
TABLE_BOXES = """() => [...document.querySelectorAll('.table-wrap')]
  .filter((box) => box.offsetParent !== null)
  .map((box) => {
    box.scrollLeft = 10000;
    const moved = box.scrollLeft;
    box.scrollLeft = 0;
    return {table: box.querySelector('table').id, right: box.getBoundingClientRect().right,
            inner: box.scrollWidth, outer: box.clientWidth, moved, pageX: window.scrollX};
  })"""


async def test_at_phone_width_the_page_never_scrolls_sideways_its_tables_do(
    page: Page, tcp: LineClient
) -> None:
    usage = {"cpu_percent": 95, "memory_mb": 4000}
    for _ in range(2):
        await tcp.request(
            {"type": "job_completed", "job_id": LONG_JOB, "duration_ms": 123456,
             "resource_usage": usage}
        )  # fmt: skip
    error = "Connection timeout while talking to db-primary.example.com:5432 after 30 s"
    output = 'File "/usr/lib/python3/dist-packages/a/rather/long/path/module.py", line 1\nError'
    await tcp.request(
        {"type": "job_failed", "job_id": LONG_JOB, "error": error, "retries": 3, "output": output}
    )
    await page.set_viewport_size(PHONE)
    await page.reload()  # analytics (the cost table) are read at load
    await page.wait_for_selector(f'#costs tbody tr[data-job-id="{LONG_JOB}"]')
    await colour_of(page, LONG_JOB, "red")
    assert await page.evaluate(PAGE_OVERFLOW) == 0  # no sideways scrolling of the page
    boxes = {box["table"]: box for box in await page.evaluate(TABLE_BOXES)}
    assert set(boxes) == {"jobs", "costs"}
    for box in boxes.values():
        assert box["right"] <= PHONE["width"] and box["pageX"] == 0, box
    # Wider than the phone, they scroll inside their box.
    assert boxes["costs"]["inner"] > boxes["costs"]["outer"] and boxes["costs"]["moved"] > 0
    assert await page.locator("#jobs th.wide").first.is_visible() is False
    # A long job id wraps in a readable column, not letter by letter.
    cell_width = await page.eval_on_selector(
        f"{row(LONG_JOB)} td.job", "cell => cell.getBoundingClientRect().width"
    )
    assert cell_width >= 100
    # An alert's text has a line of its own under its kind and job.
    # (Read in one evaluation: the list is redrawn whenever the alerts change.)
    alert = f'#alerts li[data-job-id="{LONG_JOB}"]'
    await page.wait_for_selector(f"{alert} .text")
    kind, text = await page.eval_on_selector(
        alert,
        "item => ['.kind', '.text'].map((part) => {"
        " const r = item.querySelector(part).getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, width: r.width}; })",
    )
    assert text["top"] >= kind["bottom"] and text["width"] > PHONE["width"] / 2
    await shot(page, "dashboard-phone")

    await page.click(row(LONG_JOB))
    await page.wait_for_selector("#runs tbody tr td.output")
    detail = await page.locator("#detail").bounding_box()
    assert detail is not None and detail["x"] >= 0 and detail["width"] <= PHONE["width"]
    assert await page.evaluate(PAGE_OVERFLOW) == 0
    runs = {box["table"]: box for box in await page.evaluate(TABLE_BOXES)}["runs"]
    assert runs["right"] <= PHONE["width"] and runs["pageX"] == 0
    assert runs["inner"] > runs["outer"] and runs["moved"] > 0
    await shot(page, "dashboard-phone-detail")


async def test_the_analytics_panel_shows_costs_hours_and_high_memory_arguments(
    page: Page, tcp: LineClient
) -> None:
    for job_id, cpu in (("render", 90), ("thumbs", 10)):
        for _ in range(2):
            await tcp.request(
                {
                    "type": "job_completed",
                    "job_id": job_id,
                    "duration_ms": 4000,
                    "resource_usage": {"cpu_percent": cpu, "memory_mb": 1500},
                    "arguments": ["--size", "<big>"],
                }
            )
    await tcp.request({"type": "job_failed", "job_id": "render", "error": "oom", "retries": 3})
    await page.reload()  # analytics are read at load and every 30 s, not per event
    await page.wait_for_selector('#costs tbody tr[data-job-id="render"]')
    # It counts attempts (a failed one that reported usage is costed too), not runs.
    headers = await page.locator("#costs th").all_text_contents()
    assert headers == ["Job", "Attempts", "Total", "Avg", "p50", "p99"]
    costs = await page.locator("#costs tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    # render: 2 x (2 blocks $0.20 + 90% $0.90 + 4 s $0.20) = $2.60
    assert costs[0][:4] == ["render", "2", "$2.60", "$1.30"]
    p50_seconds = float(costs[0][4].removesuffix(" s"))
    assert abs(p50_seconds - 4.0) <= 4.0 * 0.02  # the sketch's relative accuracy
    assert costs[1][0:3] == ["thumbs", "2", "$1.00"]
    assert await page.locator("#hour-of-day-chart rect").count() == 24
    assert (
        await page.text_content("#high-memory li") == "--size <big> 4 runs over, in render, thumbs"
    )
    await page.click('#costs tbody tr[data-job-id="render"]')
    await page.wait_for_selector("#detail-fields dt:text('cost')")
    assert "$2.60 over 2 attempts, $1.30 an attempt" in (
        await page.text_content("#detail-fields") or ""
    )
    await shot(page, "dashboard-analytics")


async def test_under_a_token_the_page_asks_for_it_then_shows_the_jobs(
    browser: Browser, start_server: Any, clock: FakeClock
) -> None:
    clock.current = time.time()
    async with start_server(http_port=free_port(), token="let-me-in") as server:
        tcp = await LineClient.connect(server.port)
        await tcp.request({"type": "auth", "token": "let-me-in"})
        await tcp.request({"type": "update_status", "job_id": "guarded", "status": "running"})
        context = await browser.new_context(bypass_csp=True)
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        await page.goto(f"http://127.0.0.1:{server.http.port}/")  # type: ignore[union-attr]
        await page.wait_for_selector("#signin:not([hidden])")
        await page.fill("#token", "wrong")
        await page.click("#signin button")
        await page.wait_for_selector("#signin-error:text('the token is wrong')")
        await page.fill("#token", "let-me-in")
        await page.click("#signin button")
        await colour_of(page, "guarded", "yellow")
        await page.wait_for_selector("#live.on")
        await tcp.request({"type": "job_completed", "job_id": "guarded", "duration_ms": 5})
        await colour_of(page, "guarded", "green")  # the stream works with the cookie
        await context.close()
        await tcp.close()


async def test_a_ping_body_shows_as_its_runs_output(
    page: Page, tcp: LineClient, web_server: Server
) -> None:
    assert web_server.http is not None
    uuid = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
    await tcp.request({"type": "create_check", "uuid": uuid, "name": "Backups", "slug": "backups"})
    body = 'dumped 3 tables\n<img src=x onerror="window.__pwned = 5">\nall done'
    base = f"http://127.0.0.1:{web_server.http.port}/ping/{uuid}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/start") as response:
            assert await response.text() == "OK"
        async with http.post(base, data=body.encode()) as response:
            assert await response.text() == "OK"
    await colour_of(page, "backups", "green")
    await page.click(row("backups"))
    await page.wait_for_selector("#detail:not([hidden])")
    output = page.locator("#runs tbody tr").nth(0).locator("td.output pre")
    await output.wait_for()
    assert await output.text_content() == body
    assert await page.evaluate("window.__pwned") is None
    await shot(page, "dashboard-ping-body")
