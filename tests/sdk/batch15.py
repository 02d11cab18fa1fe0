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
    container = models.BatchTaskContainerSettings(image_name="myimage", container_run_options="--network none")
    first = models.BatchJobCreateOptions(
        id=prefix + "0",
        pool_info=pool,
        job_preparation_task=models.BatchJobPreparationTask(
            command_line="/bin/sh -c 'echo prep'", container_settings=container
        ),
        job_release_task=models.BatchJobReleaseTask(command_line="/bin/true", container_settings=container),
    )
    client.create_job(first)
    for i in (1, 2):
        client.create_job(models.BatchJobCreateOptions(id="%s%d" % (prefix, i), pool_info=pool))
    client.create_task(
        prefix + "0",
        models.BatchTaskCreateOptions(
            id="t1", command_line="/bin/sh -c 'echo hi; exit 4'", container_settings=container
        ),
    )
    added = client.create_task_collection(
        prefix + "0",
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(id=t, command_line="/bin/true", container_settings=container)
                for t in ("t2", "t3")
            ]
        ),
    )
    deadline = time.time() + 120
    done = "state eq 'completed'"
    while len(list(client.list_tasks(prefix + "0", filter=done))) < 3 and time.time() < deadline:
        time.sleep(0.3)
    task = client.get_task(prefix + "0", "t1")
    listed = client.list_jobs(filter="startswith(id,'%s')" % prefix, max_results=1, select=["id"])
    seen = {
        "listed": [j.id for j in listed],
        "task_state": getattr(task.state, "value", task.state),
        "exit_code": task.execution_info.exit_code if task.execution_info else None,
    }
    seen["collection"] = sorted((r.task_id, getattr(r.status, "value", r.status)) for r in added.result_values)
    # The task's files: list, read, properties (HEAD).
    seen["files"] = sorted(f.name for f in client.list_task_files(prefix + "0", "t1"))
    seen["stdout"] = b"".join(client.download_task_file(prefix + "0", "t1", "stdout.txt")).decode()
    props = client.get_task_file_properties(prefix + "0", "t1", "stdout.txt")
    seen["stdout_length"] = int(props.content_length)
    seen["prep"] = [
        getattr(p.job_preparation_task_execution_info.state, "value", None)
        for p in client.list_job_preparation_and_release_task_status(prefix + "0")
    ]
    # Without options the SDK cannot build the request (no content type): it sends a reason.
    reason = models._models.BatchJobTerminateOptions(termination_reason="done")  # not exported
    client.begin_terminate_job(prefix + "1", options=reason, polling_interval=1).result()
    seen["terminated"] = getattr(client.get_job(prefix + "1").state, "value", None)
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
