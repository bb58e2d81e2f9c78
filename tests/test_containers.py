"""The three images, built here and started as the rendered manifests say (issue 15).

tests/containers/build-images.sh builds them with podman from the repo root; tests/containers/overlay renders the
whole deployment for one machine without a cluster; `podman kube play` runs it. Each pod keeps its user, read-only
root file system, dropped capabilities, env, command and probes. What stands in for what, and what only a real
cluster checks, is in docs/deployment.md ("Containers built and started here").

STAND-INS: the base image is a Debian bookworm python3.11 root imported under the name
python:3.11.14-slim-bookworm (tests/containers/base-image.sh; Docker Hub is out of reach here), and Redis and the
object store are the tests' own servers on this machine (conftest.py), not the redis and MinIO images.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from conftest import ROOT, SHORT_SAMPLE, wait_for
from devstack.processes import free_port
from msaas.connections import connect_redis, connect_store
from msaas.settings import Settings
from msaas.storage import ObjectStore

# The first test also waits for the images: minutes on a machine that never built them.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

BUILD = ROOT / "tests/containers/build-images.sh"
CONTAINERS_CONF = ROOT / "tests/containers/containers.conf"
OVERLAY = ROOT / "tests/containers/overlay"
LONG_SAMPLE = ROOT / "data/song-rondo.mp3"  # 20 s: long enough to kill the worker while it separates
TRACKS = ("vocals", "drums", "bass", "other")
SERVICES = ("rest", "worker", "logs")
# What kube play runs; the rest is the cluster's business, or runs on this machine instead (Redis, MinIO).
PLAYED_KINDS = {"Deployment", "ConfigMap", "PersistentVolumeClaim"}
NOT_PLAYED_KINDS = {"Namespace", "Service", "StatefulSet", "Ingress", "NetworkPolicy"}
S3_ACCESS_KEY, S3_SECRET_KEY = "test-access", "test-secret"


def podman_env() -> dict[str, str]:
    """The environment podman runs in: this repo's containers.conf unless the caller chose one."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF") or str(CONTAINERS_CONF)}


def podman(*args: object, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120):
    result = subprocess.run(
        ["podman", *map(str, args)], capture_output=True, text=True, env=env or podman_env(), timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


def container(service: str) -> str:
    """The name kube play gives a Deployment's (first) pod's container."""
    return f"{service}-pod-0-{service}"


# --- the deployment ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> None:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `make test` installs it (Makefile, target containers)")
    # Cheap when nothing changed (cached base and layers); otherwise the images hold this checkout's code.
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, env=podman_env(), timeout=1800)
    assert result.returncode == 0, f"{BUILD.name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


def host_overlay(folder: Path, redis_port: int, s3_port: int, rest_port: int, metrics_port: int) -> Path:
    """tests/containers/overlay with the ports this test's servers got (kustomize takes only relative paths)."""
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAY, folder)],
        "configMapGenerator": [{
            "name": "msaas-config", "behavior": "merge",
            "literals": [f"REDIS_PORT={redis_port}", f"S3_ENDPOINT=minio:{s3_port}"],
        }],
        "patches": [
            port_patch("rest", "PORT", rest_port),
            port_patch("worker", "WORKER_METRICS_PORT", metrics_port),
        ],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return folder


def port_patch(deployment: str, setting: str, port: int) -> dict:
    """Host networking: the service's one port moves to a free one, its setting and containerPort alike."""
    path = "/spec/template/spec/containers/0"
    operations = [
        {"op": "replace", "path": f"{path}/ports/0/containerPort", "value": port},
        {"op": "add", "path": f"{path}/env/-", "value": {"name": setting, "value": str(port)}},
    ]
    return {"target": {"kind": "Deployment", "name": deployment}, "patch": yaml.safe_dump(operations)}


