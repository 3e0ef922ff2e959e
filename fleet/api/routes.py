"""The route table of Azure Batch's REST API (version 2025-06-01; any ``api-version`` is
accepted): each operation's method, path, handler and Azure's operation id. The app and
the OpenAPI document are both built from it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from fleet.api import applications, certificates, job_schedules, jobs, nodes, pools, tasks
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
_NODE = _POOL + "/nodes/{nodeId}"
_SCHEDULE = "/jobschedules/{jobScheduleId}"
_CERT = "/certificates(thumbprintAlgorithm={thumbprintAlgorithm},thumbprint={thumbprint})"

#: HEAD operations come before the GET of the same path: a GET route answers HEAD too.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/pools", pools.list_, "Pool_List", 200),
    Operation("POST", "/pools", pools.add, "Pool_Add", 201),
    Operation("HEAD", _POOL, pools.exists, "Pool_Exists", 200),
    Operation("GET", _POOL, pools.get, "Pool_Get", 200),
    Operation("DELETE", _POOL, pools.delete, "Pool_Delete", 202),
    Operation("POST", _POOL + "/resize", pools.resize, "Pool_Resize", 202),
    Operation("POST", _POOL + "/stopresize", pools.stop_resize, "Pool_StopResize", 202),
    Operation("PATCH", _POOL, pools.patch, "Pool_Patch", 200),
    Operation(
        "POST", _POOL + "/updateproperties", pools.update_properties, "Pool_UpdateProperties", 204
    ),
    Operation("POST", _POOL + "/removenodes", pools.remove_nodes, "Pool_RemoveNodes", 202),
    Operation(
        "POST", _POOL + "/enableautoscale", pools.enable_autoscale, "Pool_EnableAutoScale", 200
    ),
    Operation(
        "POST", _POOL + "/disableautoscale", pools.disable_autoscale, "Pool_DisableAutoScale", 200
    ),
    Operation(
        "POST",
        _POOL + "/evaluateautoscale",
        pools.evaluate_autoscale,
        "Pool_EvaluateAutoScale",
        200,
    ),
    Operation("GET", "/nodecounts", pools.node_counts, "Account_ListPoolNodeCounts", 200),
    Operation("GET", _POOL + "/nodes", nodes.list_, "ComputeNode_List", 200),
    Operation("GET", _NODE, nodes.get, "ComputeNode_Get", 200),
    Operation("POST", _NODE + "/reboot", nodes.reboot, "ComputeNode_Reboot", 202),
    Operation("POST", _NODE + "/reimage", nodes.reimage, "ComputeNode_Reimage", 202),
    Operation(
        "POST",
        _NODE + "/disablescheduling",
        nodes.disable_scheduling,
        "ComputeNode_DisableScheduling",
        200,
    ),
    Operation(
        "POST",
        _NODE + "/enablescheduling",
        nodes.enable_scheduling,
        "ComputeNode_EnableScheduling",
        200,
    ),
    Operation(
        "GET",
        _NODE + "/remoteloginsettings",
        nodes.remote_login_settings,
        "ComputeNode_GetRemoteLoginSettings",
        200,
    ),
    Operation("POST", _NODE + "/users", nodes.add_user, "ComputeNode_AddUser", 201),
    Operation("GET", _NODE + "/users", nodes.list_users, "ComputeNode_ListUsers", 200),
    Operation("PUT", _NODE + "/users/{userName}", nodes.update_user, "ComputeNode_UpdateUser", 200),
    Operation(
        "DELETE", _NODE + "/users/{userName}", nodes.delete_user, "ComputeNode_DeleteUser", 200
    ),
    Operation("GET", _NODE + "/files", nodes.list_files, "File_ListFromComputeNode", 200),
    Operation(
        "HEAD",
        _NODE + "/files/{filePath:path}",
        nodes.file_properties,
        "File_GetPropertiesFromComputeNode",
        200,
    ),
    Operation(
        "GET", _NODE + "/files/{filePath:path}", nodes.get_file, "File_GetFromComputeNode", 200
    ),
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
    Operation("POST", "/jobschedules", job_schedules.add, "JobSchedule_Add", 201),
    Operation("GET", "/jobschedules", job_schedules.list_, "JobSchedule_List", 200),
    Operation("HEAD", _SCHEDULE, job_schedules.exists, "JobSchedule_Exists", 200),
    Operation("GET", _SCHEDULE, job_schedules.get, "JobSchedule_Get", 200),
    Operation("PATCH", _SCHEDULE, job_schedules.patch, "JobSchedule_Patch", 200),
    Operation("PUT", _SCHEDULE, job_schedules.update, "JobSchedule_Update", 200),
    Operation("DELETE", _SCHEDULE, job_schedules.delete, "JobSchedule_Delete", 202),
    Operation("POST", _SCHEDULE + "/disable", job_schedules.disable, "JobSchedule_Disable", 204),
    Operation("POST", _SCHEDULE + "/enable", job_schedules.enable, "JobSchedule_Enable", 204),
    Operation(
        "POST", _SCHEDULE + "/terminate", job_schedules.terminate, "JobSchedule_Terminate", 202
    ),
    Operation("GET", _SCHEDULE + "/jobs", jobs.list_, "Job_ListFromJobSchedule", 200),
    Operation("GET", "/applications", applications.list_, "Application_List", 200),
    Operation("GET", "/applications/{applicationId}", applications.get, "Application_Get", 200),
    Operation("POST", "/certificates", certificates.add, "Certificate_Add", 201),
    Operation("GET", "/certificates", certificates.list_, "Certificate_List", 200),
    Operation("GET", _CERT, certificates.get, "Certificate_Get", 200),
    Operation("DELETE", _CERT, certificates.delete, "Certificate_Delete", 202),
    Operation(
        "POST",
        _CERT + "/canceldelete",
        certificates.cancel_deletion,
        "Certificate_CancelDeletion",
        204,
    ),
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
    return re.findall(r"\{(\w+)\}", path)
