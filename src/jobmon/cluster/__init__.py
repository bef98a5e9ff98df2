"""Several jobmon nodes over Redis, behaving as one monitor (``serve --redis``).

A replicated state machine over one Redis Stream (see docs/cluster.md):

- ``redislog``    the Redis side: connections (URL or Sentinel), the key layout
                  under one hash tag, the Lua scripts (lease, fenced append,
                  membership), proposals, reads, snapshots and trimming.
- ``lease``       who is leader: a lease with a fencing token, renewed in time,
                  judged on this process's monotonic clock.
- ``proposal``    a turn's state changes on their way to the log: the stream's
                  side of the journal seam (``journal.TurnLog``).
- ``replica``     the engine of a cluster node: proposes each turn's state
                  changes as one stream entry and applies every entry, its own
                  too, in stream order with the entry ID's time as the clock.
- ``leading``     what only the leader appends (ticks, confirmed deliveries),
                  and what it sends when it becomes leader.
- ``records``     what only a cluster records (a closed connection, a node
                  gone, a node back, notifications confirmed) and the
                  replicated outbox.
- ``node``        one node's life: join (snapshot, then the log after it), the
                  reader, a clean stop, what ``get_cluster`` shows.
- ``membership``  who is alive: stamps in Redis, the leader's judgement of who
                  is gone, when a node is forgotten.
- ``snapshots``   the snapshot in Redis, and trimming the log after it.
- ``tasks``       stopping tasks whose cancellation a Redis call may swallow.
"""
