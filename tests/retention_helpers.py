"""Jobs as a store holds them after weeks of use: finished long ago, with renders, events, webhooks."""
from __future__ import annotations

import secrets
from datetime import timedelta

from jobs_core.errors import JobNotFound
from jobs_core.ids import new_concept_id, new_job_id
from jobs_core.models import Concept, Event, Job, JobStatus, utcnow
from jobs_core.renderers.noop import _tiny_png
from jobs_core.store import JobStore
from jobs_core.webhooks import Delivery


def put_job(store: JobStore, status: JobStatus, days_ago: float, *, project: str = "p1",
            concept_id: str | None = None, save_concept: bool = True, webhook: bool = False,
            idempotency_key: str | None = None) -> Job:
    """A job of `status` last changed `days_ago` days ago, written through the store's own calls:
    its concept, its render (completed), an event, and a waiting webhook delivery if asked."""
    when = utcnow() - timedelta(days=days_ago)
    concept_id = concept_id or new_concept_id()
    inputs = {"floors": 4, "footprint": "bar"}
    job = Job(job_id=new_job_id(), concept_id=concept_id, project_id=project, render_type="axonometric",
              concept_inputs=inputs, created_at=when, updated_at=when, available_at=when,
              idempotency_key=idempotency_key)
    if status is JobStatus.PROCESSING:
        job = job.model_copy(update={"status": status, "worker_id": "w-1", "attempts": 1, "started_at": when,
                                     "heartbeat_at": when})
    elif status.is_final:
        job = job.model_copy(update={"status": status, "finished_at": when, "attempts": 1,
                                     "error": None if status is JobStatus.COMPLETED else "it failed",
                                     "image_url": f"/renders/{job.job_id}" if status is JobStatus.COMPLETED else None})
    if save_concept:
        store.save_concept(Concept(concept_id=concept_id, project_id=project, concept_inputs=inputs, created_at=when))
    if status is JobStatus.COMPLETED:
        store.save_image(project, job.job_id, _tiny_png())
    store.create(job, None)
    store.append_events(project, [Event(at=when, job_id=job.job_id, type=status.value, status=status, attempt=1)])
    if webhook:
        store.enqueue_deliveries([Delivery(id="msg_" + secrets.token_hex(8), key=job.job_id, order=1,
                                           event="completed", url="http://127.0.0.1:9/hook", body=job.to_json(),
                                           project_id=project, job_id=job.job_id)])
    return job


def holdings(store: JobStore) -> dict:
    """Everything the store holds that a prune may remove, comparable before and after."""
    jobs = {job.job_id: job for job in store.iter_jobs()}
    images, events = {}, {}
    for job in jobs.values():
        try:
            images[job.job_id] = store.load_image(job.project_id, job.job_id)
        except JobNotFound:
            pass  # only completed jobs have one
        events[job.job_id] = store.events(job.job_id, job.project_id)
    return {"jobs": jobs, "images": images, "events": events,
            "concepts": sorted((c.project_id, c.concept_id) for c in store.iter_concepts()),
            "deliveries": sorted(d.id for d in store.deliveries())}
