"""Drives a berth agent with the unchanged Azure Batch Python SDK 14.x and its
SharedKeyCredentials (account name and key): a job added, a task added and polled until it
completes, a filtered list paged by odata.nextLink (query parameters are signed), a
conditional GET, the pool,
its node and the counts; then a client with a wrong key, refused. Prints one JSON object of what it
saw; tests/tests/api_compat.rs asserts on it.

Usage: python batch14_sharedkey.py URL ACCOUNT KEY WRONG_KEY
"""

import json
import sys
import time

from azure.batch import BatchServiceClient
from azure.batch import models
from azure.batch.batch_auth import SharedKeyCredentials


def main():
    url, account, key, wrong_key = sys.argv[1:5]
    client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=url)
    pool = models.PoolInformation(pool_id="agentpool")
    for i in range(3):
        client.job.add(models.JobAddParameter(id="sk-%d" % i, pool_info=pool))
    client.task.add(
        "sk-0",
        models.TaskAddParameter(
            id="t1",
            command_line="/bin/sh -c 'exit 3'",
            container_settings=models.TaskContainerSettings(
                image_name="myimage", container_run_options="--network none"
            ),
        ),
    )
    deadline = time.time() + 120
    task = client.task.get("sk-0", "t1")
    while task.state != models.TaskState.completed and time.time() < deadline:
        time.sleep(0.3)
        task = client.task.get("sk-0", "t1")
    opts = models.JobListOptions(filter="startswith(id,'sk-')", max_results=1, select="id")
    seen = {
        "listed": [j.id for j in client.job.list(job_list_options=opts)],
        "task_state": str(task.state.value),
        "exit_code": task.execution_info.exit_code if task.execution_info else None,
    }
    job = client.job.get("sk-1")
    try:
        client.job.get("sk-1", job_get_options=models.JobGetOptions(if_none_match=job.e_tag))
        seen["not_modified"] = "answered"
    except models.BatchErrorException as e:
        seen["not_modified"] = e.response.status_code
    nodes = list(client.compute_node.list("agentpool"))
    counts = client.job.get_task_counts("sk-0")
    seen["pool"] = [client.pool.get("agentpool").id, [n.id for n in nodes]]
    seen["node_state"] = client.compute_node.get("agentpool", nodes[0].id).state.value
    seen["node_counts"] = [[c.pool_id, c.dedicated.total] for c in client.account.list_pool_node_counts()]
    seen["task_counts"] = [counts.task_counts.completed, counts.task_counts.failed]
    client.job.delete("sk-2")

    wrong = BatchServiceClient(SharedKeyCredentials(account, wrong_key), batch_url=url)
    try:
        list(wrong.job.list())
        seen["wrong_key"] = "accepted"
    except models.BatchErrorException as e:
        seen["wrong_key"] = [e.response.status_code, e.error.code]
        seen["wrong_key_detail"] = [v.value for v in (e.error.values or [])]
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
