"""The route table of Azure Batch's REST API (version 2025-06-01; any ``api-version`` is
accepted): each operation's method, path, handler and Azure's operation id. The app and
the OpenAPI document are both built from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fleet.api import jobs, pools, tasks
from fleet.api.context import Api
from fleet.api.wire import ApiRequest, Reply

Handler = Callable[[Api, ApiRequest], Reply]


@dataclass(frozen=True)
class Operation:
    """One REST operation."""

    method: str
    path: str  # with {name} parameters; {filePath:path} takes the rest of the path
    handler: Handler
    operation_id: str
    success: int  # the status Azure answers on success


_JOB = "/jobs/{jobId}"
_TASK = _JOB + "/tasks/{taskId}"
_POOL = "/pools/{poolId}"

#: HEAD operations come before the GET of the same path: a GET route answers HEAD too.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/pools", pools.list_, "Pool_List", 200),
    Operation("POST", "/pools", pools.add, "Pool_Add", 201),
    Operation("HEAD", _POOL, pools.exists, "Pool_Exists", 200),
    Operation("GET", _POOL, pools.get, "Pool_Get", 200),
    Operation("DELETE", _POOL, pools.delete, "Pool_Delete", 202),
    Operation("POST", _POOL + "/resize", pools.resize, "Pool_Resize", 202),
    Operation("POST", _POOL + "/stopresize", pools.stop_resize, "Pool_StopResize", 202),
    Operation("GET", _POOL + "/nodes", pools.list_nodes, "ComputeNode_List", 200),
    Operation("GET", _POOL + "/nodes/{nodeId}", pools.get_node, "ComputeNode_Get", 200),
    Operation("GET", "/jobs", jobs.list_, "Job_List", 200),
    Operation("POST", "/jobs", jobs.add, "Job_Add", 201),
    Operation("GET", _JOB, jobs.get, "Job_Get", 200),
    Operation("PATCH", _JOB, jobs.patch, "Job_Patch", 200),
    Operation("PUT", _JOB, jobs.patch, "Job_Update", 200),
    Operation("DELETE", _JOB, jobs.delete, "Job_Delete", 202),
    Operation("POST", _JOB + "/disable", jobs.disable, "Job_Disable", 202),
    Operation("POST", _JOB + "/enable", jobs.enable, "Job_Enable", 202),
    Operation("POST", _JOB + "/terminate", jobs.terminate, "Job_Terminate", 202),
    Operation("GET", _JOB + "/taskcounts", jobs.task_counts, "Job_GetTaskCounts", 200),
    Operation(
        "GET",
        _JOB + "/jobpreparationandreleasetaskstatus",
        jobs.prep_release_status,
        "Job_ListPreparationAndReleaseTaskStatus",
        200,
    ),
    Operation("POST", _JOB + "/tasks", tasks.add, "Task_Add", 201),
    Operation("GET", _JOB + "/tasks", tasks.list_, "Task_List", 200),
    Operation("POST", _JOB + "/addtaskcollection", tasks.add_collection, "Task_AddCollection", 200),
    Operation("GET", _TASK, tasks.get, "Task_Get", 200),
    Operation("PUT", _TASK, tasks.update, "Task_Update", 200),
    Operation("DELETE", _TASK, tasks.delete, "Task_Delete", 200),
    Operation("POST", _TASK + "/terminate", tasks.terminate, "Task_Terminate", 204),
    Operation("POST", _TASK + "/reactivate", tasks.reactivate, "Task_Reactivate", 204),
    Operation("GET", _TASK + "/subtasksinfo", tasks.subtasks, "Task_ListSubtasks", 200),
    Operation("GET", _TASK + "/files", tasks.list_files, "File_ListFromTask", 200),
    Operation(
        "HEAD",
        _TASK + "/files/{filePath:path}",
        tasks.file_properties,
        "File_GetPropertiesFromTask",
        200,
    ),
    Operation("GET", _TASK + "/files/{filePath:path}", tasks.get_file, "File_GetFromTask", 200),
)


def openapi() -> dict[str, object]:
    """Return the OpenAPI 3 document of the operations."""
    paths: dict[str, dict[str, object]] = {}
    for op in OPERATIONS:
        path = op.path.replace(":path}", "}")
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_names(path)
        ]
        params.append(
            {"name": "api-version", "in": "query", "required": False, "schema": {"type": "string"}}
        )
        summary = (op.handler.__doc__ or "").strip().splitlines()[0]
        paths.setdefault(path, {})[op.method.lower()] = {
            "operationId": op.operation_id,
            "summary": summary,
            "parameters": params,
            "security": [{"SharedKey": []}],
            "responses": {
                str(op.success): {"description": "success"},
                "default": {"description": "an error in Azure Batch's OData envelope"},
            },
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "fleet: the Azure Batch REST API on your own hosts",
            "version": "2025-06-01",
        },
        "components": {
            "securitySchemes": {
                "SharedKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "SharedKey ACCOUNT:SIGNATURE, as Azure Batch",
                }
            }
        },
        "paths": paths,
    }


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
