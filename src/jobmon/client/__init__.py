"""The worker side: report jobs to jobmon from Python.

``Client`` (asyncio) keeps one connection, pipelines requests and matches replies
by ``msg_id``; ``SyncClient`` wraps it for scripts. Events (status, completion,
failure, heartbeats) never fail because jobmon is unreachable: they wait in a
bounded queue, stamped with the time they happened (``at``), and go out in order
when the connection returns. An event in flight when the connection dropped is
sent again; every event carries an ``event_id``, so a resend that jobmon had
already applied is answered again and counted once. ``addresses``: the nodes
of a cluster (``--redis``); after a lost connection the client tries the next.

    async with Client(port=7070) as jobmon:
        async with jobmon.track("nightly-backup", max_retries=3) as run:
            await run.progress(40)
"""

from .core import EVENT_TYPES, Client, new_event_id
from .errors import JobmonError, JobmonUnavailable
from .sync import SyncClient, SyncRun
from .tracking import Run, Tracker

__all__ = [
    "EVENT_TYPES",
    "Client",
    "JobmonError",
    "JobmonUnavailable",
    "Run",
    "SyncClient",
    "SyncRun",
    "Tracker",
    "new_event_id",
]
