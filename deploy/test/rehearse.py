#!/usr/bin/env python3
"""Rehearses deeb's StatefulSet as real processes: no Kubernetes here, so
the chart's rendered StatefulSet (container args and environment, probes,
preStop, grace period) is played by `deeb serve` processes, one per "pod",
each in a network namespace of its own with the pod's IP, the pod's host
name (a UTS namespace) and the headless service's DNS names in its hosts
file (published when the pod exists, as `publishNotReadyAddresses` does).

Scenario, with a client writing all along through the "Service" (any
ready pod) and every acknowledged write checked at the end:
  1. cold start: all pods at once (podManagementPolicy Parallel);
  2. kill -9 of one pod, restarted on its data;
  3. rolling restart, highest ordinal first, each pod deleted as the
     kubelet does (out of the Service, preStop sleep, SIGTERM, SIGKILL at
     the grace period) and waited for on /readyz before the next;
  4. scale to 5 (new ordinals join), then back to 3 as the chart's NOTES
     say (`deeb nodes remove` of the highest ordinals first, then scale,
     their volumes deleted).
Prints the figures (time to ready, write errors per phase) and fails on
any lost acknowledged write, any replica that differs, or a pod that is
not ready in time. Needs root, iproute2 and util-linux's unshare.

    deploy/test/rehearse.py --deeb target/release/deeb
"""
import argparse
import http.client
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import chart  # noqa: E402  (the same rendering the chart tests check)

RELEASE, NAMESPACE = "deeb", "db"
BRIDGE, SUBNET = "deebrh0", "10.77.0"
# Bounds: every wait ends.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 5.0
# How long after the others the last founding pod appears at cold start.
LATE_POD_SECONDS = 2.0


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def pod_ip(ordinal):
    return f"{SUBNET}.{10 + ordinal}"


