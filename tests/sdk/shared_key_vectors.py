"""Signs fixed requests with the Azure Batch SDKs' own SharedKey signers and prints them as
JSON test vectors: agent/src/api/testdata/shared_key_vectors.json, which berth's verifier
(agent/src/api/shared_key.rs) must accept. Run with each SDK's virtual environment (made by
scripts/install-deps.sh) and merge:

    .tools/azure-batch-14/bin/python tests/sdk/shared_key_vectors.py 14 > /tmp/v14.json
    .tools/azure-batch-15/bin/python tests/sdk/shared_key_vectors.py 15 > /tmp/v15.json
    python3 tests/sdk/shared_key_vectors.py merge /tmp/v14.json /tmp/v15.json \
        > agent/src/api/testdata/shared_key_vectors.json

The key is a test key made for these vectors, good for nothing else.
"""

import json
import sys

ACCOUNT = "berthtest"
KEY = "YmVydGgtdGVzdC1rZXktbm90LWEtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDE="
DATE = "Tue, 01 Dec 2026 06:00:00 GMT"
BASE = "https://berthtest.example.invalid:8470"
JSON_TYPE = "application/json; odata=minimalmetadata; charset=utf-8"

# (name, method, path and query, extra headers, JSON body or None)
REQUESTS = [
    ("list jobs", "GET", "/jobs?api-version=2024-07-01.20.0", {}, None),
    (
        "filtered list",
        "GET",
        "/jobs?api-version=2024-07-01.20.0&%24filter=startswith%28id%2C%27sdk-%27%29%20and%20priority%20ge%2020"
        "&%24select=id%2Cpriority&maxresults=1&timeout=30",
        {"client-request-id": "9f6c1c4e-0000-4000-8000-000000000001", "return-client-request-id": "true"},
        None,
    ),
    ("add job", "POST", "/jobs?api-version=2025-06-01", {"Content-Type": JSON_TYPE},
     {"id": "j1", "poolInfo": {"poolId": "p"}}),
    ("terminate, no body", "POST", "/jobs/j1/terminate?api-version=2024-07-01.20.0", {}, None),
    ("delete", "DELETE", "/jobs/j1?api-version=2024-07-01.20.0", {}, None),
    ("conditional patch", "PATCH", "/jobs/j1?api-version=2024-07-01.20.0",
     {"Content-Type": JSON_TYPE, "If-Match": '"0x8DD1234"', "If-Unmodified-Since": DATE}, {"priority": 5}),
    ("file range", "GET", "/jobs/j1/tasks/t%201/files/wd/a%2Bb.txt?api-version=2024-07-01.20.0",
     {"ocp-range": "bytes=0-9", "If-Modified-Since": DATE}, None),
    ("head", "HEAD", "/jobs/j1/tasks/t1/files/stdout.txt?api-version=2024-07-01.20.0", {}, None),
]


def sdk14():
    import requests
    from azure.batch.batch_auth import SharedKeyAuth

    out = []
    for name, method, path, headers, body in REQUESTS:
        auth = SharedKeyAuth("Authorization", ACCOUNT, KEY)
        signed = {}
        sign = auth._sign_string
        auth._sign_string = lambda s, sign=sign: signed.setdefault("s", s) and sign(s)
        req = requests.Request(method, BASE + path, headers=dict(headers, **{"ocp-date": DATE}),
                               data=json.dumps(body) if body is not None else None)
        p = auth(req.prepare())
        out.append(vector("14: " + name, p.method, p.url, p.headers, signed["s"]))
    return out


def sdk15():
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.rest import HttpRequest
    from azure.batch._patch import BatchSharedKeyAuthPolicy

    out = []
    for name, method, path, headers, body in REQUESTS:
        policy = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(ACCOUNT, KEY))
        signed = {}
        sign = policy._sign_string
        policy._sign_string = lambda s, sign=sign: signed.setdefault("s", s) and sign(s)
        kw = {"json": body} if body is not None else {}
        req = HttpRequest(method, BASE + path, headers=dict(headers, **{"ocp-date": DATE}), **kw)
        policy.on_request(PipelineRequest(req, PipelineContext(None)))
        out.append(vector("15: " + name, req.method, req.url, req.headers, signed["s"]))
    return out


def vector(name, method, url, headers, string_to_sign):
    return {
        "name": name,
        "method": method,
        "url": url,
        "headers": {k: v for k, v in headers.items()},
        "string_to_sign": string_to_sign,
    }


def main():
    if sys.argv[1] == "merge":
        vectors = []
        for f in sys.argv[2:]:
            with open(f) as fh:
                vectors += json.load(fh)
        print(json.dumps({"account": ACCOUNT, "key": KEY, "vectors": vectors}, indent=1))
        return
    print(json.dumps(sdk14() if sys.argv[1] == "14" else sdk15()))


if __name__ == "__main__":
    main()
