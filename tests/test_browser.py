"""End to end in a real browser: `streamlit run app.py`, headless Chromium, a person pressing Render.

Playwright's Python package drives Debian's chromium binary. Each test starts its own server on a
free port with a temporary JOBS_DIR, waits for /_stcore/health and for the script to finish, fills
in the form, presses Render and waits for the image. Screenshots go to test-artifacts/ (git-ignored).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium binary at {CHROMIUM}"),
]

# What the page shows, read in one round trip: the job panel's progress bar and the loaded image
# (its src: each image has its own media URL, so a new render is told apart from the previous one).
PAGE_STATE_JS = """(where) => {
  const bar = document.querySelector(".st-key-job_panel [data-testid='stProgress'] [role='progressbar']");
  const label = document.querySelector(".st-key-job_panel [data-testid='stProgress'] p");
  const image = [...document.querySelectorAll(`.st-key-${where} [data-testid='stImage'] img`)]
    .find(img => img.complete && img.naturalWidth > 0);
  return {
    progress: bar ? `${bar.getAttribute('aria-valuenow')}% ${label ? label.innerText : ''}` : null,
    image: image ? image.src : null,
  };
}"""
IMAGE_SHOWN_JS = """() => [...document.querySelectorAll(".st-key-job_result [data-testid='stImage'] img")]
  .some(img => img.complete && img.naturalWidth > 0)"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited with {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url}/_stcore/health did not answer within {seconds} s")


@contextmanager
def streamlit_app(jobs_dir: Path, log: Path, **settings: str) -> Iterator[str]:
    """`streamlit run app.py` on a free port; yields its URL, stops it afterwards."""
    port = free_port()
    env = {**os.environ, "JOBS_DIR": str(jobs_dir), **settings}
    env.pop("JOBS_STORE_URL", None)
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.headless", "true", "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture
def browser_page() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.get_by_label("Title", exact=True).wait_for()


def fill_brief(page, title: str) -> None:
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_label("Floors", exact=True).fill("7")
    page.get_by_label("Floors", exact=True).press("Tab")


def press_render_and_watch(page, where: str = "job_result", seconds: float = 60) -> tuple[float, list[str]]:
    """Press Render; return (seconds until a new image is on screen, progress states seen on the way).

    `where` is the container the image appears in: job_result (job pattern) or direct_result.
    """
    before = page.evaluate(PAGE_STATE_JS, where)["image"]
    seen: list[str] = []
    started = time.perf_counter()
    page.locator("[data-testid='stFormSubmitButton'] button").click()
    while time.perf_counter() < started + seconds:
        state = page.evaluate(PAGE_STATE_JS, where)
        if state["progress"] and (not seen or seen[-1] != state["progress"]):
            seen.append(state["progress"])
        if state["image"] and state["image"] != before:
            return time.perf_counter() - started, seen
        page.wait_for_timeout(15)
    raise AssertionError(f"no new image within {seconds} s; progress seen: {seen}")


def report(name: str, text: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    print(text)
    with (ARTIFACTS / "browser-timings.txt").open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {name}: {text}\n")


def test_render_with_the_embedded_worker_shows_the_image(browser_page, tmp_path):
    page = browser_page
    with streamlit_app(tmp_path / "jobs", tmp_path / "streamlit.log", JOBS_APP_WORKERS="1") as url:
        open_page(page, f"{url}/?project=browser-e2e")
        fill_brief(page, "Browser test tower")
        first, seen = press_render_and_watch(page)
        page.wait_for_selector(IDLE)
        main = page.locator("[data-testid='stMain']")
        main.get_by_role("button", name="Download PNG").wait_for()
        assert main.get_by_text("Browser test tower · axonometric").is_visible()
        assert "project=browser-e2e" in page.url and "job=job_" in page.url
        # the same again, now that the server process has rendered once (imports, fonts)
        page.get_by_label("Floors", exact=True).fill("9")
        again, seen_again = press_render_and_watch(page)
        page.wait_for_selector(IDLE)
        # for comparison, the same brief without the job pattern: the page renders and waits
        page.get_by_text("Use job pattern", exact=True).click()
        direct, _ = press_render_and_watch(page, "direct_result")
        main.get_by_text("no job was stored").wait_for()
        report("embedded", f"Render pressed -> image on screen (embedded worker, 0.5 s poll): first job "
                           f"{first * 1000:.0f} ms, second job {again * 1000:.0f} ms; without the job pattern "
                           f"(direct, in the page's thread) {direct * 1000:.0f} ms. Progress seen: {seen} then "
                           f"{seen_again}")
        # a second tab on the job's URL shows the same job, from the store (tall, for the screenshot)
        assert "job=job_" in page.url
        second = page.context.browser.new_page(viewport={"width": 1440, "height": 1480})
        open_page(second, page.url)
        second.wait_for_function(IMAGE_SHOWN_JS)
        second.wait_for_selector(IDLE)
        assert second.locator("[data-testid='stMain']").get_by_text("Browser test tower · axonometric").is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        second.screenshot(path=str(ARTIFACTS / "screenshot-render.png"))


def test_progress_changes_while_an_external_worker_runs_the_job(browser_page, tmp_path):
    """No embedded pool: the job waits in the queue until a `python -m jobs_core worker` takes it."""
    page = browser_page
    jobs_dir = tmp_path / "jobs"
    with streamlit_app(jobs_dir, tmp_path / "streamlit.log", JOBS_APP_WORKERS="0",
                       JOBS_APP_POLL_SECONDS="0.5") as url:
        open_page(page, f"{url}/?project=browser-ext")
        fill_brief(page, "Queued then drawn")
        page.locator("[data-testid='stFormSubmitButton'] button").click()
        main = page.locator("[data-testid='stMain']")
        main.get_by_text("Queued: position 1 in the queue").wait_for()
        assert main.get_by_text("No worker is running here").is_visible()
        queued = page.evaluate(PAGE_STATE_JS, "job_result")["progress"]
        assert queued.startswith("0%")
        worker = subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--drain"], cwd=ROOT,
                                  env={**os.environ, "JOBS_DIR": str(jobs_dir)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            page.wait_for_function(IMAGE_SHOWN_JS)
            assert worker.wait(30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
        page.wait_for_selector(IDLE)
        main.get_by_role("button", name="Download PNG").wait_for()
        main.get_by_text("Queued: position 1 in the queue").wait_for(state="detached")
        page.screenshot(path=str(ARTIFACTS / "screenshot-render-external-worker.png"), full_page=True)