class Pods:
    """The StatefulSet's pods as processes, and the network they live on."""

    def __init__(self, deeb, statefulset, work):
        self.deeb = os.path.abspath(deeb)
        self.work = work
        spec = statefulset["spec"]
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        self.name = statefulset["metadata"]["name"]
        self.args = container["args"]
        self.env = {item["name"]: item["value"] for item in container["env"]}
        self.grace = pod["terminationGracePeriodSeconds"]
        self.pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        self.http_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
        self.client_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "client")
        self.peer_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "peer")
        self.mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data")
        # Secret volumes: their mount paths stand for files under work/.
        secrets = {volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
        self.secret_dirs = {mount["mountPath"]: pathlib.Path(work) / "secrets" / secrets[mount["name"]]
                            for mount in container["volumeMounts"] if mount["name"] in secrets}
        self.tls_ca = None
        self.startup_probe = container["startupProbe"]
        self.readiness_probe = container["readinessProbe"]
        self.probers = {}
        peers = self.env["DEEB_PEERS_FROM_DNS"].split(",")[0]
        self.domain = peers.split(":")[0].split(".", 1)[1]
        self.processes = {}
        self.published = set()
        self.ready = set()  # the client Service's endpoints
        self.lock = threading.Lock()

    # Network: a bridge on this host, one namespace per pod.
    def netns(self, ordinal):
        return f"deeb-rh-{ordinal}"

    def host(self, ordinal):
        return f"{self.name}-{ordinal}.{self.domain}"

    def create_network(self):
        self.destroy_network()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")

    def add_pod_network(self, ordinal):
        ns, veth = self.netns(ordinal), f"drh{ordinal}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", BRIDGE, "up")
        sh("ip", "-n", ns, "addr", "add", f"{pod_ip(ordinal)}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        etc = pathlib.Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        # Names not in the hosts file fail at once (nothing answers DNS).
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (etc / "hosts").write_text("")
        self.published.add(ordinal)
        self.write_hosts()

    def remove_pod_network(self, ordinal):
        sh("ip", "netns", "del", self.netns(ordinal), check=False)
        shutil.rmtree(pathlib.Path("/etc/netns") / self.netns(ordinal), ignore_errors=True)
        self.published.discard(ordinal)
        self.write_hosts()

    def write_hosts(self):
        """Every pod's hosts file names every published pod (rewritten in
        place: `ip netns exec` bind-mounted it over /etc/hosts)."""
        lines = ["127.0.0.1 localhost"]
        lines += [f"{pod_ip(o)} {self.host(o)} {self.name}-{o}" for o in sorted(self.published)]
        for ordinal in self.published:
            with open(pathlib.Path("/etc/netns") / self.netns(ordinal) / "hosts", "w") as hosts:
                hosts.write("\n".join(lines) + "\n")

    def destroy_network(self):
        for ordinal in range(16):
            if os.path.exists(f"/run/netns/{self.netns(ordinal)}"):
                self.remove_pod_network(ordinal)
        sh("ip", "link", "del", BRIDGE, check=False)

    # Pods.
    def volume(self, ordinal):
        return pathlib.Path(self.work) / f"data-{self.name}-{ordinal}"

    def start(self, ordinal):
        if ordinal not in self.published:
            self.add_pod_network(ordinal)
        volume = self.volume(ordinal)
        volume.mkdir(exist_ok=True)
        tmp = pathlib.Path(self.work) / f"tmp-{ordinal}"
        tmp.mkdir(exist_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for key, value in self.env.items():
            env[key] = value.replace(self.mount, str(volume)) if key == "DEEB_DATA_DIR" else value
            for mount, directory in self.secret_dirs.items():
                if value.startswith(mount + "/"):
                    env[key] = str(directory) + value[len(mount):]
        env["TMPDIR"] = str(tmp)
        log = open(pathlib.Path(self.work) / f"{self.name}-{ordinal}.log", "a")
        hostname = f"{self.name}-{ordinal}"
        command = ["ip", "netns", "exec", self.netns(ordinal), "unshare", "--uts", "--", "sh", "-c",
                   'hostname "$0" && exec "$@"', hostname, self.deeb, *self.args]
        self.processes[ordinal] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        stop = threading.Event()
        self.probers[ordinal] = stop
        threading.Thread(target=self.kubelet, args=(ordinal, stop), daemon=True).start()

    def kubelet(self, ordinal, stop):
        """The kubelet's probes of one pod, with the rendered settings: the
        startup probe until it passes, then the readiness probe, which puts
        the pod in the Service's endpoints or, after `failureThreshold`
        failures in a row, takes it out."""
        startup, readiness = self.startup_probe, self.readiness_probe
        for _ in range(startup["failureThreshold"]):
            if stop.is_set():
                return
            if self.probe(ordinal, startup["httpGet"]["path"])[0] == 200:
                break
            stop.wait(startup["periodSeconds"])
        failures = 0
        while not stop.is_set():
            status, _ = self.probe(ordinal, readiness["httpGet"]["path"], timeout=readiness["timeoutSeconds"])
            failures = 0 if status == 200 else failures + 1
            with self.lock:
                if stop.is_set():
                    return
                if status == 200:
                    self.ready.add(ordinal)
                elif failures >= readiness["failureThreshold"]:
                    self.ready.discard(ordinal)
            stop.wait(readiness["periodSeconds"])

    def unready(self, ordinal):
        """The pod leaves the Service at once (its container died, or its
        deletion began) and its probes stop."""
        with self.lock:
            self.probers.pop(ordinal).set()
            self.ready.discard(ordinal)

    def kill(self, ordinal):
        """kill -9: the container dies, the pod restarts it in place."""
        self.unready(ordinal)
        process = self.processes.pop(ordinal)
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)

    def delete(self, ordinal):
        """A pod deleted as the kubelet does it: out of the Service's
        endpoints, the preStop sleep, SIGTERM, SIGKILL after the grace
        period. Returns how it ended."""
        self.unready(ordinal)
        time.sleep(self.pre_stop)
        process = self.processes.pop(ordinal)
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=max(1, self.grace - self.pre_stop))
            return f"exited {code}"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            return "killed at the grace period"

    def connect(self, ordinal, timeout, verify=True):
        """An HTTP(S) connection to a pod's HTTP port: HTTPS with client
        TLS, verified against the CA like a client (not the host name: the
        pod's IP), or unverified like the kubelet's probes."""
        if self.tls_ca is None:
            return http.client.HTTPConnection(pod_ip(ordinal), self.http_port, timeout=timeout)
        context = ssl.create_default_context(cafile=self.tls_ca) if verify else ssl._create_unverified_context()
        context.check_hostname = False
        return http.client.HTTPSConnection(pod_ip(ordinal), self.http_port, timeout=timeout, context=context)

    def probe(self, ordinal, path, timeout=2):
        try:
            connection = self.connect(ordinal, timeout, verify=False)
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read().decode(errors="replace")
            connection.close()
            return answer.status, body
        except OSError as error:
            return None, str(error)

    def wait_ready(self, ordinals, started):
        """Until the kubelet's probes put each in the Service's endpoints;
        the seconds each took."""
        took, pending = {}, set(ordinals)
        deadline = time.monotonic() + READY_TIMEOUT
        while pending and time.monotonic() < deadline:
            for ordinal in sorted(pending):
                if self.processes[ordinal].poll() is not None:
                    raise SystemExit(f"pod {ordinal} exited: see {self.work}/{self.name}-{ordinal}.log")
                if ordinal in self.endpoints():
                    took[ordinal] = time.monotonic() - started
                    pending.discard(ordinal)
            time.sleep(0.05)
        if pending:
            raise SystemExit(f"pods {sorted(pending)} not ready in {READY_TIMEOUT:.0f}s")
        return took

    def endpoints(self):
        with self.lock:
            return sorted(self.ready)

    def status(self, ordinal):
        status, body = self.probe(ordinal, "/status")
        return json.loads(body) if status == 200 else None

    def voters(self, ordinal):
        status = self.status(ordinal)
        nodes = status["store"]["nodes"] if status else []
        return sorted(int(node["id"]) for node in nodes if node["voter"])

    def stop_all(self):
        for stop in self.probers.values():
            stop.set()
        for ordinal in list(self.processes):
            process = self.processes.pop(ordinal)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)