def render(folder: Path) -> list[dict]:
    kubectl = Path(sys.executable).parent / "kubectl"
    result = subprocess.run([kubectl, "kustomize", folder], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"kubectl kustomize failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def hosts_file(docs: list[dict], folder: Path) -> Path:
    """The pods' hostAliases as a hosts file: podman 4.3 records them on the pod but leaves them out of the
    containers' /etc/hosts, so they reach the containers through containers.conf's base_hosts_file instead."""
    lines = ["127.0.0.1 localhost"]
    for doc in docs:
        for alias in doc["spec"]["template"]["spec"].get("hostAliases", []) if doc["kind"] == "Deployment" else []:
            lines.append(" ".join([alias["ip"], *alias["hostnames"]]))
    path = folder / "hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def without_ports(doc: dict) -> dict:
    """podman 4.3 turns every containerPort into a port mapping, which it then refuses with host networking
    (where a containerPort only documents the port the process binds on the host). The played copy leaves
    them out; the probes are resolved against the rendered manifests, ports and all."""
    doc = copy.deepcopy(doc)
    if doc["kind"] == "Deployment":
        for container_spec in doc["spec"]["template"]["spec"]["containers"]:
            container_spec.pop("ports", None)
    return doc


def play_env(folder: Path, hosts: Path) -> dict[str, str]:
    conf = Path(podman_env()["CONTAINERS_CONF"]).read_text()
    assert "[containers]\n" in conf, "containers.conf needs a [containers] table"
    conf = conf.replace("[containers]\n", f'[containers]\nbase_hosts_file = "{hosts}"\n', 1)
    (folder / "containers.conf").write_text(conf)
    return {**os.environ, "CONTAINERS_CONF": str(folder / "containers.conf")}


def create_secret() -> None:
    """The Secrets: msaas-s3, which docs/deployment.md says to create first, and msaas-tenants, which Kubernetes
    may leave out (the pods mount it as optional) but podman's kube play needs: no tenants in it, so the API stays
    open as the reference clients expect. podman 4.3 reads a secret kube play refers to as JSON whose values are
    base64, as in a Kubernetes Secret's data."""
    secrets = {"msaas-s3": {"access-key": S3_ACCESS_KEY, "secret-key": S3_SECRET_KEY},
               "msaas-tenants": {"tenants.json": json.dumps({"tenants": []})}}
    for name, data in secrets.items():
        encoded = json.dumps({key: base64.b64encode(value.encode()).decode() for key, value in data.items()})
        subprocess.run(
            ["podman", "secret", "create", name, "-"], input=encoded, text=True, env=podman_env(), check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def host_settings(redis_server, s3_server) -> Settings:
    """How this test reaches Redis and the store on this machine (the containers get the same via the overlay)."""
    settings = Settings(
        redis_host="127.0.0.1", redis_port=redis_server.port, s3_endpoint=f"127.0.0.1:{s3_server.port}",
        s3_access_key=S3_ACCESS_KEY, s3_secret_key=S3_SECRET_KEY, demucs_model="demucs_unittest",
    )
    connect_redis(settings).flushdb()
    store = ObjectStore(connect_store(settings), settings.queue_bucket, settings.output_bucket)
    store.ensure_buckets()
    for bucket in (settings.queue_bucket, settings.output_bucket):  # no song earlier tests separated
        for item in store.client.list_objects(bucket, recursive=True):
            store.client.remove_object(bucket, item.object_name)
    return settings


@pytest.fixture(scope="module")
def deployment(images, host_settings, tmp_path_factory) -> Iterator[dict]:
    """The rendered deployment, played; yields its Deployments by name and the REST address."""
    folder = tmp_path_factory.mktemp("containers")
    rest_port = free_port()
    overlay = host_overlay(folder, host_settings.redis_port, int(host_settings.s3_endpoint.rsplit(":", 1)[1]),
                           rest_port, free_port())
    docs = render(overlay)
    kinds = {doc["kind"] for doc in docs}
    assert kinds <= PLAYED_KINDS | NOT_PLAYED_KINDS, f"kinds this test does not know how to treat: {kinds}"
    played = [doc for doc in docs if doc["kind"] in PLAYED_KINDS]
    manifest = folder / "played.yaml"
    manifest.write_text(yaml.safe_dump_all([without_ports(doc) for doc in played]))
    env = play_env(folder, hosts_file(played, folder))
    take_down(manifest, env)  # whatever an interrupted run left behind
    create_secret()
    deployments = {doc["metadata"]["name"]: doc for doc in played if doc["kind"] == "Deployment"}
    try:
        podman("kube", "play", manifest, env=env, timeout=300)
        yield {"deployments": deployments, "rest": f"127.0.0.1:{rest_port}", "env": env}
    finally:
        for service in SERVICES:  # what the services said, for whoever reads a failure
            logs = podman("logs", container(service), check=False)
            (folder / f"{service}.log").write_text(logs.stdout + logs.stderr)
        take_down(manifest, env)


def take_down(manifest: Path, env: dict[str, str]) -> None:
    """The pods, their emptyDir volumes, the PVC's volume and the secret."""
    podman("kube", "down", manifest, check=False, env=env, timeout=900)
    podman("volume", "rm", "--force", "demucs-models", check=False)
    podman("secret", "rm", "msaas-s3", check=False)
    podman("secret", "rm", "msaas-tenants", check=False)


# --- probes -----------------------------------------------------------------------------------------------


def spec(deployment: dict, service: str) -> dict:
    (container_spec,) = deployment["deployments"][service]["spec"]["template"]["spec"]["containers"]
    return container_spec


def probe_passes(deployment: dict, service: str, kind: str) -> bool:
    """Run one probe as the kubelet would: its command inside the container, or its HTTP GET at the pod."""
    container_spec = spec(deployment, service)
    probe = container_spec[kind]
    if "exec" in probe:
        result = podman("exec", container(service), *probe["exec"]["command"], check=False)
        return result.returncode == 0
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        (port,) = [entry["containerPort"] for entry in container_spec["ports"] if entry["name"] == port]
    try:  # host networking: the pod's address is this machine's
        response = requests.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", timeout=5)
    except requests.ConnectionError:
        return False
    return 200 <= response.status_code < 400


@pytest.fixture(scope="module")
def ready(deployment) -> dict:
    """Every pod ready, as its readiness probe says (kube play itself does not run readiness probes)."""
    for service in SERVICES:
        wait_for(lambda s=service: probe_passes(deployment, s, "readinessProbe"), 120, f"{service} to be ready")
    return deployment


def test_every_pod_runs_as_the_manifest_hardens_it(ready):
    for service in SERVICES:
        config = json.loads(podman("inspect", container(service)).stdout)[0]
        security = spec(ready, service)["securityContext"]
        assert config["State"]["Running"], f"{service} is not running"
        assert config["Config"]["User"] == "10001:10001", service
        assert config["HostConfig"]["ReadonlyRootfs"] is security["readOnlyRootFilesystem"] is True, service
        status = podman("exec", container(service), "cat", "/proc/1/status").stdout
        assert "CapEff:\t0000000000000000" in status, f"{service} kept capabilities"
        assert "NoNewPrivs:\t1" in status, f"{service} may gain privileges"
        written = podman("exec", container(service), "touch", "/app/written", check=False)
        assert written.returncode != 0 and "Read-only file system" in written.stderr, service
        podman("exec", container(service), "touch", "/tmp/written")  # the emptyDir is writable


def test_liveness_and_readiness_probes_pass_inside_each_container(ready):
    # The worker touches its heartbeat file every LEASE_SECONDS / 3 (10 s) from start.
    for service in SERVICES:
        for kind in ("livenessProbe", "readinessProbe"):
            wait_for(lambda s=service, k=kind: probe_passes(ready, s, k), 30, f"{service}'s {kind}")


def test_worker_image_has_the_cpu_build_of_torch_and_no_cuda_packages(ready):
    version = podman("exec", container("worker"), "python", "-c", "import torch; print(torch.__version__)")
    assert version.stdout.strip().endswith("+cpu"), version.stdout
    packages = podman("exec", container("worker"), "python", "-m", "pip", "list", "--format=freeze").stdout
    assert packages and not [line for line in packages.splitlines() if line.lower().startswith("nvidia-")]


def test_worker_image_carries_the_roformer_engine(ready):
    """audio-separator loads (issue 25's second engine), beside the torchvision its metadata asks for at the version
    constraints.txt pins (else pip would swap the CPU torch for a CUDA one; audio-separator never imports it)."""
    pin = next(line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torchvision=="))
    found = podman("exec", container("worker"), "python", "-c",
                   "import importlib.metadata, audio_separator.separator, onnxruntime, worker.roformer_run; "
                   "print(importlib.metadata.version('torchvision'))")
    assert found.stdout.strip() == pin.removeprefix("torchvision=="), found.stdout + found.stderr


def test_the_worker_runs_demucs_with_tcmalloc_in_its_image(ready):
    """Part of the measured speed (docs/operations.md, "Sizing"): the image installs it and the worker finds it."""
    found = podman("exec", container("worker"), "python", "-c",
                   "from worker.demucs_run import tcmalloc; print(tcmalloc())")
    assert found.stdout.strip().startswith("libtcmalloc_minimal.so"), found.stdout + found.stderr


# --- a song through the containers ------------------------------------------------------------------------


def test_reference_client_gets_four_stems_and_logs_show_the_job(ready, tmp_path):
    """sample-requests.py, the reference client: base64 JSON to /apiv1/separate, a callback, the tracks."""
    client = subprocess.run(
        [sys.executable, ROOT / "sample-requests.py", SHORT_SAMPLE], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "REST": ready["rest"], "WAIT": "300"}, timeout=400, check=False,
    )
    assert client.returncode == 0, f"the client failed:\n{client.stdout[-3000:]}\n{client.stderr[-3000:]}"
    (songhash,) = [folder.name for folder in (tmp_path / "output").iterdir()]
    for track in TRACKS:
        assert (tmp_path / "output" / songhash / f"{track}.mp3").stat().st_size > 1000, track
    assert f"Callback received for {songhash}" in client.stdout
    # The logs pod prints every service's lines, this job's among them.
    lines = wait_for(lambda: job_lines(songhash), 30, "the logs container to print the job's lines")
    assert any(" worker " in line for line in lines) and any(" rest " in line for line in lines), lines


def job_lines(songhash: str) -> list[str]:
    output = podman("logs", container("logs")).stdout
    lines = [line for line in output.splitlines() if songhash in line]
    return lines if any("separated" in line for line in lines) else []


def post_song(rest: str, song: Path) -> str:
    body = {"mp3": base64.b64encode(song.read_bytes()).decode()}
    response = requests.post(f"http://{rest}/apiv1/separate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["hash"]


def song_status(rest: str, songhash: str) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{songhash}", timeout=10).json()


def container_state(service: str) -> dict:
    return json.loads(podman("inspect", container(service)).stdout)[0]["State"]


def pod_state(pod: str) -> str:
    return json.loads(podman("pod", "inspect", pod).stdout)["State"]


def test_killed_worker_container_restarts_and_the_job_finishes(ready):
    rest = ready["rest"]
    songhash = post_song(rest, LONG_SAMPLE)
    wait_for(lambda: song_status(rest, songhash)["state"] == "processing", 60, "the worker to take the job")
    podman("kill", "--signal", "KILL", container("worker"))
    assert container_state("worker")["ExitCode"] == 137
    # The kubelet would start it again (restartPolicy Always). podman 4.3 records that policy, but kube play
    # gives each pod the exit policy "stop": the pod stops with its last container and the policy never acts.
    # So this test starts the pod again once it has stopped, as the kubelet would restart the container:
    # same pod, same name.
    pod = f"{ready['deployments']['worker']['metadata']['name']}-pod-0"
    wait_for(lambda: pod_state(pod) == "Exited", 30, "the worker's pod to stop with its container")
    podman("pod", "start", pod, env=ready["env"])  # the hosts file is written again on start: the aliases again
    assert container_state("worker")["Running"], "the worker did not start again"
    done = wait_for(
        lambda: (status := song_status(rest, songhash))["state"] == "done" and status, 240,
        "the job to finish on the restarted worker",
    )
    assert done["attempts"] >= 2, f"the job was not delivered again after the kill: {done}"
    for track in TRACKS:
        response = requests.get(f"http://{rest}/apiv1/track/{songhash}/{track}.mp3", timeout=30)
        assert response.status_code == 200 and len(response.content) > 1000, track
