"""Render pressed to image on screen, in a real browser: in the background (a job) against drawn by
the page itself (checkbox off), alternating, in one run of one server.

    python3 bench/page_bench.py [--runs 7] [--store files|memory]

Starts `streamlit run app.py` (one embedded worker) the way tests/test_browser.py does, drives
Debian's chromium with Playwright, and prints each path's median and spread and the difference
(the issue's target: the background path within 0.25 s of the direct one). Each round changes the
brief, so every press draws a new image.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402
from test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE,
    open_page,
    press_render_and_watch,
    set_field,
    settle,
    streamlit_app,
)

BACKGROUND = "Render in the background (recommended)"


def use_background(page, on: bool) -> None:
    box = page.get_by_role("checkbox", name=BACKGROUND)
    if box.is_checked() != on:
        page.get_by_text(BACKGROUND, exact=True).click()
        settle(page)


def one_press(page, background: bool, floors: int) -> float:
    use_background(page, background)
    set_field(page, "Floors", str(floors))
    seconds, _ = press_render_and_watch(page, "job_result" if background else "direct_result")
    settle(page)
    return seconds


def figures(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return (f"{name:<28} median {statistics.median(ms):6.0f} ms   min {ms[0]:6.0f}   max {ms[-1]:6.0f}   "
            f"runs {len(ms)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--store", choices=["files", "memory"], default="files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = {"JOBS_APP_WORKERS": "1"}
        if args.store == "memory":
            settings["JOBS_STORE_URL"] = f"memory://page-bench-{uuid.uuid4().hex[:8]}"
        with streamlit_app(Path(folder) / "jobs", Path(folder) / "streamlit.log", **settings) as url, \
                sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.set_default_timeout(60_000)
            open_page(page, f"{url}/?project=page-bench")
            page.wait_for_selector(IDLE)
            one_press(page, True, 3)  # warm-up: imports, fonts, the first thumbnail
            one_press(page, False, 4)
            background, direct = [], []
            for round_ in range(args.runs):
                background.append(one_press(page, True, 5 + 2 * round_))
                direct.append(one_press(page, False, 6 + 2 * round_))
            browser.close()
    load = " / ".join(f"{figure:.2f}" for figure in os.getloadavg())
    print(f"Render pressed -> image on screen, {args.store} store, one embedded worker, {args.runs} rounds "
          f"(load average after: {load})")
    print(figures("in the background (job)", background))
    print(figures("drawn by the page (direct)", direct))
    gap = statistics.median(background) - statistics.median(direct)
    print(f"difference of medians: {gap * 1000:+.0f} ms (target: at most +250 ms)")


if __name__ == "__main__":
    main()
