"""The monitor shows the store's size and the retention in force (issue 19, part 1)."""
from __future__ import annotations

import pytest
from proc_helpers import wait_until
from retention_helpers import put_job
from test_monitor_page import open_monitor, store_dir  # noqa: F401 - the generated store of 400 jobs

from jobs_core import FileJobStore
from jobs_core.models import JobStatus


def size_line(app) -> str:
    """The page's size line once the background measure is in (the page is run again until then)."""
    def measured() -> str | None:
        app.run()
        assert not app.exception, [e.message for e in app.exception]
        lines = [caption.value for caption in app.main.caption if caption.value.startswith("Store size:")]
        assert len(lines) == 1, [caption.value for caption in app.main.caption]
        return None if lines[0].startswith("Store size: measuring") else lines[0]
    return wait_until(measured, timeout=30, what="the store's size on the page")


def test_the_monitor_shows_the_store_size_and_that_retention_is_off(store_dir):  # noqa: F811
    renders = len(list((store_dir / "renders").glob("*/*.png")))
    assert renders > 100
    app = open_monitor()
    assert not app.exception
    line = size_line(app)
    assert line.startswith(f"Store size: 400 jobs, {renders:,} renders, ")
    assert "Retention: off (jobs are kept until pruned with `python -m jobs_core prune`)." in line


def test_the_monitor_shows_the_retention_in_force_and_the_last_prune(store_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("JOBS_RETENTION_DAYS", "30")
    store = FileJobStore(store_dir)
    put_job(store, JobStatus.COMPLETED, 40)
    from jobs_core.retention import RetentionLoop

    assert RetentionLoop(store, 30, "w-test").run_once() is not None
    app = open_monitor()
    assert not app.exception
    line = size_line(app)
    assert "Retention: workers remove jobs finished over 30 days ago, once an hour (last at " in line
    assert "not yet" not in line


@pytest.fixture(autouse=True)
def _no_retention_unless_asked(monkeypatch):
    monkeypatch.delenv("JOBS_RETENTION_DAYS", raising=False)
