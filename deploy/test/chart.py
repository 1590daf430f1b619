#!/usr/bin/env python3
"""Renders deeb's Helm chart for several value sets with Helm's own code
(helm-python-sdk), lints it, validates every rendered object strictly
against the Kubernetes schemas (kubernetes-validate), lints the YAML
(yamllint), checks what the chart promises (probes, preStop, security
context, discovery) and that values.schema.json refuses wrong values.

    deploy/test/run-chart-tests        (makes the venv, then runs this)

Exits non-zero on any finding. `render()` is also the rehearsal's source
of the StatefulSet.
"""
import json
import pathlib
import subprocess
import sys

import helm_python as helm
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).resolve().parents[1] / "helm" / "deeb"
KUBE_VERSION = "1.32.0"
# Custom resources: not in the Kubernetes schemas (their CRDs define them).
NOT_IN_KUBERNETES = {("monitoring.coreos.com/v1", "ServiceMonitor")}

VALUE_SETS = {
    "default (3 pods)": {},
    "5 pods, 5 founders, hard anti-affinity": {
        "replicaCount": 5,
        "cluster": {"initialMembers": 5},
        "antiAffinity": "hard",
        "persistence": {"size": "50Gi", "storageClass": "fast-ssd"},
    },
    "TLS, users file, ServiceMonitor": {
        "tls": {
            "client": {"enabled": True, "secretName": "deeb-client-tls", "requireClientCertificates": True},
            "peer": {"enabled": True, "secretName": "deeb-peer-tls"},
        },
        "auth": {"enabled": True, "secretName": "deeb-users"},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "extraArgs": ["--snapshot-interval", "20000"],
        "extraEnv": [{"name": "DEEB_REQUEST_TIMEOUT", "value": "20s"}],
    },
    "MySQL backend: a MariaDB sidecar per pod": {
        "mysql": {"enabled": True, "secretName": "deeb-mysql", "persistence": {"size": "20Gi"}},
    },
}

# Each must be refused, by the schema or by the chart's own checks.
BAD_VALUES = {
    "replicaCount as a string": {"replicaCount": "three"},
    "zero replicas": {"replicaCount": 0},
    "port out of range": {"ports": {"client": 70000, "peer": 7100, "http": 4001}},
    "unknown anti-affinity": {"antiAffinity": "maybe"},
    "misspelt key": {"replicacount": 3},
    "bad volume size": {"persistence": {"size": "lots"}},
    "fewer pods than founders": {"replicaCount": 2},
    "client TLS without a secret": {"tls": {"client": {"enabled": True}}},
    "MySQL sidecar without a secret": {"mysql": {"enabled": True}},
    "MySQL database name with a quote": {"mysql": {"enabled": True, "secretName": "s", "database": "a'b"}},
}


def render(values, name="deeb", namespace="db"):
    """The chart's objects for `values`, as dictionaries."""
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(obj for obj in yaml.safe_load_all(text) if obj)
    return objects, manifests


def notes(values, name="deeb", namespace="db"):
    manifests = helm.Chart.load(CHART).render(values, name=name, namespace=namespace, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def statefulset(objects):
    return next(obj for obj in objects if obj["kind"] == "StatefulSet")


def check(condition, message, findings):
    if not condition:
        findings.append(message)


def promises(label, values, objects, findings):
    """What the chart says it does, checked on the rendered objects."""
    kinds = {obj["kind"] for obj in objects}
    for kind in ["StatefulSet", "Service", "PodDisruptionBudget"]:
        check(kind in kinds, f"{label}: no {kind}", findings)
    sts = statefulset(objects)
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    check(spec["podManagementPolicy"] == "Parallel", f"{label}: podManagementPolicy", findings)
    check(spec["replicas"] == values.get("replicaCount", 3), f"{label}: replicas", findings)
    headless = [obj for obj in objects if obj["kind"] == "Service" and obj["spec"].get("clusterIP") == "None"]
    check(len(headless) == 1 and headless[0]["spec"].get("publishNotReadyAddresses") is True,
          f"{label}: a headless Service publishing not-ready addresses", findings)
    check(headless and spec["serviceName"] == headless[0]["metadata"]["name"], f"{label}: serviceName", findings)
    check(container["livenessProbe"]["httpGet"]["path"] == "/livez", f"{label}: liveness on /livez", findings)
    check(container["startupProbe"]["httpGet"]["path"] == "/livez", f"{label}: startup probe on /livez", findings)
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{label}: readiness on /readyz", findings)
    pre_stop = container["lifecycle"]["preStop"]
    check("exec" not in pre_stop and "sleep" in pre_stop, f"{label}: preStop only waits (no membership change)",
          findings)
    check(pod["securityContext"].get("runAsNonRoot") is True, f"{label}: runAsNonRoot", findings)
    check(container["securityContext"].get("readOnlyRootFilesystem") is True, f"{label}: read-only root", findings)
    check(env.get("DEEB_ID_FROM_HOSTNAME") == "true", f"{label}: id from the pod's name", findings)
    founders = values.get("cluster", {}).get("initialMembers", 3)
    check((env.get("DEEB_PEERS_FROM_DNS") or "").endswith(f",replicas={founders}"), f"{label}: founders", findings)
    pdb = next(obj for obj in objects if obj["kind"] == "PodDisruptionBudget")
    check(pdb["spec"]["maxUnavailable"] == 1, f"{label}: PDB maxUnavailable 1", findings)
    tls = values.get("tls", {})
    mounts = {mount["name"] for mount in container["volumeMounts"]}
    check(("peer-tls" in mounts) == tls.get("peer", {}).get("enabled", False), f"{label}: peer TLS mount", findings)
    check(("DEEB_INSECURE_PEERS" in env) != tls.get("peer", {}).get("enabled", False),
          f"{label}: --insecure-peers exactly when peer TLS is off", findings)
    scheme = "HTTPS" if tls.get("client", {}).get("enabled") else "HTTP"
    check(container["readinessProbe"]["httpGet"]["scheme"] == scheme, f"{label}: probe scheme", findings)
    mysql = values.get("mysql", {}).get("enabled", False)
    names = [c["name"] for c in pod["containers"]]
    claims = [claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]]
    check(names == (["deeb", "mariadb"] if mysql else ["deeb"]), f"{label}: containers {names}", findings)
    check(("mysql" in claims) == mysql, f"{label}: a volume of its own for MariaDB", findings)
    check((env.get("DEEB_BACKEND") == "mysql") == mysql, f"{label}: --backend mysql exactly with the sidecar",
          findings)
    if mysql:
        url = env.get("DEEB_MYSQL_URL") or ""
        check(url.startswith("mysql://deeb:$(DEEB_MYSQL_PASSWORD)@127.0.0.1:3306/"),
              f"{label}: deeb reaches the sidecar on localhost with the Secret's password: {url}", findings)
        password = next((item for item in container["env"] if item["name"] == "DEEB_MYSQL_PASSWORD"), {})
        check("secretKeyRef" in password.get("valueFrom", {}), f"{label}: the password from the Secret", findings)
        names = [item["name"] for item in container["env"]]
        check(names.index("DEEB_MYSQL_PASSWORD") < names.index("DEEB_MYSQL_URL"),
              f"{label}: the password is defined before the URL that refers to it", findings)
        sidecar = pod["containers"][1]
        check("--bind-address=127.0.0.1" in sidecar["args"], f"{label}: MariaDB only on the pod's localhost",
              findings)
        check(any(obj["kind"] == "ConfigMap" for obj in objects), f"{label}: the init grant", findings)


