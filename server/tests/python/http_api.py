"""deeb's HTTP API checked by other authors' tools against live nodes:

- the OpenAPI document validates as OpenAPI 3 (openapi-spec-validator);
- /metrics parses as OpenMetrics (prometheus_client's parser) and its
  request counter moves after a write;
- schemathesis runs property-based requests against each node for a
  bounded number of examples: no server error (5xx), no undocumented status
  code or content type, no response that violates the schema, no
  schema-violating request accepted.

Each checker is first fed a bad case and must fail it.

Usage: http_api.py HOST PORT [PORT...]
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.request

from openapi_spec_validator import validate
from prometheus_client.openmetrics.parser import text_string_to_metric_families

# Examples per operation per node: bounded, so CI stays fast.
EXAMPLES = 60
# Membership calls would change the cluster under test; the change stream
# (/api/v1/watch) never ends by itself (server/tests/watch.rs checks its
# answers, 200, 400 and 410).
EXCLUDED = "add-node|remove-node|transfer-leader|/api/v1/watch"


def fetch(url, body=None):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read().decode()


def fails(check, *args):
    try:
        check(*args)
    except Exception:  # noqa: BLE001 - any failure is the expected one
        return True
    return False


def parse_metrics(text):
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def http_writes(samples):
    key = ("deeb_requests_total", (("api", "http"), ("operation", "execute"), ("outcome", "ok")))
    return samples.get(key, 0)


def schemathesis(location, *extra):
    command = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"),
        "run",
        location,
        "--checks", "all",
        # A schema-valid SQL string is rarely valid SQL: such a request is
        # rightly answered 400 with the typed error.
        "--exclude-checks", "positive_data_acceptance",
        "--exclude-path-regex", EXCLUDED,
        "--max-examples", str(EXAMPLES),
        "--seed", "20261129",
        "--generation-database", "none",
        "--workers", "1",
        "--no-color",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def main():
    host, ports = sys.argv[1], sys.argv[2:]
    base = f"http://{host}:{ports[0]}"
    document = json.loads(fetch(f"{base}/openapi.json"))

    # OpenAPI 3: the document validates; a broken one does not.
    broken = json.loads(json.dumps(document))
    broken["paths"]["/db/query"]["get"]["responses"] = "not a responses object"
    if not fails(validate, broken):
        sys.exit("openapi-spec-validator accepted a broken document")
    validate(document)
    print(f"OpenAPI {document['openapi']} document valid: {len(document['paths'])} paths")

    # Metrics: the exposition parses; a malformed one does not; the write
    # counter moves.
    if not fails(lambda: parse_metrics('deeb_broken{api="http" 1\n# EOF\n')):
        sys.exit("the OpenMetrics parser accepted a malformed exposition")
    before = http_writes(parse_metrics(fetch(f"{base}/metrics")))
    fetch(f"{base}/db/execute", json.dumps(["CREATE TABLE IF NOT EXISTS metrics_probe (x)"]).encode())
    samples = parse_metrics(fetch(f"{base}/metrics"))
    after = http_writes(samples)
    if after != before + 1:
        sys.exit(f"the HTTP write counter went from {before} to {after}, not up by one")
    print(f"/metrics parses: {len(samples)} samples; HTTP writes {before} -> {after}")

    # schemathesis: it must catch a schema that lies (the 400 that
    # /api/v1/status gives for a bad parameter left undocumented) ...
    lying = json.loads(json.dumps(document))
    del lying["paths"]["/api/v1/status"]["get"]["responses"]["400"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(lying, file)
    try:
        caught = schemathesis(file.name, "--url", base, "--include-path", "/api/v1/status")
    finally:
        os.unlink(file.name)
    if caught.returncode == 0:
        sys.exit("schemathesis passed a schema that leaves a status code undocumented:\n" + caught.stdout)
    print("schemathesis catches an undocumented status code, as it must")
    # ... and then pass the real one on every node given.
    for port in ports:
        run = schemathesis(f"http://{host}:{port}/openapi.json")
        summary = [line for line in run.stdout.splitlines() if "generated" in line]
        if run.returncode != 0:
            sys.exit(f"schemathesis against port {port} failed:\n{run.stdout}\n{run.stderr}")
        print(f"schemathesis against port {port}: {summary[-1].strip() if summary else 'passed'}")


if __name__ == "__main__":
    main()