def http_call(pods, ordinal, method, path, body=None):
    connection = pods.connect(ordinal, REQUEST_TIMEOUT)
    try:
        data = json.dumps(body) if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        connection.close()


class Writer(threading.Thread):
    """A client writing through the Service: each write to the next ready
    pod; remembers what was acknowledged and counts errors per phase."""

    def __init__(self, pods):
        super().__init__(daemon=True)
        self.pods = pods
        self.acked = []
        self.errors = {}
        self.attempts = {}
        self.phase = "start"
        self.running = True
        self.next_id = 1
        self.last_error = {}

    def run(self):
        turn = 0
        while self.running:
            endpoints = self.pods.endpoints()
            if not endpoints:
                time.sleep(0.05)
                continue
            ordinal = endpoints[turn % len(endpoints)]
            turn += 1
            key, phase = self.next_id, self.phase
            self.next_id += 1
            self.attempts[phase] = self.attempts.get(phase, 0) + 1
            statement = [["INSERT INTO rehearsal(id, phase) VALUES(?, ?)", key, phase]]
            try:
                status, body = http_call(self.pods, ordinal, "POST", "/db/execute", statement)
                result = json.loads(body)["results"][0] if status == 200 else {"error": f"HTTP {status}: {body}"}
            except (OSError, ValueError, KeyError, IndexError) as error:
                result = {"error": f"{type(error).__name__}: {error}"}
            if result.get("rows_affected") == 1 and "error" not in result:
                self.acked.append(key)
            else:
                self.errors[phase] = self.errors.get(phase, 0) + 1
                self.last_error[phase] = f"pod {ordinal}: {result.get('error', result)}"[:200]
                time.sleep(0.05)


def deeb_nodes(pods, *args):
    """`deeb nodes ARGS` through the first ready pod, as an operator would."""
    ordinal = (pods.endpoints() or [0])[0]
    command = [pods.deeb, "nodes", "--addr", f"{pod_ip(ordinal)}:{pods.client_port}", *args]
    if pods.tls_ca:
        command[3:3] = ["--tls-ca", pods.tls_ca]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise SystemExit(f"deeb nodes {' '.join(args)}: {done.stdout}{done.stderr}")


def query_ids(pods, ordinal):
    path = "/db/query?level=linearizable&q=" + "SELECT%20id%20FROM%20rehearsal%20ORDER%20BY%20id"
    status, body = http_call(pods, ordinal, "GET", path)
    if status != 200:
        raise SystemExit(f"query on pod {ordinal}: HTTP {status}: {body}")
    result = json.loads(body)["results"][0]
    if "error" in result:
        raise SystemExit(f"query on pod {ordinal}: {result['error']}")
    return [row[0] for row in result.get("values", [])]


