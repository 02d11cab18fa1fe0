"""Drives `berth service` with the unchanged Azure Batch Python SDK 14.x and its
SharedKeyCredentials: a pool added and read, a job added on it, a task added, the jobs
listed with a signed $filter; then a client with a wrong key, refused. Prints one JSON
object of what it saw; tests/tests/service.rs asserts on it.

Usage: python service_sharedkey.py URL ACCOUNT KEY WRONG_KEY
"""

import json
import sys

from azure.batch import BatchServiceClient
from azure.batch import models
from azure.batch.batch_auth import SharedKeyCredentials


def main():
    url, account, key, wrong_key = sys.argv[1:5]
    client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=url)
    client.pool.add(
        models.PoolAddParameter(id="skpool", vm_size="standard_d2s_v3", task_slots_per_node=2)
    )
    client.job.add(
        models.JobAddParameter(id="skjob", pool_info=models.PoolInformation(pool_id="skpool"))
    )
    client.task.add("skjob", models.TaskAddParameter(id="t1", command_line="/bin/true"))
    opts = models.JobListOptions(filter="id eq 'skjob'", select="id")
    seen = {
        "pool": [client.pool.get("skpool").id, client.pool.get("skpool").task_slots_per_node],
        "jobs": [j.id for j in client.job.list(job_list_options=opts)],
        "task": client.task.get("skjob", "t1").state.value,
    }
    wrong = BatchServiceClient(SharedKeyCredentials(account, wrong_key), batch_url=url)
    try:
        list(wrong.job.list())
        seen["wrong_key"] = "accepted"
    except models.BatchErrorException as e:
        seen["wrong_key"] = [e.response.status_code, e.error.code]
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
