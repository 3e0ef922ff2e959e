"""fleet's error tree: every failure a user can hit, with a stable code and exit status.

    FleetError                      exit 1  (operation failed)
    ├── BadInput                    exit 2  (bad spec, inventory, name, flag)
    ├── NotFound                    exit 3  (no such host, pool, node, job, task, file)
    ├── Conflict                    exit 4  (exists already, in use, wrong state)
    ├── TimedOut                    exit 5  (a wait ran out of time)
    ├── ControllerStorageError      exit 1  (the controller's own disk: full, read-only)
    └── RemoteError                 exit 1  (something on a node or the link to it)
        ├── HostKeyMismatch         a node presented a key other than the recorded one
        ├── HostKeyUnknown          strict policy and no key recorded yet
        ├── Unreachable             could not connect, or the connection died
        ├── AuthenticationFailed    the node refused our credentials
        └── AgentError              the node agent reported a failure

Each error carries a stable ``code`` (CamelCase, as Azure Batch names its error
codes), an optional ``target`` (the object, such as ``task J/T``) and ``field``
(such as ``taskSlotsPerNode``). The CLI prints ``code``, ``target`` and the message
to stderr and exits with ``exit_status``.
"""

from __future__ import annotations

import errno
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_TIMED_OUT = 5


class FleetError(Exception):
    """Base of every error fleet raises on purpose."""

    code = "OperationFailed"
    exit_status = EXIT_FAILED

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        target: str | None = None,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.target = target
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """Return the error as the JSON object the CLI prints with ``-o json``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            out["target"] = self.target
        if self.field:
            out["field"] = self.field
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        where = " ".join(p for p in (self.target, self.field and f"field {self.field}") if p)
        return f"{where}: {self.message}" if where else self.message


def failure_of(exc: BaseException) -> dict[str, str]:
    """Return ``{"code", "message"}`` describing ``exc`` as an exit record's ``error``:
    a fleet error's own code, or ``InternalError`` for anything unexpected (a bug)."""
    if isinstance(exc, FleetError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "InternalError", "message": f"fleet failed while handling this: {exc!r}"}


class BadInput(FleetError):
    code = "InvalidInput"
    exit_status = EXIT_BAD_INPUT


class NotFound(FleetError):
    code = "NotFound"
    exit_status = EXIT_NOT_FOUND


class Conflict(FleetError):
    code = "Conflict"
    exit_status = EXIT_CONFLICT


class TimedOut(FleetError):
    code = "TimedOut"
    exit_status = EXIT_TIMED_OUT


class ControllerStorageError(FleetError):
    """The controller could not write its own files or database (code ``ControllerDiskFull``
    when the disk or quota is full): the controller's problem, never a node's."""

    code = "ControllerStorageError"


#: errno values that mean the controller's own storage failed, not a node or the network.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def storage_error(exc: OSError, what: str) -> ControllerStorageError:
    """Return the ControllerStorageError for an OSError whose errno is in STORAGE_ERRNOS."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return ControllerStorageError(
        f"the controller cannot write {what}: {exc.strerror or exc}",
        code="ControllerDiskFull" if full else "ControllerStorageError",
    )


class RemoteError(FleetError):
    code = "RemoteError"


class HostKeyMismatch(RemoteError):
    code = "HostKeyMismatch"


class HostKeyUnknown(RemoteError):
    code = "HostKeyUnknown"


class Unreachable(RemoteError):
    code = "NodeUnreachable"


class AuthenticationFailed(RemoteError):
    code = "AuthenticationFailed"


class AgentError(RemoteError):
    code = "AgentError"
