"""Monitor page (minimal until the monitor issue lands): counts of jobs by status."""
import streamlit as st

from jobs_core import JobService

service = JobService.from_env()
st.title("Monitor")
page = service.list()
counts: dict[str, int] = {}
for job in page.jobs:
    counts[job.status.value] = counts.get(job.status.value, 0) + 1
st.write(counts or "No jobs yet.")
for bad in page.unreadable:
    st.warning(f"Unreadable: {bad.location} ({bad.reason})")
