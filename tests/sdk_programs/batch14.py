"""A batch program on the legacy azure-batch 14.2 SDK, unmodified: pool, job, 250 tasks
with task.add_collection (which the SDK splits into calls of 100), poll until done, read a
stdout, terminate and delete the job.

    python batch14.py URL ACCOUNT KEY POOL_NODES

Prints one JSON line with what it saw."""

import json
import sys
import time

import azure.batch.models as batchmodels
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials

url, account, key, nodes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=url)

client.pool.add(
    batchmodels.PoolAddParameter(
        id="sdk14pool",
        vm_size="standard_d2s_v3",
        target_dedicated_nodes=nodes,
        task_slots_per_node=4,
        virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
            image_reference=batchmodels.ImageReference(
                publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
            ),
            node_agent_sku_id="batch.node.ubuntu 22.04",
        ),
    )
)
client.job.add(
    batchmodels.JobAddParameter(
        id="sdk14job", pool_info=batchmodels.PoolInformation(pool_id="sdk14pool")
    )
)
tasks = [
    batchmodels.TaskAddParameter(id=f"t{i}", command_line=f"/bin/sh -c 'echo task {i}'")
    for i in range(250)
]
added = client.task.add_collection("sdk14job", tasks)
statuses = sorted({str(r.status) for r in added.value})
deadline = time.monotonic() + 240
while True:
    states = [t.state for t in client.task.list("sdk14job")]
    if len(states) == 250 and all(s == batchmodels.TaskState.completed for s in states):
        break
    if time.monotonic() > deadline:
        sys.exit(f"tasks not done: {sorted(map(str, states))[:5]}")
    time.sleep(1)
exit_codes = sorted({t.execution_info.exit_code for t in client.task.list("sdk14job")})
stdout = b"".join(client.file.get_from_task("sdk14job", "t7", "stdout.txt")).decode()
props = client.file.get_properties_from_task("sdk14job", "t7", "stdout.txt", raw=True)
pool = client.pool.get("sdk14pool")
client.job.terminate("sdk14job")
deadline = time.monotonic() + 60
while str(client.job.get("sdk14job").state) not in ("JobState.completed", "completed"):
    if time.monotonic() > deadline:
        sys.exit("job did not complete after terminate")
    time.sleep(0.5)
client.job.delete("sdk14job")
deadline = time.monotonic() + 60
while any(j.id == "sdk14job" for j in client.job.list()):
    if time.monotonic() > deadline:
        sys.exit("job not deleted")
    time.sleep(0.5)
print(
    json.dumps(
        {
            "statuses": statuses,
            "added": len(added.value),
            "exitCodes": exit_codes,
            "stdout": stdout,
            "size": int(props.headers["Content-Length"]),
            "poolState": str(pool.state),
            "vmSize": pool.vm_size,
            "jobGone": True,
        }
    )
)
