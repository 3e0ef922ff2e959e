"""A batch program on the azure-batch 15.x SDK, unmodified: pool, job, 250 tasks with the
SDK's create_tasks, poll until done, read a stdout, terminate and delete the job.

    python batch15.py URL ACCOUNT KEY POOL_NODES

Prints one JSON line with what it saw."""

import json
import sys
import time

from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential

url, account, key, nodes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = BatchClient(endpoint=url, credential=AzureNamedKeyCredential(account, key))

client.create_pool(
    models.BatchPoolCreateOptions(
        id="sdk15pool",
        vm_size="standard_d2s_v3",
        target_dedicated_nodes=nodes,
        task_slots_per_node=4,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(
                publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
            ),
            node_agent_sku_id="batch.node.ubuntu 22.04",
        ),
    )
)
client.create_job(
    models.BatchJobCreateOptions(id="sdk15job", pool_info=models.BatchPoolInfo(pool_id="sdk15pool"))
)
tasks = [
    models.BatchTaskCreateOptions(id=f"t{i}", command_line=f"/bin/sh -c 'echo task {i}'")
    for i in range(250)
]
added = client.create_tasks("sdk15job", tasks)
statuses = sorted({str(r.status) for r in added.result_values})
deadline = time.monotonic() + 240
while True:
    states = [t.state for t in client.list_tasks("sdk15job")]
    if len(states) == 250 and all(s == models.BatchTaskState.COMPLETED for s in states):
        break
    if time.monotonic() > deadline:
        sys.exit(f"tasks not done: {sorted(map(str, states))[:5]}")
    time.sleep(1)
exit_codes = sorted({t.execution_info.exit_code for t in client.list_tasks("sdk15job")})
stdout = b"".join(client.download_task_file("sdk15job", "t7", "stdout.txt")).decode()
props = client.get_task_file_properties("sdk15job", "t7", "stdout.txt")
pool = client.get_pool("sdk15pool")
# 15.1 does not export BatchJobTerminateOptions and cannot build a terminate request
# without options: its JSON form does
client.begin_terminate_job("sdk15job", {"terminateReason": "done"}, polling_interval=1).result()
state = str(client.get_job("sdk15job").state)
client.begin_delete_job("sdk15job", polling_interval=1).result()
gone = not any(j.id == "sdk15job" for j in client.list_jobs())
print(
    json.dumps(
        {
            "statuses": statuses,
            "added": len(added.result_values),
            "exitCodes": exit_codes,
            "stdout": stdout,
            "size": props.content_length,
            "poolState": str(pool.state),
            "vmSize": pool.vm_size,
            "jobStateAfterTerminate": state,
            "jobGone": gone,
        }
    )
)
