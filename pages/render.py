"""Render page (minimal until the app issue lands): submit a brief and see the project's jobs."""
import streamlit as st

from jobs_core import InvalidInput, JobService

service = JobService.from_env()
st.title("Concept render jobs")
project_id = st.text_input("Project id", value="demo")
if st.button("Render a default concept"):
    try:
        job = service.submit({"projectId": project_id})
        st.success(f"Queued job {job.job_id}. Run `python -m jobs_core worker` to process it.")
    except InvalidInput as error:
        st.error(str(error))
try:
    page = service.list(project_id, limit=20)
    st.dataframe([{"job": j.job_id, "status": j.status.value, "progress": j.progress, "stage": j.stage}
                  for j in page.jobs])
except InvalidInput as error:
    st.error(str(error))