def run(pods, writer, figures):
    started = time.monotonic()
    pods.create_network()
    # Pod 2 gets its address (and so its DNS name) last: the others must
    # keep resolving its name until it appears.
    for ordinal in range(2):
        pods.add_pod_network(ordinal)
    for ordinal in range(2):
        pods.start(ordinal)
    time.sleep(LATE_POD_SECONDS)
    pods.start(2)
    took = pods.wait_ready(range(3), started)
    figures.append(f"cold start, 3 pods at once (pod 2's DNS name published {LATE_POD_SECONDS}s late): all ready in "
                   f"{max(took.values()):.2f}s ({', '.join(f'pod {o} {t:.2f}s' for o, t in sorted(took.items()))})")
    if pods.voters(2) != [1, 2, 3]:
        raise SystemExit(f"after the cold start pod 2 sees the voters {pods.voters(2)}")
    status, body = http_call(pods, 0, "POST", "/db/execute",
                             [["CREATE TABLE rehearsal (id INTEGER PRIMARY KEY, phase TEXT NOT NULL)"]])
    if status != 200 or "error" in json.loads(body)["results"][0]:
        raise SystemExit(f"create table: {status} {body}")
    writer.start()
    time.sleep(2)

    writer.phase = "kill -9"
    victim = 1
    pods.kill(victim)
    time.sleep(1)
    restarted = time.monotonic()
    pods.start(victim)
    took = pods.wait_ready([victim], restarted)
    figures.append(f"kill -9 of pod {victim}, restarted on its data: ready in {took[victim]:.2f}s")
    time.sleep(2)

    writer.phase = "rolling restart"
    rolled = time.monotonic()
    for ordinal in reversed(range(3)):
        deleted = time.monotonic()
        how = pods.delete(ordinal)
        pods.start(ordinal)
        took = pods.wait_ready([ordinal], deleted)
        figures.append(f"rolling restart, pod {ordinal}: {how}, ready {took[ordinal]:.2f}s after its deletion began")
    figures.append(f"rolling restart of 3 pods: {time.monotonic() - rolled:.2f}s")
    time.sleep(2)

    if pods.tls_ca is not None:
        return finish(pods, writer, figures)

    writer.phase = "scale to 5"
    scaled = time.monotonic()
    for ordinal in (3, 4):
        pods.add_pod_network(ordinal)
    for ordinal in (3, 4):
        pods.start(ordinal)
    pods.wait_ready([3, 4], scaled)
    deadline = time.monotonic() + READY_TIMEOUT
    while pods.voters(0) != [1, 2, 3, 4, 5] and time.monotonic() < deadline:
        time.sleep(0.2)
    if pods.voters(0) != [1, 2, 3, 4, 5]:
        raise SystemExit(f"after scaling to 5 the voters are {pods.voters(0)}")
    figures.append(f"scale to 5: pods 3 and 4 joined and were promoted to voters in {time.monotonic() - scaled:.2f}s")
    time.sleep(2)

    writer.phase = "scale to 3"
    scaled = time.monotonic()
    for node_id in (5, 4):
        # As NOTES.txt says: `deeb nodes remove N` first, then scale.
        deeb_nodes(pods, "remove", str(node_id))
    for ordinal in (4, 3):
        pods.delete(ordinal)
        pods.remove_pod_network(ordinal)
        shutil.rmtree(pods.volume(ordinal))  # persistentVolumeClaimRetentionPolicy whenScaled: Delete
    voters = pods.voters(0)
    if voters != [1, 2, 3]:
        raise SystemExit(f"after scaling to 3 the voters are {voters}")
    figures.append(f"scale to 3: nodes 5 and 4 removed, pods deleted, in {time.monotonic() - scaled:.2f}s; "
                   f"voters {voters}")
    time.sleep(2)
    writer.phase = "lost volume"
    lost_at = time.monotonic()
    victim = 1
    # As the chart's README says: remove the node, delete the pod and its
    # volume, add the node back once its pod is up again (empty).
    pods.kill(victim)
    deeb_nodes(pods, "remove", str(victim + 1))
    shutil.rmtree(pods.volume(victim))
    pods.start(victim)
    deeb_nodes(pods, "add", str(victim + 1), f"{pods.host(victim)}:{pods.peer_port}")
    pods.wait_ready([victim], lost_at)
    deadline = time.monotonic() + READY_TIMEOUT
    while pods.voters(victim) != [1, 2, 3] and time.monotonic() < deadline:
        time.sleep(0.2)
    if pods.voters(victim) != [1, 2, 3]:
        raise SystemExit(f"after its volume was lost pod {victim} sees the voters {pods.voters(victim)}")
    figures.append(f"lost volume of pod {victim}: removed, restarted empty, added back, ready in "
                   f"{time.monotonic() - lost_at:.2f}s")
    time.sleep(2)
    return finish(pods, writer, figures)


