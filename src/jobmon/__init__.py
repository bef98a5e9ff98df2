"""jobmon: a durable job-monitoring server.

Workers connect over TCP and report job lifecycle events as newline-delimited
JSON; jobmon keeps the state durably and answers aggregate questions.

Layout, from the wire inwards:

- ``connection``  transport and framing: reads large chunks, splits lines,
                  enforces the line limit, applies backpressure, writes replies.
- ``protocol``    one line -> a validated request (bare or Maelstrom envelope;
                  a msgspec fast path for the hot messages), errors, framing;
                  ``framing`` reads an envelope's head once per client and
                  writes a reply's around its encoded body.
- ``commands/``   one module per message type; each owns its parsing
                  (``parse``, and a msgspec ``Wire`` struct for the hot ones)
                  and its effect plus reply (``apply``).
- ``store``       all job state and O(1) aggregates; plain synchronous
                  mutations, called only from the engine task. ``jobindex``:
                  jobs by status, for ``list_jobs``; ``store_snapshot``: the store
                  as snapshot rows and back (``jobrows``: jobs as rows, this format
                  and the one before); ``alerting``: one alert per incident,
                  its resolution, the kept history (mixed into the store).
- ``monitoring``  negative alerting (mixed into the store); ``deadlines`` keeps
                  every pending deadline in one heap; ``schedule`` reads cron.
- ``runs``        runs with a ``run_id`` (mixed into the store): several live
                  runs of one job, each with its own start, progress, outcome.
- ``hc``          Healthchecks.io's pinging and management APIs and badges: a
                  check is a job (``hc.registry`` keeps checks in the store).
- ``history``     what the store keeps of past runs and alerts (recent runs,
                  failures per hour, duration histogram, alert counts).
- ``analytics``   failures by hour (``hours``), duration sketches (``sketches``),
                  costs (``costs``) and the top jobs by cost (``ranking``); what
                  a run adds that changes no reply settles once a turn (``settling``).
- ``model``       the record types (``Job``: a msgspec Struct, what few jobs have in its
                  ``JobMore``; ``Alert``) and ``Status``.
- ``engine``      the single store task: answers every ready connection's
                  inbox, journals the turn, one fsync per group, releases replies;
                  fires due deadlines a slice a turn. ``batch``: messages from
                  inside the server (HTTP, launched jobs) in the same inboxes.
- ``limits``      connection caps and the open-file limit; ``httplimits`` the
                  HTTP side's (headers, bodies); ``sse`` the event stream.
- ``journal``     the append-only journal (checksummed records, torn-tail
                  handling) and snapshots; ``persistence`` recovers and compacts.
                  ``journal.TurnLog`` is the seam: the file, or a cluster's stream.
- ``idempotency`` the memory of applied ``event_id``s (``commands.once``).
- ``cluster/``    ``serve --redis``: several nodes as one monitor over a Redis
                  Stream (propose, order, apply; lease; snapshots in Redis).
- ``server``      the TCP server lifecycle: start, signals, phased shutdown.
- ``tls``         the SSL contexts (server and clients) and their flags;
                  ``tls_listen`` a TLS port: handshakes under a timeout, one log line
                  per failure.
- ``http``        the HTTP API, the dashboard (``static/``) and ``/metrics``
                  (``httpauth``: the token and the dashboard's cookie; ``httpbodies``:
                  JSON bodies in and out)
                  (``metrics``: a prometheus-client collector); ``publish`` and
                  ``notify`` send alerts to subscribers, webhooks, Alertmanager;
                  ``notify_apprise`` through Apprise (``--notify``), by the
                  job's ``channels``; ``notifiers`` is the seam between them.
- ``integrations`` event sources inside the server (the ``Integration`` seam):
                  ``celery`` watches a Celery cluster (``--celery``) through
                  ``celery_receiver``, Celery's receiver in a child process;
                  ``celery_events`` turns its events into protocol messages.
- ``stdio``       the same handlers over stdin/stdout (Maelstrom-style harness).
- ``cli``         ``jobmon serve | stdio | send | compact | run``; its flags in
                  ``cli_flags`` (values checked by ``cli_values``, ``JOBMON_*`` read by
                  ``envflags``).
- ``client/``     the worker side: ``Client`` (``core``; a method per message in
                  ``messages``), ``track`` (``tracking``), ``SyncClient`` (``sync``).
- ``accel``       the optional accelerator: the modules above that ``setup.py``
                  compiles with Cython at install; ``JOBMON_PURE=1`` runs their ``.py``.
- ``runner``      ``jobmon run`` and launched jobs: attempts, limits, retries,
                  reports; ``proctree`` the command's process tree and pipes.
"""

__version__ = "0.1.0"

from . import accel as _accel

_accel.install()  # the compiled modules, or their .py under JOBMON_PURE=1 (accel.py)
