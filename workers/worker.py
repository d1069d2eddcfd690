"""The RQ worker tagsync runs: in-process jobs, with heartbeats so a dead worker is noticed fast.

RQ's SimpleWorker runs jobs in its own process (3x the throughput of fork-per-job here, and
HTTP sessions, Lua scripts and the DB pool stay warm), but sends no heartbeat while a job runs,
so it must claim the whole job timeout up front: a SIGKILLed worker's job would sit unnoticed
for job timeout + 60 s, plus up to 10 minutes until some worker's maintenance looks. This worker
beats every few seconds from a side thread and claims only HEARTBEAT_TTL, and every worker runs
maintenance often, so an abandoned job is retried within about a minute.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from .queueing import reconcile_queue

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5  # seconds between heartbeats while a job runs
HEARTBEAT_TTL = 20  # seconds without a heartbeat before a running job counts as abandoned
WORKER_TTL = 35  # seconds; RQ blocks on the queue for WORKER_TTL - 15 between maintenance checks
MAINTENANCE_INTERVAL = 15  # seconds between registry clean-ups (one worker at a time, locked)


class TagsyncWorker(SimpleWorker):
    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, stop), daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join(timeout=HEARTBEAT_INTERVAL + 1)
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Job, execution: Execution, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_INTERVAL):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:  # a missed beat is retried; it must never kill the job
                log.warning("heartbeat for job %s failed", job.id, exc_info=True)


def make_worker(connection: Any, queue_name: str) -> TagsyncWorker:
    """A worker for real-time events first, reconciliations when no event is waiting."""
    queues = [
        Queue(queue_name, connection=connection, serializer=JSONSerializer),
        reconcile_queue(connection),
    ]
    return TagsyncWorker(
        queues,
        connection=connection,
        serializer=JSONSerializer,
        worker_ttl=WORKER_TTL,
        maintenance_interval=MAINTENANCE_INTERVAL,
    )
