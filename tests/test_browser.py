"""End to end in a real browser: `streamlit run app.py`, headless Chromium, a person pressing Render.

Playwright's Python package drives Debian's chromium binary. Each test starts its own server on a
free port with a temporary JOBS_DIR, waits for /_stcore/health and for the script to finish, fills
in the form, presses Render and waits for the image. Screenshots of every state go to docs/render-*.png (the
project's pictures of its page), timings to test-artifacts/ (git-ignored).
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
DOCS = ROOT / "docs"
RENDER = ".st-key-render button"
SIDEBAR_STATUS = "This server renders in the background"


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
def streamlit_app(jobs_dir: Path, log: Path, root: Path = ROOT, **settings: str) -> Iterator[str]:
    """`streamlit run app.py` in `root` (the repository) on a free port; yields its URL, stops it afterwards."""
    port = free_port()
    env = {**os.environ, "JOBS_DIR": str(jobs_dir), **settings}
    env.pop("JOBS_STORE_URL", None)
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.headless", "true", "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT)
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


def settle(page) -> None:
    """Wait until the script run started by the last action is over."""
    page.wait_for_timeout(150)
    page.wait_for_selector(IDLE)


def set_field(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Tab")
    settle(page)


def choose(page, label: str, option: str) -> None:
    box = page.get_by_role("combobox", name=label)
    box.click()
    if not page.get_by_role("option").count():  # a rerun still drawing closed the list: open it again
        settle(page)
        box.click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def fill_brief(page, title: str) -> None:
    set_field(page, "Title", title)
    set_field(page, "Floors", "7")


def shoot(page, name: str, full_page: bool = True) -> None:
    """A picture of the page for docs/: the whole page from the top (Streamlit scrolls inside
    stMain, so the window is made as tall as the content for the shot), or only what is in view."""
    if not full_page:
        page.screenshot(path=str(DOCS / name))
        return
    viewport = page.viewport_size
    height = page.evaluate("""() => Math.max(...[...document.querySelectorAll(
        "[data-testid='stMain'], [data-testid='stAppViewContainer']")].map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": viewport["width"], "height": min(max(height, viewport["height"]), 4000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(DOCS / name))
    page.set_viewport_size(viewport)


def press_render_and_watch(page, where: str = "job_result", seconds: float = 60) -> tuple[float, list[str]]:
    """Press Render; return (seconds until a new image is on screen, progress states seen on the way).

    `where` is the container the image appears in: job_result (background job) or direct_result.
    """
    before = page.evaluate(PAGE_STATE_JS, where)["image"]
    seen: list[str] = []
    started = time.perf_counter()
    page.locator(RENDER).click()
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


def outside_requests(page) -> list[str]:
    """Every request the page makes to anywhere but the app's own server, as it happens."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    return seen


def test_render_with_the_embedded_worker_shows_the_image(browser_page, tmp_path):
    page = browser_page
    outside = outside_requests(page)
    with streamlit_app(tmp_path / "jobs", tmp_path / "streamlit.log", JOBS_APP_WORKERS="1") as url:
        open_page(page, f"{url}/?project=browser-e2e")
        shoot(page, "render-empty.png")
        # Markdown a person types is text, not formatting, a link or a colour
        fill_brief(page, "Tower **bold** :red[x] [link](http://example.com)")
        first, seen = press_render_and_watch(page)
        settle(page)
        main = page.locator("[data-testid='stMain']")
        main.get_by_role("button", name="Download PNG").wait_for()
        headings = page.evaluate("""() => [...document.querySelectorAll("[data-testid='stMain'] h3")]
          .map(h => h.innerText.replace(/\\u2060/g, ''))""")  # the invisible joiner that stops autolinks
        assert "Tower **bold** :red[x] [link](http://example.com) · 3D view (axonometric)" in headings, headings
        assert main.locator("a[href='http://example.com']").count() == 0
        assert main.get_by_text("Your render is queued.").count() <= 1  # a toast, in a sentence
        assert "project=browser-e2e" in page.url and "job=job_" in page.url
        # no ids in the main view: they are in Details
        assert main.get_by_text("job_0", exact=False).count() == 0 or not main.get_by_text("job_0").first.is_visible()
        shoot(page, "render-done.png")
        # the same again, now that the server process has rendered once (imports, fonts)
        set_field(page, "Floors", "9")
        again, seen_again = press_render_and_watch(page)
        settle(page)
        # for comparison, the same brief drawn by the page itself
        page.get_by_text("Render in the background (recommended)", exact=True).click()
        settle(page)
        direct, _ = press_render_and_watch(page, "direct_result")
        main.get_by_text("not in the background").first.wait_for()
        settle(page)
        shoot(page, "render-direct.png")
        report("embedded", f"Render pressed -> image on screen: background job first {first * 1000:.0f} ms, "
                           f"second {again * 1000:.0f} ms; drawn by the page {direct * 1000:.0f} ms. "
                           f"Progress seen: {seen} then {seen_again}")
        # turning the background back on shows the watched job at once
        page.get_by_text("Render in the background (recommended)", exact=True).click()
        page.wait_for_function(IMAGE_SHOWN_JS)
        settle(page)
        # a reload keeps the direct render in the gallery
        page.reload()
        page.wait_for_selector(IDLE)
        main.get_by_text("Drawn in the page").wait_for()
        # a second tab on the job's URL shows the same job, from the store
        assert "job=job_" in page.url
        second = page.context.browser.new_page(viewport={"width": 1440, "height": 1480})
        open_page(second, page.url)
        second.wait_for_function(IMAGE_SHOWN_JS)
        second.wait_for_selector(IDLE)
        assert second.locator("[data-testid='stMain']").get_by_text(" · 3D view (axonometric)", exact=False) \
            .first.is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        second.screenshot(path=str(ARTIFACTS / "screenshot-render.png"))
    assert outside == [], f"requests left the machine: {outside}"


def test_a_gallery_card_opens_large_in_view_and_its_brief_can_be_reused(browser_page, tmp_path):
    page = browser_page
    with streamlit_app(tmp_path / "jobs", tmp_path / "streamlit.log", JOBS_APP_WORKERS="1") as url:
        open_page(page, f"{url}/?project=gallery")
        choose(page, "Start from an example", "Brick school")
        press_render_and_watch(page)
        settle(page)
        set_field(page, "Title", "Another concept")
        press_render_and_watch(page)
        settle(page)
        main = page.locator("[data-testid='stMain']")
        choose(page, "Render this concept as", "Floor plan")
        main.get_by_role("button", name="Render as floor plan").click()
        page.wait_for_function("() => document.querySelectorAll(\"[class*='st-key-card_'] img\").length >= 3")
        settle(page)
        shoot(page, "render-gallery.png")
        # the oldest card, far down the page: it opens large, in view, not off-screen above
        page.locator("[class*='st-key-card_']").filter(has_text="3D view").last.get_by_role(
            "button", name="Open").click()
        dialog = page.get_by_role("dialog")
        dialog.wait_for()
        settle(page)
        dialog.locator("[data-testid='stImage'] img").wait_for()
        box = dialog.bounding_box()
        viewport = page.viewport_size
        assert box["y"] >= 0 and box["y"] < viewport["height"] / 2, box
        assert dialog.get_by_text("Brick primary school · 3D view (axonometric)").is_visible()
        assert dialog.get_by_role("button", name="Download PNG").is_visible()
        shoot(page, "render-open-card.png", full_page=False)
        dialog.get_by_role("button", name="Reuse this brief").click()
        dialog.wait_for(state="detached")
        settle(page)
        assert page.get_by_label("Title", exact=True).input_value() == "Brick primary school"


def test_problems_are_explained_next_to_their_field_and_above_render(browser_page, tmp_path):
    page = browser_page
    env = {key: "" for key in ("OPENAI_API_KEY", "A1111_BASE_URL")}
    with streamlit_app(tmp_path / "jobs", tmp_path / "streamlit.log", JOBS_APP_WORKERS="1", **env) as url:
        open_page(page, f"{url}/?project=problems")
        main = page.locator("[data-testid='stMain']")
        # renderers that are not set up are shown greyed, never offered
        assert main.get_by_text("AI image (OpenAI-compatible): not set up on this server").is_visible()
        assert main.get_by_role("radio", name="AI image (OpenAI-compatible)").count() == 0
        set_field(page, "Floors", "0")
        set_field(page, "Width (m)", "10000")
        field_note = main.get_by_text("floors must be at least 1 (got 0).", exact=True)
        assert field_note.is_visible()
        summary = page.locator(".st-key-render_summary")
        assert "Render cannot run until these 2 problems are fixed" in summary.inner_text()
        assert "width must be at most 300" in summary.inner_text()
        shoot(page, "render-problems.png")
        # a rule spanning two fields, shown in words
        set_field(page, "Floors", "5")
        set_field(page, "Width (m)", "300")
        set_field(page, "Depth (m)", "3")
        assert "more than 20 times longer than it is deep" in summary.inner_text()
        page.locator(RENDER).click()
        settle(page)
        assert not list((tmp_path / "jobs").glob("jobs/*/*.json")), "a job was created from a bad brief"
        set_field(page, "Width (m)", "5")
        set_field(page, "Depth (m)", "5")
        choose(page, "Footprint shape", "courtyard")
        assert "a courtyard footprint needs width and depth of at least 9 m" in summary.inner_text().lower()
        shoot(page, "render-problem-courtyard.png")
        # unsubmitted edits survive a visit to the monitor
        set_field(page, "Title", "Not yet rendered")
        page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Monitor").click()
        page.get_by_role("heading", name="Monitor").wait_for()
        settle(page)
        page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Render").click()
        page.get_by_label("Title", exact=True).wait_for()
        settle(page)
        assert page.get_by_label("Title", exact=True).input_value() == "Not yet rendered"
        assert page.get_by_label("Width (m)", exact=True).input_value().startswith("5")


def test_links_to_a_page_work_on_a_freshly_started_server(browser_page, tmp_path):
    page = browser_page
    with streamlit_app(tmp_path / "jobs", tmp_path / "streamlit.log", JOBS_APP_WORKERS="1") as url:
        page.goto(f"{url}/monitor")  # the very first page this server shows
        page.get_by_role("heading", name="Monitor").wait_for()
        settle(page)
        navigation = page.locator("[data-testid='stSidebarNav']")
        # the app's own navigation (icon names are text in the DOM), not Streamlit's list of files
        assert [word for word in navigation.inner_text().split() if word[0].isupper()] == ["Render", "Monitor"]
        assert SIDEBAR_STATUS in page.locator("[data-testid='stSidebar']").inner_text()
        assert page.get_by_text("cannot run on its own").count() == 0
        shoot(page, "render-link-monitor.png", full_page=False)
    with streamlit_app(tmp_path / "jobs", tmp_path / "streamlit-2.log", JOBS_APP_WORKERS="1") as url:
        page.goto(f"{url}/render?project=linked")
        page.get_by_role("heading", name="Render a concept").wait_for()
        settle(page)
        assert page.get_by_text("Page not found").count() == 0
        assert SIDEBAR_STATUS in page.locator("[data-testid='stSidebar']").inner_text()


def test_progress_changes_while_an_external_worker_runs_the_job(browser_page, tmp_path):
    """No embedded pool: the job waits in the queue until a `python -m jobs_core worker` takes it."""
    page = browser_page
    jobs_dir = tmp_path / "jobs"
    with streamlit_app(jobs_dir, tmp_path / "streamlit.log", JOBS_APP_WORKERS="0",
                       JOBS_APP_POLL_SECONDS="0.5") as url:
        open_page(page, f"{url}/?project=browser-ext")
        fill_brief(page, "Queued then drawn")
        page.locator(RENDER).click()
        main = page.locator("[data-testid='stMain']")
        main.get_by_text("Queued: position 1 in the queue").wait_for()
        main.get_by_text("No worker is running, so the job waits until one starts.").wait_for()
        queued = page.evaluate(PAGE_STATE_JS, "job_result")["progress"]
        assert queued.startswith("0%")
        # No idle wait here: while the job is live its panel reruns every interval, so on a busy
        # machine the script may never be idle; the texts above say the panel is drawn.
        shoot(page, "render-queued.png")
        worker = subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--drain"], cwd=ROOT,
                                  env={**os.environ, "JOBS_DIR": str(jobs_dir)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            page.wait_for_function(IMAGE_SHOWN_JS)
            assert worker.wait(30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
        # Not an idle wait: the panel's live part keeps rerunning while it listens for changes.
        main.get_by_role("button", name="Download PNG").wait_for()
        main.get_by_text("Queued: position 1 in the queue").wait_for(state="detached")
        page.screenshot(path=str(ARTIFACTS / "screenshot-render-external-worker.png"), full_page=True)


def test_the_page_keeps_showing_renders_after_a_source_file_changes_under_the_server(browser_page, tmp_path):
    """Streamlit imports the app's modules afresh after a source file changes, while the cached
    runtime goes on returning jobs of the first import: the panel once froze on a finished job
    drawn as "done (100%)", still running. The app is copied, so the edit touches no real file."""
    page = browser_page
    root = tmp_path / "app"
    root.mkdir()
    shutil.copy2(ROOT / "app.py", root)
    for folder in (".streamlit", "pages", "jobs_core"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with streamlit_app(tmp_path / "jobs", tmp_path / "streamlit.log", root=root, JOBS_APP_WORKERS="1") as url:
        open_page(page, f"{url}/?project=edited")
        press_render_and_watch(page)
        settle(page)
        with (root / "jobs_core" / "models.py").open("a") as source:
            source.write("\n# changed while the server runs\n")
        set_field(page, "Floors", "9")  # this rerun imports the app's modules afresh
        press_render_and_watch(page)
        page.locator("[data-testid='stMain']").get_by_role("button", name="Download PNG").wait_for()