def validate(label, objects, findings):
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        where = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
        if key in NOT_IN_KUBERNETES:
            print(f"   {where}: custom resource, not in the Kubernetes schemas (not validated)")
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            findings.append(f"{where}: {error.message} at {list(error.path)}")


def yaml_lint(label, manifests, findings):
    config = "{extends: default, rules: {line-length: {max: 200}, document-start: disable, indentation: {indent-sequences: whatever}}}"
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        lint = subprocess.run([sys.executable, "-m", "yamllint", "-d", config, "-"], input=text, text=True,
                              capture_output=True)
        if lint.returncode != 0:
            findings.append(f"{label}: yamllint {path}: {lint.stdout.strip()}")


def promises_catch_a_broken_chart():
    """The promise checks fed a StatefulSet that breaks them must fail it."""
    objects, _ = render({})
    objects = json.loads(json.dumps(objects))
    container = statefulset(objects)["spec"]["template"]["spec"]["containers"][0]
    statefulset(objects)["spec"]["podManagementPolicy"] = "OrderedReady"
    container["readinessProbe"]["httpGet"]["path"] = "/livez"
    container["lifecycle"]["preStop"] = {"exec": {"command": ["deeb", "nodes", "remove"]}}
    findings = []
    promises("broken", {}, objects, findings)
    wanted = ["podManagementPolicy", "readiness on /readyz", "preStop"]
    return all(any(word in finding for finding in findings) for word in wanted)


def validator_catches_a_bad_object():
    """The validator itself must fail a wrong object (a string for replicas,
    an unknown field), or its passes mean nothing."""
    objects, _ = render({})
    sts = json.loads(json.dumps(statefulset(objects)))
    sts["spec"]["replicas"] = "3"
    bad_type = False
    try:
        kubernetes_validate.validate(sts, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError:
        bad_type = True
    sts["spec"]["replicas"] = 3
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    unknown_field = False
    try:
        kubernetes_validate.validate(sts, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError:
        unknown_field = True
    return bad_type and unknown_field


def main():
    findings = []
    print(f"== chart {CHART} (Helm SDK {helm.helm_sdk_version()}, Kubernetes schemas {KUBE_VERSION})")
    report = helm.lint(str(CHART), strict=True, kube_version=f"v{KUBE_VERSION}")
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            findings.append(f"helm lint: {message}")
    findings.extend(f"helm lint: {error}" for error in report.get("errors", []))
    for message in report.get("messages", []):
        print(f"   helm lint --strict: {message}")
    for label, values in VALUE_SETS.items():
        objects, manifests = render(values)
        validate(label, objects, findings)
        promises(label, values, objects, findings)
        yaml_lint(label, manifests, findings)
        print(f"   {label}: {len(objects)} objects: " + ", ".join(sorted(o["kind"] for o in objects)))
    check("deeb nodes" in notes({}), "NOTES: scale-down steps", findings)
    for label, values in BAD_VALUES.items():
        try:
            render(values)
            findings.append(f"bad values accepted: {label}")
        except helm.HelmError as error:
            reason = " ".join(str(error).split())
            print(f"   refused as it should be: {label}: {reason[:150]}")
    check(validator_catches_a_bad_object(), "kubernetes-validate passed a broken StatefulSet", findings)
    check(promises_catch_a_broken_chart(), "the promise checks passed a broken StatefulSet", findings)
    print("   the promise checks fail a broken StatefulSet (OrderedReady, readiness on /livez, exec preStop): ok")
    print("   kubernetes-validate fails a broken StatefulSet (a string for replicas, an unknown field): ok")
    conclude("chart", findings)


def conclude(name, findings):
    """Prints the findings and exits 1 if there are any; else says ok."""
    if findings:
        print("FINDINGS:")
        for finding in findings:
            print(f"  - {finding}")
        sys.exit(1)
    print(f"== {name}: ok")


if __name__ == "__main__":
    main()
