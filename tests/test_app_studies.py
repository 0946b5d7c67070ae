"""Design studies on the render page through AppTest: choose two fields, start a 3 x 2 study, see
the grid fill, compare two cells, the contact sheet, a reload, the gallery's one card.

As in tests/test_app.py, the app and the test share a named memory store; a real worker in this
process renders the jobs (the app's own pool is off, so each step sees a known state).
"""
from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from pypdf import PdfReader
from streamlit.testing.v1 import AppTest

from jobs_core import JobService, Worker
from jobs_core.studies import read_study
from pages.study_panel import COMPARE_MARGIN

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobService]:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    monkeypatch.setenv("JOBS_RENDER_SIZE", "256")
    monkeypatch.setenv("JOBS_STORE_URL", f"memory://test-studies-{uuid.uuid4().hex[:12]}")
    monkeypatch.delenv("JOBS_DIR", raising=False)
    yield JobService.from_env()
    st.cache_resource.clear()


def run_app(**params: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.query_params.update({"project": "demo", **params})
    return app.run()


def texts(app: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "error", "info", "subheader") for e in app.get(kind)]
    parts += [str(getattr(bar, "proto", "")) for bar in app.get("progress")]
    return "\n".join(str(part) for part in parts)


def block(app: AppTest, key: str):
    """The container with this key (st.container(key=...)), to look inside it only."""
    found = []

    def walk(node) -> None:
        for child in getattr(node, "children", {}).values():
            if type(child).__name__ == "Block" and str(getattr(child.proto, "id", "")).endswith(f"-{key}"):
                found.append(child)
            walk(child)
    walk(app._tree)
    assert len(found) == 1, f"{len(found)} containers with key {key}"
    return found[0]


def dialogs_holding(app: AppTest, key: str) -> list:
    """The dialogs (st.dialog blocks) that hold the container with this key."""
    found = []

    def walk(node, dialog) -> None:
        for child in getattr(node, "children", {}).values():
            proto = getattr(child, "proto", None)
            inside = child if type(child).__name__ == "Block" and proto.WhichOneof("type") == "dialog" else dialog
            if inside is not None and type(child).__name__ == "Block" and str(proto.id).endswith(f"-{key}"):
                found.append(inside.proto.dialog)
            walk(child, inside)
    walk(app._tree, None)
    return found


def grid_images(app: AppTest) -> int:
    return len(block(app, "study_panel").get("image"))


def choose_floors_and_roofs(app: AppTest) -> AppTest:
    app.multiselect(key="vary_fields").set_value(["floors", "roof"]).run()
    app.number_input(key="vary_floors_from").set_value(4)
    app.number_input(key="vary_floors_to").set_value(12)
    app.number_input(key="vary_floors_step").set_value(4)
    pills = next(group for group in app.get("button_group") if group.key == "vary_roof")
    pills.set_value(["flat", "gable"])
    return app.run()


def drain(service: JobService, count: int | None = None) -> None:
    worker = Worker(service, concurrency=1, render_size=256)
    done = 0
    while (count is None or done < count) and (job := service.claim_next(worker.worker_id)) is not None:
        worker.run(job)
        done += 1


def test_two_fields_make_a_3_by_2_study_whose_grid_fills_and_compares(service):
    app = choose_floors_and_roofs(run_app())
    assert not app.exception
    assert "That makes **6 renders** (3 × 2)" in texts(app)
    app.button(key="render_study").click().run()
    study_id = app.query_params["study"]
    if isinstance(study_id, list):
        study_id = study_id[0]
    study = read_study(service, study_id, "demo")
    assert study.summary.total == 6 and study.summary.queued == 6
    assert [cell.values for cell in study.cells] == [
        {"floors": floors, "roof": roof} for floors in (4, 8, 12) for roof in ("flat", "gable")]
    shown = texts(app)
    assert "0 of 6 done, 6 queued" in shown and "**floors 8**" in shown and "**roof gable**" in shown

    drain(service, 2)
    app.run()
    assert "2 of 6 done, 4 queued" in texts(app)
    assert grid_images(app) == 2  # the two finished cells show their drawings

    drain(service)
    app.run()
    assert "6 of 6 done" in texts(app)
    assert grid_images(app) == 6
    first, second = study.cells[0].job_id, study.cells[3].job_id  # floors 4 flat, floors 8 gable
    app.checkbox(key=f"compare_{first}").check().run()
    app.checkbox(key=f"compare_{second}").check().run()
    shown = texts(app)
    assert "**What differs**\n- floors\\: 4 → 8\n- roof\\: flat → gable" in shown  # (colons escaped for Markdown)
    assert grid_images(app) == 6
    assert len(block(app, "study_compare").get("image")) == 2  # the two side by side, in a dialog
    [dialog] = dialogs_holding(app, "study_compare")
    assert dialog.is_open and dialog.pixel_width == 2 * 256 + COMPARE_MARGIN  # as wide as the two drawings
    third = study.cells[5].job_id
    app.checkbox(key=f"compare_{third}").check().run()  # a third tick unticks the oldest
    assert not app.checkbox(key=f"compare_{first}").value and app.checkbox(key=f"compare_{second}").value
    assert "- floors\\: 8 → 12" in texts(app)

    downloads = {button.proto.label: button for button in app.get("download_button")}
    assert {"Download contact sheet (PNG)", "Download contact sheet (PDF)"} <= set(downloads)
    assert "study of 6 variations · 6 of 6 done" in texts(app)  # the gallery: one card for the study


