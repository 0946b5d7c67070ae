"""A design study in a real browser: `streamlit run app.py` with two embedded workers, headless
Chromium, a person choosing two fields, starting a 3 x 2 study, watching the grid fill, comparing
two cells and downloading the contact sheet (a PNG with six drawings; a PDF whose text has the
labels). Screenshots go to docs/studies-*.png, the timing to test-artifacts/."""
from __future__ import annotations

import io
import time

import test_browser
from PIL import Image, ImageStat
from pypdf import PdfReader
from test_browser import (
    IDLE,
    browser_page,  # noqa: F401  (the fixture: Chromium, headless)
    open_page,
    report,
    settle,
    shoot,
    streamlit_app,
    sync_api,
)

from jobs_core.contact_sheet import cell_box
from jobs_core.service import JobService
from jobs_core.studies import create_study, read_study
from jobs_core.worker import Worker

pytestmark = test_browser.pytestmark  # slow; skipped without Chromium (and, on import, without Playwright)

GRID_IMAGES_JS = """() => [...document.querySelectorAll(
  ".st-key-study_panel [class*='st-key-cell_'] [data-testid='stImage'] img")]
  .filter(img => img.complete && img.naturalWidth > 0).length"""


COMPARED_IMAGES_JS = """() => [...document.querySelectorAll("[role='dialog'] .st-key-study_compare img")]
  .filter(img => img.complete && img.naturalWidth > 0)
  .map(img => { const box = img.getBoundingClientRect();
    return {width: box.width, natural: img.naturalWidth, top: Math.round(box.top),
            left: box.left, right: box.right}; })"""


def pick_fields(page) -> None:
    page.get_by_text("Explore variations", exact=True).click()
    box = page.get_by_role("combobox", name="Fields to vary")
    box.wait_for()
    for option in ("Floors", "Roof"):
        for _ in range(3):  # a rerun still drawing may close the list as it opens: open it again
            box.click()
            box.fill(option)  # the list shows the fields that match what is typed
            try:
                page.get_by_role("option", name=option, exact=True).click(timeout=5_000)
                break
            except sync_api.TimeoutError:
                settle(page)
        settle(page)
    page.keyboard.press("Escape")
    for label, value in (("Floors: from", "4"), ("to", "12"), ("step", "4")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
        settle(page)
    page.locator(".st-key-vary_roof").get_by_role("button", name="gable", exact=True).click()
    settle(page)


def drawn_cells(png: bytes, study) -> int:
    """How many of the sheet's six cells hold a drawing (not the flat box of a missing one)."""
    sheet = Image.open(io.BytesIO(png)).convert("L")
    drawn = 0
    for row in range(2):
        for column in range(3):
            spread = ImageStat.Stat(sheet.crop(cell_box(study, row, column))).stddev[0]
            drawn += spread > 10  # a drawing has lines and shades; an empty box is one grey
    return drawn


def test_a_3_by_2_study_fills_its_grid_compares_and_downloads_its_contact_sheet(browser_page, tmp_path):  # noqa: F811
    page = browser_page
    jobs = tmp_path / "jobs"
    with streamlit_app(jobs, tmp_path / "streamlit.log", JOBS_APP_WORKERS="2") as url:
        open_page(page, f"{url}/?project=study-e2e")
        pick_fields(page)
        main = page.locator("[data-testid='stMain']")
        main.get_by_text("That makes 6 renders (3 × 2).", exact=False).wait_for()
        started = time.perf_counter()
        page.locator(".st-key-render_study button").click()
        page.locator(".st-key-study_panel").wait_for()
        seen_partial = False
        while (shown := page.evaluate(GRID_IMAGES_JS)) < 6:
            seen_partial = seen_partial or 0 < shown < 6
            assert time.perf_counter() - started < 120, f"only {shown} of 6 cells drawn after 120 s"
            page.wait_for_timeout(20)
        full = time.perf_counter() - started
        settle(page)
        assert "study=study_" in page.url and "project=study-e2e" in page.url
        page.locator(".st-key-study_panel").get_by_text("6 of 6 done", exact=True).wait_for()
        shoot(page, "studies-grid.png")
        report("study", f"Render pressed -> full 3 x 2 grid on screen in {full * 1000:.0f} ms with 2 workers "
                        f"(a part-filled grid seen on the way: {seen_partial})")

        page.locator(".st-key-cell_0").get_by_text("Compare").click()
        settle(page)
        page.locator(".st-key-cell_3").get_by_text("Compare").click()
        settle(page)
        dialog = page.get_by_role("dialog")  # the second tick opens the two at full size, over the page
        dialog.wait_for()
        compare = dialog.locator(".st-key-study_compare")
        compare.get_by_text("What differs").wait_for()
        page.wait_for_function(COMPARED_IMAGES_JS + ".length === 2")
        settle(page)
        shown = page.evaluate(COMPARED_IMAGES_JS)
        viewport = page.viewport_size["width"]
        assert all(image["width"] > 0.4 * viewport for image in shown), (shown, viewport)  # the grid's are ~0.15
        assert all(image["width"] <= image["natural"] for image in shown), shown  # never blown up past its pixels
        assert shown[0]["top"] == shown[1]["top"] and shown[0]["right"] <= shown[1]["left"], shown  # side by side
        assert compare.get_by_text("floors: 4 → 8").is_visible()
        assert compare.get_by_text("roof: flat → gable").is_visible()
        page.locator("[data-testid='stToast']").wait_for(state="detached")  # "6 variations are queued." goes
        shoot(page, "studies-compare.png", full_page=False)
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
        settle(page)
        assert page.get_by_role("dialog").count() == 0  # closed, and not opened again by the next run
        main.get_by_role("button", name="Compare floors 4, roof flat and floors 8, roof gable side by side").click()
        dialog.wait_for()
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
        settle(page)

        with page.expect_download() as png_download:
            main.get_by_role("button", name="Download contact sheet (PNG)").click()
        png = png_download.value.path().read_bytes()
        with page.expect_download() as pdf_download:
            main.get_by_role("button", name="Download contact sheet (PDF)").click()
        pdf = pdf_download.value.path().read_bytes()

        page.reload()  # the study survives a reload: it is its jobs, and the URL names it
        page.wait_for_selector(IDLE)
        page.locator(".st-key-study_panel").get_by_text("6 of 6 done").wait_for()

    service = JobService.from_env(jobs)
    study_id = page.url.split("study=")[1].split("&")[0]
    study = read_study(service, study_id, "study-e2e")
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).format == "PNG"
    assert drawn_cells(png, study) == 6
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    for label in (study.title, "Project study-e2e", "floors 4", "floors 8", "floors 12", "roof flat", "roof gable",
                  "floors 12, roof gable"):
        assert label in text, f"{label!r} is not in the PDF's text: {text!r}"


