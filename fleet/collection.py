"""Collecting a finished attempt: its stdout, stderr and exit record into the controller's
store, its output files into the file store, then its completion handed back.

The exit record read back from the node is the truth; a full controller disk is retried
with backoff until space returns (nothing is lost); a lost connection leaves the
attempt to the next reconcile with its node; anything unexpected completes the
attempt with ``InternalError``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fleet import task_io
from fleet.attempts import Attempt, internal_error
from fleet.errors import (
    STORAGE_ERRNOS,
    ControllerStorageError,
    FleetError,
    RemoteError,
    storage_error,
)
from fleet.service.tasks import COLLECTED_FILES
from fleet.settings import Settings

if TYPE_CHECKING:
    from fleet.node_link import NodeLink

log = logging.getLogger(__name__)

#: Longest wait before collecting again after the controller's disk was full.
COLLECT_RETRY_MAX = 30.0


class Collector:
    """Collects finished attempts; ``finish(att, record, files)`` queues each completion
    (``files``: small output files to store with it, or None when they were written to
    the task's directory under ``task_files/``)."""

    def __init__(
        self,
        settings: Settings,
        inflight: dict[str, dict[str, Attempt]],
        finish: Callable[[Attempt, dict[str, Any], dict[str, bytes] | None], None],
    ) -> None:
        self.settings = settings
        self._inflight = inflight
        self._finish = finish

    def collect_inline(self, att: Attempt, files: dict[str, str | None] | None) -> bool:
        """Queue at once, without I/O, the completion of an attempt whose stdout, stderr and
        exit record all came inline with its exit event and that has no outputFiles: the
        files go to the database with the completion. Return False when that does not
        apply (then :meth:`collect` fetches what is missing)."""
        if att.output_files or not files or any(files.get(n) is None for n in COLLECTED_FILES):
            return False
        try:
            contents = {name: base64.b64decode(files[name] or "") for name in COLLECTED_FILES}
        except ValueError:
            return False
        record = _own_record(contents["exit.json"], att)
        if record is None:  # not this attempt's: read it back from the node
            return False
        self._finish(att, record, contents)
        return True

    async def collect(
        self,
        link: NodeLink,
        att: Attempt,
        record: dict[str, Any],
        files: dict[str, str | None] | None = None,
    ) -> None:
        """Collect a finished attempt (see :meth:`_collect_once`), then queue its completion.

        When the controller's own disk is full, collection is retried with backoff until
        space returns; a lost connection leaves the attempt to the next reconcile with the
        node; any other failure completes the attempt with the reason in its failureInfo."""
        delay = 1.0
        while True:
            try:
                record = await self._collect_once(link, att, record, files)
                break
            except (ControllerStorageError, OSError) as exc:
                if isinstance(exc, OSError):
                    if exc.errno not in STORAGE_ERRNOS:
                        record = internal_error(att, exc, record)
                        break
                    exc = storage_error(exc, "the task's output")
                log.error(
                    "task %s: %s (%s); collecting again in %.0f s", att.key, exc, exc.code, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, COLLECT_RETRY_MAX)
                if self._inflight.get(att.node_id, {}).get(att.key) is not att:
                    return  # requeued or deleted meanwhile
            except FleetError as exc:
                log.warning("task %s: output not collected yet: %s", att.key, exc)
                att.collecting = False  # the next reconcile with the node collects it
                return
            except Exception as exc:
                record = internal_error(att, exc, record)
                break
        self._finish(att, record, None)

    async def _collect_once(
        self,
        link: NodeLink,
        att: Attempt,
        record: dict[str, Any],
        files: dict[str, str | None] | None,
    ) -> dict[str, Any]:
        """Copy the task's stdout, stderr and exit record into the controller's store and its
        outputFiles into the file store; return the exit record to complete it with.

        The exit record read back from the node is the truth; the event's copy is only
        used when the file cannot be read (any process of the login user could send an
        event). Files the agent read from the task dir and sent inline with the exit event
        (``files``: small ones as base64; None for one too large) are written as they
        came; the rest are fetched over SFTP. A file the task never wrote is skipped."""
        conn = link.conn
        root = link.agent.hello.get("root") if link.agent else None
        dest = self.settings.task_files / att.job_id / att.task_id
        if conn is None or root is None:
            raise RemoteError("node disconnected before output was collected")
        dest.mkdir(parents=True, exist_ok=True)
        inline = files if files and files.get("exit.json") else {}
        fetch = [name for name in COLLECTED_FILES if not inline or inline.get(name, "") is None]
        for name, data in inline.items():
            if name in COLLECTED_FILES and data is not None:
                (dest / name).write_bytes(base64.b64decode(data))
        await asyncio.gather(
            *(
                _download_if_present(conn, f"{root}/{att.task_dir}/{name}", str(dest / name))
                for name in fetch
            )
        )
        record = _record_on_disk(dest, att) or record
        if att.output_files:
            ok = record.get("exitCode") == 0 and not record.get("error")
            try:
                await task_io.save_outputs(
                    conn, self.settings, root, att.task_dir, att.output_files, ok
                )
            except FleetError as exc:
                if exc.code != "FileUploadError":
                    raise
                record = {**record, "error": {"code": exc.code, "message": exc.message}}
        return record


async def _download_if_present(conn: Any, remote: str, local: str) -> None:
    try:
        await conn.download(remote, local)
    except RemoteError as exc:
        if exc.code != "FileNotFound":
            raise


def _record_on_disk(dest: Any, att: Attempt) -> dict[str, Any] | None:
    try:
        return _own_record((dest / "exit.json").read_bytes(), att)
    except OSError:
        return None


def _own_record(data: bytes, att: Attempt) -> dict[str, Any] | None:
    """Return the exit record in ``data`` if it is the record of ``att``, else None."""
    try:
        record = json.loads(data)
    except ValueError:
        return None
    if (
        isinstance(record, dict)
        and record.get("attempt") == att.attempt
        and record.get("key") == att.key
    ):
        return record
    return None
