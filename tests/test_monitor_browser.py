"""The monitor in a real browser: `streamlit run app.py` on a generated store, Chromium headless.

A job submitted by another process (the CLI) appears on the open page without a reload (the
file watcher updates the index and the live fragment re-reads it); selecting its row in the grid
and pressing Cancel cancels it in the store. A job's "open image" link opens its image on the
app's own Render page, with no HTTP API running.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.generate_store import Plan, generate
from jobs_core import FileJobStore, JobStatus

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    store = tmp_path / "store"
    generate(store, Plan(jobs=300, projects=10, weeks=4, now=datetime.now(UTC)), images=True)
    port = free_port()
    # No embedded workers: the job the test submits must stay pending so it can be seen and canceled.
    env = {**os.environ, "JOBS_DIR": str(store), "JOBS_APP_WORKERS": "0"}
    env.pop("JOBS_STORE_URL", None)
    env.pop("JOBS_API_URL", None)  # no HTTP API runs: the app serves everything the page links to
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("streamlit did not become healthy")
            time.sleep(0.2)
        yield url, store
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_job_from_another_process_appears_without_a_reload(server: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, store = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            # The render page drawn means app.py has declared its navigation: on a fresh server the
            # first instants show Streamlit's folder navigation, whose links skip app.py.
            page.get_by_role("heading", name="Render a concept").wait_for(timeout=60_000)
            page.get_by_role("link", name="Monitor").click()
            def metric(label: str):
                return page.locator("[data-testid='stMetric']").filter(
                    has=page.get_by_text(label, exact=True)).locator("[data-testid='stMetricValue']")

            jobs, pending = metric("Jobs"), metric("Pending")
            expect(jobs).to_have_text("300", timeout=90_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "screenshot-monitor-top.png"))
            pending_before = int(pending.inner_text())
            submitted = subprocess.run(
                [sys.executable, "-m", "jobs_core", "submit", "--project-id", "from-the-cli",
                 "--jobs-dir", str(store)], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert submitted.returncode == 0, submitted.stderr
            # No reload, no click: the live fragment (every 3 s) shows the new job.
            expect(jobs).to_have_text("301", timeout=30_000)
            expect(pending).to_have_text(str(pending_before + 1))

            # Select the newest row (the job just submitted) in the grid and cancel it.
            job_id = submitted.stdout.split()[0]
            grid = page.locator("[class*='st-key-monitor_jobs_'] [data-testid='stDataFrame']").first
            grid.scroll_into_view_if_needed()  # the banners above may push it below the fold
            box = grid.bounding_box()
            page.mouse.click(box["x"] + 18, box["y"] + 35 + 20)  # row-marker checkbox of row 1 (rows 40 px)
            cancel = page.get_by_role("button", name="Cancel 1")
            expect(cancel).to_be_visible(timeout=30_000)
            cancel.click()
            expect(page.get_by_text("Canceled 1 job.")).to_be_visible(timeout=30_000)
            assert FileJobStore(store).get(job_id, "from-the-cli").status is JobStatus.CANCELED
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "screenshot-monitor.png"), full_page=True)

            # Bulk: every failed job of one project, with the count, a confirmation and a progress bar.
            every_failed = [job for job in FileJobStore(store).iter_jobs() if job.status is JobStatus.FAILED]
            project = Counter(job.project_id for job in every_failed).most_common(1)[0][0]
            failed = [job for job in every_failed if job.project_id == project]
            project_filter = page.locator("[data-testid='stMultiSelect']").first
            project_filter.click()
            page.keyboard.type(project)
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            in_project = sum(job.project_id == project for job in FileJobStore(store).iter_jobs())
            expect(jobs).to_have_text(str(in_project), timeout=30_000)  # the filter took effect
            page.screenshot(path=str(ARTIFACTS / "screenshot-monitor-filtered.png"))
            label = f"Retry all {len(failed)} failed job{'s' if len(failed) != 1 else ''} shown"
            page.get_by_role("button", name=label).click(timeout=30_000)
            confirm = page.get_by_role("button", name=f"Yes, retry {len(failed)}")
            expect(confirm).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "screenshot-monitor-bulk-confirm.png"), full_page=True)
            confirm.click()
            expect(page.get_by_text(f"Retried {len(failed)} job")).to_be_visible(timeout=30_000)
            after = FileJobStore(store)
            assert {after.get(job.job_id, job.project_id).status for job in failed} == {JobStatus.PENDING}
            page.screenshot(path=str(ARTIFACTS / "screenshot-monitor-bulk-done.png"), full_page=True)
        finally:
            browser.close()


# Finds the "open image" link in the grid's first row: the grid is drawn on a canvas, and only over
# a link's text does the mouse cursor become a pointer.
POINTER_AT = """([x, y]) => { for (let e = document.elementFromPoint(x, y); e; e = e.parentElement) {
    const cursor = getComputedStyle(e).cursor; if (cursor !== "auto") return cursor === "pointer"; } return false; }"""


def test_open_image_shows_the_job_s_image_from_the_app_itself(server: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, store = server
    newest = max((job for job in FileJobStore(store).iter_jobs() if job.status is JobStatus.COMPLETED),
                 key=lambda job: job.created_at)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(f"{url}/monitor")
            jobs = page.locator("[data-testid='stMetric']").filter(
                has=page.get_by_text("Jobs", exact=True)).locator("[data-testid='stMetricValue']")
            expect(jobs).to_have_text("300", timeout=90_000)
            page.locator("[class*='st-key-monitor_jobs_'] [data-testid='stDataFrame']").first.wait_for()
            page.set_viewport_size({"width": 1400, "height": 1800})  # it scrolls inside: a tall window shows it all
            page.wait_for_timeout(300)  # the grid redraws for the new height (a picture, not a check)
            page.screenshot(path=str(DOCS / "monitor.png"))
            page.set_viewport_size({"width": 1400, "height": 1000})
            status_filter = page.locator("[data-testid='stMultiSelect']").nth(1)
            status_filter.click()
            page.keyboard.type("completed")
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            completed = {job.job_id for job in FileJobStore(store).iter_jobs() if job.status is JobStatus.COMPLETED}
            expect(jobs).to_have_text(str(len(completed)), timeout=30_000)

            # The export holds exactly the jobs the filters show (made when pressed, by the app itself).
            export = page.get_by_role("button", name="Export the filtered jobs (CSV)")
            expect(export).to_have_count(1, timeout=30_000)  # the filter's run is over (no stale copy left)
            with page.expect_download(timeout=60_000) as download:
                export.click()
            lines = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert {line["job"] for line in lines} == completed and len(lines) == len(completed)
            assert {line["status"] for line in lines} == {"completed"}
            grid = page.locator("[class*='st-key-monitor_jobs_'] [data-testid='stDataFrame']").first
            grid.scroll_into_view_if_needed()
            box = grid.bounding_box()
            row = box["y"] + 35 + 20  # the first row (newest first), below the 35 px header
            over_link = next((x for x in range(int(box["x"]) + 40, int(box["x"] + box["width"]), 6)
                              if (page.mouse.move(x, row) or page.evaluate(POINTER_AT, [x, row]))), None)
            assert over_link is not None, "no link in the first row of the jobs table"
            with context.expect_page() as opened:
                page.mouse.click(over_link + 3, row)
            tab = opened.value
            assert tab.url.startswith(f"{url}/render?"), tab.url  # the app's own page, not the API
            assert f"job={newest.job_id}" in tab.url and f"project={newest.project_id}" in tab.url
            image = tab.locator(".st-key-job_result img")
            expect(image).to_be_visible(timeout=60_000)
            tab.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            stored = Image.open(io.BytesIO(FileJobStore(store).load_image(newest.project_id, newest.job_id)))
            assert image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == list(stored.size)
            assert image.bounding_box()["width"] > 400  # shown large, not as the thumbnail
            expect(tab.get_by_role("button", name="Download PNG")).to_be_visible()
            tab.screenshot(path=str(DOCS / "monitor-open-image.png"))
        finally:
            browser.close()
