"""The client's methods, one per message type, and ``track``; mixed into ``Client``,
which supplies ``send_event`` and ``request``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .tracking import Tracker


class Messages:
    if TYPE_CHECKING:

        async def send_event(
            self, body: dict[str, Any], wait: bool = True
        ) -> dict[str, Any] | None: ...

        async def request(self, body: dict[str, Any]) -> dict[str, Any]: ...

    # -- one method per message ----------------------------------------------------------
    async def update_status(
        self,
        job_id: str,
        status: str,
        progress: float | None = None,
        max_retries: int | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "update_status", "job_id": job_id, "status": status}
        _put(body, progress=progress, max_retries=max_retries, run_id=run_id)
        return await self.send_event(body)

    async def completed(
        self,
        job_id: str,
        duration_ms: float | None = None,
        resource_usage: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "job_completed", "job_id": job_id}
        _put(body, duration_ms=duration_ms, resource_usage=resource_usage, **extra)
        return await self.send_event(body)

    async def failed(
        self,
        job_id: str,
        error: str,
        retries: int = 0,
        max_retries: int | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "job_failed", "job_id": job_id, "error": error}
        _put(body, retries=retries, max_retries=max_retries, **extra)
        return await self.send_event(body)

    async def heartbeat(
        self, job_id: str, ttl_ms: int | None = None, run_id: str | None = None
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "heartbeat", "job_id": job_id}
        _put(body, ttl_ms=ttl_ms, run_id=run_id)
        return await self.send_event(body)

    async def register_job(self, job_id: str, **settings: Any) -> dict[str, Any]:
        return await self.request({"type": "register_job", "job_id": job_id, **settings})

    async def unregister_job(self, job_id: str) -> dict[str, Any]:
        return await self.request({"type": "unregister_job", "job_id": job_id})

    async def pause_job(self, job_id: str, **settings: Any) -> dict[str, Any]:
        return await self.request({"type": "pause_job", "job_id": job_id, **settings})

    async def resume_job(self, job_id: str) -> dict[str, Any]:
        return await self.request({"type": "resume_job", "job_id": job_id})

    async def get_stats(self) -> dict[str, Any]:
        return await self.request({"type": "get_stats"})

    async def get_job(self, job_id: str) -> dict[str, Any]:
        reply = await self.request({"type": "get_job", "job_id": job_id})
        job: dict[str, Any] = reply["job"]
        return job

    async def list_jobs(self, **query: Any) -> dict[str, Any]:
        return await self.request({"type": "list_jobs", **query})

    async def get_alerts(self, **query: Any) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = (await self.request({"type": "get_alerts", **query}))[
            "alerts"
        ]
        return alerts

    # -- tracking a run --------------------------------------------------------------------
    def track(
        self,
        job_id: str,
        max_retries: int | None = None,
        attempt: int = 0,
        retry_delay_s: float = 0.0,
    ) -> Tracker:
        return Tracker(self, job_id, max_retries, attempt, retry_delay_s)


def _put(body: dict[str, Any], **fields: Any) -> None:
    for name, value in fields.items():
        if value is not None:
            body[name] = value