def test_a_reload_shows_the_study_and_its_contact_sheet_is_whole(service):
    from jobs_core.contact_sheet import cell_images, contact_sheet_pdf, contact_sheet_png
    from jobs_core.studies import create_study

    study, _ = create_study(service, {"projectId": "demo", "conceptInputs": {"title": "Harbour Library"},
                                      "vary": {"floors": [4, 8, 12], "roof": ["flat", "gable"]}})
    drain(service)
    app = run_app(study=study.study_id)  # a reload, a second tab or a bookmark
    assert not app.exception
    shown = texts(app)
    assert "Harbour Library\\: variations" in shown and "6 of 6 done" in shown
    study = read_study(service, study.study_id)
    images = cell_images(study, service.image)
    sheet = Image.open(io.BytesIO(contact_sheet_png(study, images)))
    assert sheet.format == "PNG" and sheet.width > sheet.height
    text = PdfReader(io.BytesIO(contact_sheet_pdf(study, images))).pages[0].extract_text()
    for label in ("Harbour Library: variations", "Project demo", "floors 4", "floors 12", "roof gable"):
        assert label in text


def test_a_combination_that_is_not_a_building_is_refused_before_render(service):
    app = run_app()
    app.selectbox(key="field_footprint").set_value("courtyard").run()
    app.multiselect(key="vary_fields").set_value(["width"]).run()
    app.number_input(key="vary_width_from").set_value(6.0)
    app.number_input(key="vary_width_to").set_value(30.0)
    app.number_input(key="vary_width_step").set_value(12.0)
    app.run()
    errors = [error.value for error in app.error]
    refusal = "The variation width 6 cannot be drawn: a courtyard footprint needs"
    assert any(error.startswith(refusal) for error in errors)
    assert app.button(key="render_study").disabled
    assert service.list().jobs == []


def test_cancel_the_study_then_retry_one_cell_alone(service):
    from jobs_core.studies import create_study

    study, _ = create_study(service, {"projectId": "demo", "vary": {"roof": ["flat", "gable", "hip"]}})
    app = run_app(study=study.study_id)
    app.button(key="cancel_study").click().run()
    assert "Canceled 3 jobs." in texts(app)
    assert read_study(service, study.study_id).summary.canceled == 3
    app.button(key=f"retry_cell_{study.cells[1].job_id}").click().run()
    summary = read_study(service, study.study_id).summary
    assert summary.queued == 1 and summary.canceled == 2
    app.button(key="retry_study").click().run()
    assert read_study(service, study.study_id).summary.queued == 3


def test_the_monitor_filters_by_study_and_shows_its_completion(service):
    from jobs_core.studies import create_study

    study, _ = create_study(service, {"projectId": "demo", "conceptInputs": {"title": "Harbour Library"},
                                      "vary": {"floors": [4, 8, 12], "roof": ["flat", "gable"]}})
    for _ in range(3):
        service.submit({"projectId": "demo"})  # plain jobs, not of the study
    drain(service, 2)  # two of the study's six are done (the study's jobs are the oldest in the queue)
    app = AppTest.from_file(APP, default_timeout=60).run()
    app = app.switch_page("pages/monitor.py").run()
    assert not app.exception
    assert [m.value for m in app.metric if m.label == "Jobs"] == ["9"]
    app.multiselect(key="filter_studies").set_value([study.study_id]).run()
    assert [m.value for m in app.metric if m.label == "Jobs"] == ["6"]
    [table] = [frame.value for frame in app.dataframe if "completion_rate" in getattr(frame.value, "columns", [])
               and frame.value.index.name == "study"]
    row = table.loc[study.study_id]
    assert row["total"] == 6 and row["completed"] == 2 and row["pending"] == 4 and row["title"] == "Harbour Library"


def test_the_form_says_how_long_the_renders_take_from_history(service):
    from jobs_core.eta import typical_run
    from jobs_core.studies import create_study
    from jobs_core.words import duration_text

    create_study(service, {"projectId": "demo", "vary": {"roof": ["flat", "gable", "hip", "shed"]}})
    drain(service)  # four finished renders: enough history
    typical = typical_run(service, "axonometric", "axonometric")
    assert typical is not None
    app = run_app()
    app.multiselect(key="vary_fields").set_value(["material"]).run()
    next(group for group in app.get("button_group") if group.key == "vary_material").set_value(
        ["concrete", "brick", "timber"]).run()
    expected = f"About {duration_text(typical.median * 3)} in all"  # nothing queued, one worker's worth
    assert "That makes **3 renders** (3)." in texts(app) and expected in texts(app)
