"""Drives a berth agent over HTTPS with the unchanged Azure Batch Python SDK 15.x
(azure-core), whose token credential refuses plain HTTP: with a token credential, or with
the account name and key (AzureNamedKeyCredential, SharedKey). Jobs created, a container
task created and polled to its exit code, a filtered list paged by odata.nextLink, the
pool, its node and the counts read, a job deleted; a wrong key refused. Prints one JSON object of what it saw;
tests/tests/api_compat.rs asserts on it.

Usage: python batch15.py URL CA_FILE token TOKEN
       python batch15.py URL CA_FILE sharedkey ACCOUNT KEY WRONG_KEY
"""

import json
import sys
import time

from azure.batch import BatchClient, models
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError


class FileToken:
    """A TokenCredential of a fixed token (berth's token_file)."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


def main():
    url, ca, mode = sys.argv[1:4]
    if mode == "token":
        cred = FileToken(sys.argv[4])
    else:
        account, key, wrong_key = sys.argv[4:7]
        cred = AzureNamedKeyCredential(account, key)
    client = BatchClient(url, cred, connection_verify=ca)
    prefix = "b15%s-" % mode
    pool = models.BatchPoolInfo(pool_id="agentpool")
    for i in range(3):
        client.create_job(models.BatchJobCreateOptions(id="%s%d" % (prefix, i), pool_info=pool))
    client.create_task(
        prefix + "0",
        models.BatchTaskCreateOptions(
            id="t1",
            command_line="/bin/sh -c 'exit 4'",
            container_settings=models.BatchTaskContainerSettings(
                image_name="myimage", container_run_options="--network none"
            ),
        ),
    )
    deadline = time.time() + 120
    task = client.get_task(prefix + "0", "t1")
    while task.state != models.BatchTaskState.COMPLETED and time.time() < deadline:
        time.sleep(0.3)
        task = client.get_task(prefix + "0", "t1")
    listed = client.list_jobs(filter="startswith(id,'%s')" % prefix, max_results=1, select=["id"])
    seen = {
        "listed": [j.id for j in listed],
        "task_state": getattr(task.state, "value", task.state),
        "exit_code": task.execution_info.exit_code if task.execution_info else None,
    }
    # The node's pool, its node, the counts.
    pool_ = client.get_pool("agentpool")
    nodes = list(client.list_nodes("agentpool"))
    node = client.get_node("agentpool", nodes[0].id)
    counts = client.get_job_task_counts(prefix + "0")
    seen["pool"] = [pool_.id, pool_.task_slots_per_node, pool_.current_dedicated_nodes]
    seen["nodes"] = [n.id for n in nodes]
    seen["node"] = [node.id, node.is_dedicated]
    seen["node_counts"] = [[c.pool_id, c.dedicated.total] for c in client.list_pool_node_counts()]
    seen["task_counts"] = [counts.task_counts.completed, counts.task_counts.failed, counts.task_slot_counts.completed]
    # Polls the job until it is gone (Batch's long-running delete).
    client.begin_delete_job(prefix + "2", polling_interval=1).result()
    seen["after_delete"] = sorted(j.id for j in client.list_jobs(filter="startswith(id,'%s')" % prefix))
    if mode == "sharedkey":
        wrong = BatchClient(url, AzureNamedKeyCredential(account, wrong_key), connection_verify=ca)
        try:
            list(wrong.list_jobs())
            seen["wrong_key"] = "accepted"
        except HttpResponseError as e:
            seen["wrong_key"] = [e.status_code, e.error.code if e.error else None]
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
