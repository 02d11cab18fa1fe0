"""Drives a berth agent with the unchanged Azure Batch Python SDK 14.x (msrest) and a bearer
token: jobs added, a filtered list paged by odata.nextLink, a GET's eTag/lastModified/url,
a conditional PATCH, a delete. Prints one JSON object of what it saw; the Rust test
(tests/tests/api_compat.rs) asserts on it.

Usage: python batch14.py URL TOKEN
"""

import json
import sys

from azure.batch import BatchServiceClient
from azure.batch import models
from msrest.authentication import BasicTokenAuthentication


def main():
    url, token = sys.argv[1], sys.argv[2]
    client = BatchServiceClient(
        BasicTokenAuthentication({"access_token": token}), batch_url=url
    )
    pool = models.PoolInformation(pool_id="agentpool")
    for i in range(5):
        client.job.add(models.JobAddParameter(id="sdk-%d" % i, pool_info=pool, priority=i * 10))
    client.job.add(models.JobAddParameter(id="other", pool_info=pool))

    # One job a page: the SDK follows odata.nextLink for the rest.
    opts = models.JobListOptions(
        filter="startswith(id,'sdk-') and priority ge 20", max_results=1, select="id,priority"
    )
    listed = [(j.id, j.priority) for j in client.job.list(job_list_options=opts)]

    raw = client.job.get("sdk-1", raw=True)
    job = raw.output
    seen = {
        "listed": listed,
        "etag": job.e_tag,
        "etag_header": raw.headers.get("ETag"),
        "last_modified": job.last_modified.isoformat() if job.last_modified else None,
        "url": job.url,
        "request_id": raw.headers.get("request-id"),
    }

    # A stale ETag: Batch's 412 ConditionNotMet, as a BatchErrorException.
    client.job.patch(
        "sdk-1",
        models.JobPatchParameter(priority=99),
        job_patch_options=models.JobPatchOptions(if_match=job.e_tag),
    )
    try:
        client.job.patch(
            "sdk-1",
            models.JobPatchParameter(priority=5),
            job_patch_options=models.JobPatchOptions(if_match=job.e_tag),
        )
        seen["stale_patch"] = "accepted"
    except models.BatchErrorException as e:
        seen["stale_patch"] = e.error.code
    seen["priority_after"] = client.job.get("sdk-1").priority

    try:
        list(client.job.list(job_list_options=models.JobListOptions(filter="nosuch eq 1")))
        seen["bad_filter"] = "accepted"
    except models.BatchErrorException as e:
        seen["bad_filter"] = e.error.code
        seen["bad_filter_message"] = e.error.message.value

    client.job.delete("other")
    seen["after_delete"] = sorted(j.id for j in client.job.list())
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
