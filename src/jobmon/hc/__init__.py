"""Healthchecks.io's APIs on jobmon: a check is a jobmon job.

- ``model``     the check record, its ping log and flips, and how Healthchecks'
                status (new, up, grace, down, paused, started) is read off the
                job's state with one clock reading.
- ``registry``  every check, kept in the store task (journaled like the rest):
                create, update, pause, resume, delete, and what a ping does.
- ``ping``      the pinging API (``/ping/...``), ``format`` and ``api`` the
                management API (``/api/v1|v2|v3/...``), ``badges`` the badges:
                aiohttp handlers that turn requests into protocol messages.
"""