def test_the_comparison_stays_open_while_the_rest_renders_and_esc_closes_it(browser_page, tmp_path):  # noqa: F811
    """The grid reruns every poll while the study is live, and the page once more when it is done:
    the two compared drawings stay in front through both, and once closed they stay closed."""
    page = browser_page
    jobs = tmp_path / "jobs"
    service = JobService.from_env(jobs)
    study, _ = create_study(service, {"projectId": "live", "vary": {"floors": [4, 8, 12], "roof": ["flat", "gable"]}})
    worker = Worker(service, concurrency=1, render_size=512)  # the app renders nothing: each step is the test's

    def render(*indexes: int) -> None:
        for index in indexes:
            worker.run(service.claim(study.cells[index].job_id, worker.worker_id))

    def grid_shows(count: int) -> None:
        page.wait_for_function(f"({GRID_IMAGES_JS})() === {count}")

    render(0, 1)
    with streamlit_app(jobs, tmp_path / "streamlit.log", JOBS_APP_WORKERS="0") as url:
        open_page(page, f"{url}/?project=live&study={study.study_id}")
        grid_shows(2)
        page.locator(".st-key-cell_0").get_by_text("Compare").click()
        settle(page)
        page.locator(".st-key-cell_1").get_by_text("Compare").click()
        dialog = page.get_by_role("dialog")
        dialog.locator(".st-key-study_compare img").nth(1).wait_for()
        render(2)
        grid_shows(3)  # the live grid ran again behind the dialog
        assert dialog.is_visible() and len(page.evaluate(COMPARED_IMAGES_JS)) == 2
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
        render(3)
        grid_shows(4)
        assert page.get_by_role("dialog").count() == 0  # closed stays closed as the grid runs again
        page.get_by_role("button", name="Compare floors 4, roof flat and floors 4, roof gable side by side").click()
        dialog.wait_for()
        render(4, 5)
        page.get_by_text("study of 6 variations · 6 of 6 done").wait_for()  # the page ran whole once more
        settle(page)
        assert dialog.is_visible() and len(page.evaluate(COMPARED_IMAGES_JS)) == 2