def finish(pods, writer, figures):
    """Stops the writer and checks every acknowledged write on every pod."""
    writer.phase = "end"
    time.sleep(1)
    writer.running = False
    writer.join(timeout=REQUEST_TIMEOUT * 2)

    acked = set(writer.acked)
    contents = {ordinal: query_ids(pods, ordinal) for ordinal in range(3)}
    problems = judge(acked, contents)
    lost = sorted(acked - set(contents[0]))
    figures.append(f"writes: {sum(writer.attempts.values())} attempted, {len(acked)} acknowledged, "
                   f"{len(lost)} acknowledged writes lost; by the phase each write began in:")
    for phase in writer.attempts:
        errors = writer.errors.get(phase, 0)
        last = f" (last: {writer.last_error[phase]})" if errors else ""
        figures.append(f"  {phase}: {writer.attempts[phase]} writes, {errors} errors{last}")
    return problems


def judge(acked, contents):
    """What is wrong with the end state: an acknowledged write missing on
    any pod, replicas that differ, or too few writes to mean anything."""
    problems = []
    for ordinal, ids in sorted(contents.items()):
        lost = sorted(acked - set(ids))
        if lost:
            problems.append(f"pod {ordinal} lacks acknowledged writes: {lost[:20]}")
        if ids != contents[0]:
            problems.append(f"pod {ordinal} holds {len(ids)} rows, pod 0 {len(contents[0])}: replicas differ")
    if len(acked) < 50:
        problems.append(f"only {len(acked)} writes acknowledged: the rehearsal measured too little")
    return problems


def judge_catches_bad_ends():
    """The end-state check fed known-bad ends must fail them, and pass a good one."""
    acked = set(range(1, 101))
    good = {ordinal: list(range(1, 102)) for ordinal in range(3)}
    lost_one = {**good, 2: [i for i in good[2] if i != 40]}
    few = {ordinal: [1, 2] for ordinal in range(3)}
    return (not judge(acked, good) and any("lacks" in p for p in judge(acked, lost_one))
            and any("differ" in p for p in judge(acked, lost_one)) and bool(judge({1, 2}, few)))


def make_secrets(pods, work):
    """The chart README's Secrets, made with `deeb certs`: the peers' is a
    wildcard for the headless service's names. Returns the CA's path."""
    certs = pathlib.Path(work) / "certs"
    wildcard = f"*.{pods.domain}"
    ips = ",".join(pod_ip(ordinal) for ordinal in range(8))
    subprocess.run([pods.deeb, "certs", "--dir", str(certs), "--node", f"peers={wildcard}",
                    "--node", f"clients={wildcard},{ips}"], check=True, capture_output=True, timeout=60)
    for secret, name in [("deeb-peer-tls", "peers"), ("deeb-client-tls", "clients")]:
        directory = pathlib.Path(work) / "secrets" / secret
        directory.mkdir(parents=True)
        shutil.copy(certs / f"{name}.pem", directory / "tls.crt")
        shutil.copy(certs / f"{name}-key.pem", directory / "tls.key")
        shutil.copy(certs / "ca.pem", directory / "ca.crt")
    return str(certs / "ca.pem")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deeb", default="target/release/deeb")
    parser.add_argument("--keep", action="store_true", help="keep the pods' logs and data")
    parser.add_argument("--tls", action="store_true",
                        help="with the chart's client and peer TLS (certificates from `deeb certs`, a wildcard for "
                             "the peers' DNS names); cold start, kill -9 and rolling restart only")
    options = parser.parse_args()
    if not judge_catches_bad_ends():
        raise SystemExit("the rehearsal's end-state check passed a bad end")
    if os.geteuid() != 0:
        raise SystemExit("the rehearsal needs root (network and UTS namespaces)")
    values = {}
    if options.tls:
        values = {"tls": {"client": {"enabled": True, "secretName": "deeb-client-tls"},
                          "peer": {"enabled": True, "secretName": "deeb-peer-tls"}}}
    objects, _ = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    work = tempfile.mkdtemp(prefix="deeb-rehearsal-")
    pods = Pods(options.deeb, chart.statefulset(objects), work)
    if options.tls:
        pods.tls_ca = make_secrets(pods, work)
    writer = Writer(pods)
    mode = "client and peer TLS" if options.tls else "no TLS"
    print(f"== rehearsal of StatefulSet {pods.name} ({pods.env['DEEB_PEERS_FROM_DNS']}, {mode}) in {work}")
    figures, problems = [], ["did not finish"]
    try:
        problems = run(pods, writer, figures)
    finally:
        writer.running = False
        pods.stop_all()
        pods.destroy_network()
        for line in figures:
            print(f"   {line}")
        if problems or options.keep:
            print(f"   logs and data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    chart.conclude("rehearsal", problems)


if __name__ == "__main__":
    main()
