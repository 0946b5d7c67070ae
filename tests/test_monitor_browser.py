"""The monitor in a real browser: `streamlit run app.py` on a generated store, Chromium headless.

A job submitted by another process (the CLI) appears on the open page without a reload (the
file watcher updates the index and the live fragment re-reads it); selecting its row in the grid
and pressing Cancel cancels it in the store.
"""
from __future__ import annotations

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

from bench.generate_store import Plan, generate
from jobs_core import FileJobStore, JobStatus

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
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
    generate(store, Plan(jobs=300, projects=10, weeks=4, now=datetime.now(UTC)))
    port = free_port()
    # No embedded workers: the job the test submits must stay pending so it can be seen and canceled.
    env = {**os.environ, "JOBS_DIR": str(store), "JOBS_APP_WORKERS": "0"}
    env.pop("JOBS_STORE_URL", None)
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
