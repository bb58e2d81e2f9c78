"""Static checks of the container images and Kubernetes manifests: what CI can prove without a cluster.

Every kustomization renders; every object is valid Kubernetes 1.37; checkov finds nothing that is not skipped
with a reason; hadolint and shellcheck pass; and the manifests agree with the code (the settings it reads, its
routes) and the images with `make test` (the same pinned requirements). A missing tool fails, never skips:
`make test` installs them all.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from flask import Flask
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from msaas.engines import ALL_LANES, ENGINE_SETS, parse_engines, served_lanes
from msaas.settings import FIELDS, Settings
from rest import api
from rest.metrics import QueueDepths
from rpc.health import SERVICE as GRPC_HEALTH_SERVICE

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "msaas"
SERVICES = ("rest", "worker", "logs")  # in every variant
IMAGES = (*SERVICES, "rpc")  # rpc (gRPC) is deployed by the grpc component only
OVERLAYS = {
    "base": ROOT,
    "gpu": ROOT / "deploy/overlays/gpu",
    "keda": ROOT / "deploy/overlays/keda",
    "gke": ROOT / "deploy/overlays/gke",
    "grpc": ROOT / "deploy/overlays/grpc",
}
# All components at once, as a GKE cluster with GPU nodes, KEDA and the gRPC API would run: they must compose.
COMBINED = ("gke", "gpu", "keda", "keda-gpu", "grpc")
VARIANTS = (*OVERLAYS, "combined")
GRPC_VARIANTS = ("grpc", "combined")
# Custom resources: kubernetes-validate has no schema for them; the tests below check the fields that matter.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("cloud.google.com/v1", "BackendConfig")}
# Variables our containers get that are not settings, each with its reader.
THIRD_PARTY_ENV = {"OMP_NUM_THREADS": "PyTorch, in the Demucs subprocess the worker starts"}
APP_UID = 10001  # the USER of every image, and runAsUser of every pod
# What a stopping worker needs after its SHUTDOWN_GRACE: store the tracks or hand the job back, and end a callback
# attempt in flight.
WORKER_WRAP_UP_SECONDS = 30


def tool(name: str, where: Path | None = None) -> Path:
    """A tool `make test` puts in the virtualenv; its absence fails the test that needs it."""
    path = (where or Path(sysconfig.get_path("scripts"))) / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed at {path}: `make test` installs it (requirements/k8s-tools.txt)")
    return path


def run(*command: object, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=False)


# --- rendering -------------------------------------------------------------------------------------------


def combined_overlay(folder: Path) -> Path:
    """An overlay in `folder` with every component (kustomize takes only relative paths)."""
    base = os.path.relpath(ROOT / "deploy/base", folder)
    components = [os.path.relpath(ROOT / "deploy/components" / name, folder) for name in COMBINED]
    overlay = yaml.safe_load((ROOT / "deploy/overlays/gke/kustomization.yaml").read_text())
    overlay.update(resources=[base], components=components)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, str]:
    """Each variant's `kubectl kustomize` output, rendered once for the module."""
    kubectl = tool("kubectl")
    folders = {**OVERLAYS, "combined": combined_overlay(tmp_path_factory.mktemp("combined"))}
    outputs = {}
    for variant, folder in folders.items():
        result = run(kubectl, "kustomize", folder)
        assert result.returncode == 0, f"kubectl kustomize for {variant} failed:\n{result.stderr}"
        outputs[variant] = result.stdout
    return outputs


@pytest.fixture(scope="module")
def objects(rendered) -> dict[str, list[dict]]:
    return {variant: [doc for doc in yaml.safe_load_all(text) if doc] for variant, text in rendered.items()}


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def workloads(docs: list[dict]) -> list[dict]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")]


def service_container(docs: list[dict], service: str) -> dict:
    (container,) = find(docs, "Deployment", service)["spec"]["template"]["spec"]["containers"]
    return container


def config_maps(docs: list[dict]) -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc.get("data", {}) for doc in docs if doc["kind"] == "ConfigMap"}


def shared_settings(docs: list[dict]) -> dict[str, str]:
    (name,) = [name for name in config_maps(docs) if name.startswith("msaas-config")]
    return config_maps(docs)[name]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_every_component(objects, variant):
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in objects[variant]}
    for expected in [("StatefulSet", "redis"), ("StatefulSet", "minio"), ("Service", "redis"), ("Service", "minio")]:
        assert expected in kinds
    for service in SERVICES:
        assert ("Deployment", service) in kinds
    assert ("Service", "rest") in kinds and ("Ingress", "rest") in kinds
    assert (("Deployment", "rpc") in kinds) == (variant in GRPC_VARIANTS)
    assert not [doc for doc in objects[variant] if doc["kind"] == "Secret"], "credentials must not be committed"


@pytest.mark.parametrize("variant", VARIANTS)
def test_objects_validate_against_kubernetes_schemas(objects, variant):
    for doc in objects[variant]:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            pytest.fail(f"{variant}: {doc['kind']} {doc['metadata']['name']}: {getattr(error, 'message', error)}")


def test_schemas_for_the_targeted_kubernetes_version_ship_with_the_validator():
    # Validation runs offline: the schemas must be in the package, not fetched.
    assert KUBERNETES_VERSION in kubernetes_validate.utils.all_versions()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_is_in_the_namespace_and_labelled(objects, variant):
    for doc in objects[variant]:
        meta = doc["metadata"]
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACE, f"{variant}: {doc['kind']} {meta['name']} has no namespace"
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == NAMESPACE, f"{doc['kind']} {meta['name']}"


# --- security scan ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_reports(rendered, tmp_path_factory) -> list[dict]:
    """One checkov run over every rendered variant and every Dockerfile (checkov starts slowly)."""
    checkov = tool("checkov", Path(sys.prefix) / "checkov" / "bin")
    folder = tmp_path_factory.mktemp("rendered")
    files = []
    for variant, text in rendered.items():
        (folder / f"{variant}.yaml").write_text(text)
        files.append(folder / f"{variant}.yaml")
    files += [ROOT / service / "Dockerfile" for service in IMAGES]
    # --skip-download: no calls to the vendor's platform (CI has no network); the checks ship with checkov.
    command = [checkov, "--framework", "kubernetes", "dockerfile", "--skip-download", "--output", "json"]
    for path in files:
        command += ["--file", path]
    result = run(*command)
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov did not report (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr}")
    reports = reports if isinstance(reports, list) else [reports]
    assert {report["check_type"] for report in reports} == {"kubernetes", "dockerfile"}
    return reports


def test_checkov_finds_no_failure(checkov_reports):
    failures = [
        f"{check['check_id']} {check['check_name']}: {check['resource']} in {Path(check['file_path']).name}"
        for report in checkov_reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failures, "\n".join(failures)
    for report in checkov_reports:
        assert report["summary"]["parsing_errors"] == 0
        assert report["summary"]["passed"] > 0


def test_every_skipped_check_says_why(checkov_reports):
    skipped = [check for report in checkov_reports for check in report["results"]["skipped_checks"]]
    unexplained = [
        f"{check['check_id']} on {check['resource']}"
        for check in skipped
        if len(check["check_result"].get("suppress_comment", "").strip()) < 20
    ]
    assert not unexplained, "skipped without a reason: " + ", ".join(unexplained)


# --- linters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", IMAGES)
def test_hadolint_passes(service):
    result = run(tool("hadolint"), "--no-color", ROOT / service / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_local_dev_script_is_sound():
    script = ROOT / "deploy-local-dev.sh"
    assert script.stat().st_mode & 0o111, "deploy-local-dev.sh must be executable"
    syntax = run("bash", "-n", script)
    assert syntax.returncode == 0, syntax.stderr
    lint = run(tool("shellcheck"), "--severity=info", script)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("script", ["base-image.sh", "build-images.sh"])
def test_container_build_scripts_pass_shellcheck(script):
    """The scripts `make test` builds the images with (docs/deployment.md, "Containers built and started here")."""
    lint = run(tool("shellcheck"), "--severity=info", ROOT / "tests/containers" / script)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_deploy_local_dev_says_what_is_missing_without_kubectl():
    result = subprocess.run(
        ["bash", str(ROOT / "deploy-local-dev.sh")],
        env={"PATH": "/usr/bin:/bin", "KUBECTL": "no-such-kubectl"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "kubectl not found" in result.stderr


# --- manifests agree with the code -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_set_only_settings_the_code_reads(objects, variant):
    docs = objects[variant]
    maps = config_maps(docs)
    used_maps = set()
    # Each service's Deployments: worker-roformer (deploy/components/gpu) is a pool of the worker.
    for service in [doc["metadata"]["name"] for doc in docs
                    if doc["kind"] == "Deployment" and doc["metadata"]["name"].split("-")[0] in IMAGES]:
        container = service_container(docs, service)
        names = [entry["name"] for entry in container.get("env", [])]
        for source in container.get("envFrom", []):
            assert "configMapRef" in source, f"{service}: only ConfigMaps may be bulk-imported, so every name is seen"
            map_name = source["configMapRef"]["name"]
            used_maps.add(map_name)
            assert set(maps[map_name]) <= set(FIELDS), f"{map_name}: {set(maps[map_name]) - set(FIELDS)}"
            names += list(maps[map_name])
        unknown = set(names) - set(FIELDS) - set(THIRD_PARTY_ENV)
        assert not unknown, f"{service} sets variables no code reads: {sorted(unknown)}"
        assert len(names) == len(set(names)), f"{service} sets a variable twice: {sorted(names)}"
    orphans = {name for name in maps if not name.startswith("redis-config")} - used_maps
    assert not orphans, f"ConfigMaps no service reads: {orphans}"


@pytest.mark.parametrize("service", ["rest", "worker"])
def test_store_credentials_come_from_the_secret_minio_uses(objects, service):
    docs = objects["base"]
    env = {entry["name"]: entry for entry in service_container(docs, service)["env"]}
    (minio,) = find(docs, "StatefulSet", "minio")["spec"]["template"]["spec"]["containers"]
    minio_env = {entry["name"]: entry for entry in minio["env"]}
    pairs = {"S3_ACCESS_KEY": "MINIO_ROOT_USER", "S3_SECRET_KEY": "MINIO_ROOT_PASSWORD"}
    for ours, theirs in pairs.items():
        assert "value" not in env[ours] and "value" not in minio_env[theirs]
        assert env[ours]["valueFrom"]["secretKeyRef"] == minio_env[theirs]["valueFrom"]["secretKeyRef"]


def test_logs_gets_no_credentials(objects):
    container = service_container(objects["base"], "logs")
    assert not [entry for entry in container.get("env", []) if "S3" in entry["name"]]


def test_settings_point_at_the_services_that_exist(objects):
    docs = objects["base"]
    settings = shared_settings(docs)
    redis_ports = {port["port"] for port in find(docs, "Service", "redis")["spec"]["ports"]}
    minio_ports = {port["port"] for port in find(docs, "Service", "minio")["spec"]["ports"]}
    assert settings["REDIS_HOST"] == "redis" and int(settings["REDIS_PORT"]) in redis_ports
    host, port = settings["S3_ENDPOINT"].split(":")
    assert host == "minio" and int(port) in minio_ports


def test_rest_probes_and_gke_health_check_use_routes_that_exist(objects):
    app = Flask(__name__)
    app.register_blueprint(api.blueprint)
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    container = service_container(objects["base"], "rest")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # checks Redis and the object store
    assert {"/", "/healthz", "/readyz"} <= routes


def test_prometheus_scrapes_the_ports_that_serve_metrics(objects):
    docs = objects["base"]
    for service, port in (("rest", Settings().port), ("worker", Settings().worker_metrics_port)):
        annotations = find(docs, "Deployment", service)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) == port, service
        policy = find(docs, "NetworkPolicy", service)["spec"]
        assert [rule["ports"] for rule in policy["ingress"]] == [[{"port": port, "protocol": "TCP"}]], service


@pytest.mark.parametrize("variant", GRPC_VARIANTS)
def test_grpc_variant_serves_grpc_probed_by_the_standard_health_service(objects, variant):
    docs = objects[variant]
    defaults = Settings()
    deployment = find(docs, "Deployment", "rpc")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["grpc"] == {"port": defaults.grpc_port}  # "": the server itself
    assert container["readinessProbe"]["grpc"] == {"port": defaults.grpc_port, "service": GRPC_HEALTH_SERVICE}
    (port,) = find(docs, "Service", "rpc")["spec"]["ports"]
    assert port["port"] == defaults.grpc_port and port["appProtocol"] == "grpc"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == defaults.grpc_metrics_port
    policy = find(docs, "NetworkPolicy", "rpc")["spec"]
    assert [rule["ports"] for rule in policy["ingress"]] == [[
        {"port": defaults.grpc_port, "protocol": "TCP"}, {"port": defaults.grpc_metrics_port, "protocol": "TCP"}]]
    for store in ("redis", "minio"):
        (rule,) = find(docs, "NetworkPolicy", store)["spec"]["ingress"]
        assert "rpc" in rule["from"][0]["podSelector"]["matchExpressions"][0]["values"], store
    env = {entry["name"]: entry for entry in container["env"]}
    rest_env = {entry["name"]: entry for entry in service_container(docs, "rest")["env"]}
    for name in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "API_KEYS"):
        assert env[name]["valueFrom"] == rest_env[name]["valueFrom"], name


# --- pods ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_is_hardened_probed_and_sized(objects, variant):
    for workload in workloads(objects[variant]):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == APP_UID, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        claims = {claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "livenessProbe" in container and "readinessProbe" in container, name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name} {bound}"
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})
                assert volume or mount["name"] in claims, f"{name}: volume {mount['name']} is not defined"
                if "emptyDir" in volume:
                    assert volume["emptyDir"].get("sizeLimit"), f"{name}: emptyDir {mount['name']} has no size limit"


def test_worker_has_scratch_model_cache_and_time_to_finish_a_song(objects):
    docs = objects["base"]
    pod = find(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    settings = next(config for name, config in config_maps(docs).items() if name.startswith("worker-config"))
    mounts = {mount["mountPath"]: mount["name"] for mount in pod["containers"][0]["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[settings["WORK_DIR"]]]
    claim = volumes[mounts[settings["MODEL_CACHE_DIR"]]]["persistentVolumeClaim"]["claimName"]
    find(docs, "PersistentVolumeClaim", claim)
    shutdown_grace = float(settings.get("SHUTDOWN_GRACE", Settings().shutdown_grace))
    assert pod["terminationGracePeriodSeconds"] >= shutdown_grace + WORKER_WRAP_UP_SECONDS


def test_redis_is_append_only_on_a_persistent_volume(objects):
    statefulset = find(objects["base"], "StatefulSet", "redis")
    (config_map,) = [name for name in config_maps(objects["base"]) if name.startswith("redis-config")]
    config = dict(
        line.split(None, 1)
        for line in config_maps(objects["base"])[config_map]["redis.conf"].splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"  # queued jobs are never evicted
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    data_mount = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == config["dir"])
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    assert data_mount["name"] in claims


def test_network_policies_admit_only_the_clients_of_each_store(objects):
    docs = objects["base"]

    def admitted(policy_name: str) -> set[str]:
        policy = find(docs, "NetworkPolicy", policy_name)
        (rule,) = policy["spec"]["ingress"]
        (source,) = rule["from"]
        (expression,) = source["podSelector"]["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
        return set(expression["values"])

    assert admitted("redis") == {"rest", "worker", "logs"}
    assert admitted("minio") == {"rest", "worker"}
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and "ingress" not in deny


# --- variants --------------------------------------------------------------------------------------------


def size_in_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()
    return int(number) * 1024 ** " kmg".index(unit or " ")


def test_ingress_accepts_the_largest_upload_the_service_accepts(objects):
    docs = objects["base"]
    ingress = find(docs, "Ingress", "rest")
    body_size = size_in_bytes(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body_size >= int(shared_settings(docs)["MAX_REQUEST_BYTES"])
    assert ingress["spec"]["ingressClassName"] == "nginx"


@pytest.mark.parametrize("variant", ["gke", "combined"])
def test_gke_variant_uses_google_load_balancer(objects, variant):
    docs = objects[variant]
    ingress = find(docs, "Ingress", "rest")
    assert ingress["metadata"]["annotations"]["kubernetes.io/ingress.class"] == "gce"
    assert "ingressClassName" not in ingress["spec"]
    service = find(docs, "Service", "rest")
    assert service["spec"]["type"] == "NodePort"
    backend = json.loads(service["metadata"]["annotations"]["cloud.google.com/backend-config"])["default"]
    assert find(docs, "BackendConfig", backend)["spec"]["timeoutSec"] >= 120
    assert "ReadWriteMany" in find(docs, "PersistentVolumeClaim", "demucs-models")["spec"]["accessModes"]


def pool_engines(docs: list[dict], deployment: str) -> tuple[tuple[str, ...], str]:
    """The engines a worker Deployment serves (WORKER_ENGINES as the worker parses it) and its DEMUCS_DEVICE."""
    (container,) = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    (name,) = [source["configMapRef"]["name"] for source in container["envFrom"]
               if source["configMapRef"]["name"].startswith("worker-config")]
    config = config_maps(docs)[name]
    return parse_engines(config.get("WORKER_ENGINES", "")), config["DEMUCS_DEVICE"]


@pytest.mark.parametrize("variant", ["gpu", "combined"])
def test_gpu_variant_runs_roformers_on_a_gpu_pool_and_demucs_on_the_cpu_workers(objects, variant):
    docs = objects[variant]
    gpu = find(docs, "Deployment", "worker-roformer")
    pod = gpu["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["image"].endswith("-cuda")
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in pod["tolerations"])
    assert pool_engines(docs, "worker-roformer") == (("roformer", "demucs"), "cuda")
    cpu = find(docs, "Deployment", "worker")
    (cpu_container,) = cpu["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    assert "tolerations" not in cpu["spec"]["template"]["spec"]
    assert not cpu_container["image"].endswith("-cuda")
    assert pool_engines(docs, "worker") == (("demucs",), "cpu")
    # Every model's lanes have a pool, and the RoFormers' and the pairs' only the GPU pool.
    served = {pool: set(served_lanes(pool_engines(docs, pool)[0])) for pool in ("worker", "worker-roformer")}
    assert served["worker"] | served["worker-roformer"] == set(ALL_LANES)
    assert not [lane for lane in served["worker"] if "roformer" in lane]
    # Neither Deployment's selector picks the other's pods; the stores' policies admit both (by name).
    for one, other in ((cpu, gpu), (gpu, cpu)):
        selector = one["spec"]["selector"]["matchLabels"].items()
        assert not selector <= other["spec"]["template"]["metadata"]["labels"].items()
    for store in ("redis", "minio"):
        (rule,) = find(docs, "NetworkPolicy", store)["spec"]["ingress"]
        assert gpu["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] in \
            rule["from"][0]["podSelector"]["matchExpressions"][0]["values"], store
    scrape = find(docs, "NetworkPolicy", "worker-roformer")["spec"]
    assert scrape["podSelector"]["matchLabels"].items() <= gpu["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("variant", ["keda", "combined"])
def test_keda_variant_scales_workers_on_the_waiting_jobs_down_to_zero(objects, variant):
    docs = objects[variant]
    scaled = find(docs, "ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    assert scaled["minReplicaCount"] == 0
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "metrics-api" and trigger["metadata"]["format"] == "prometheus"
    # REST's Service, on the port it exposes (a URL without one: 80), at the route that serves its metrics.
    url = urlsplit(trigger["metadata"]["url"])
    assert url.hostname == f"rest.{NAMESPACE}.svc.cluster.local" and url.path == "/metrics"
    assert (url.port or 80) in {port["port"] for port in find(docs, "Service", "rest")["spec"]["ports"]}
    families = {family.name: family for family in QueueDepths._families(0, 0, 0, {"demucs": 0})}  # REST's gauges
    if variant == "keda":
        assert trigger["metadata"]["valueLocation"] == "msaas_queue_depth"
        assert "msaas_queue_depth" in families
    else:  # with the RoFormer pool (keda-gpu): each pool on the depth of the lanes it serves
        assert trigger["metadata"]["valueLocation"] == 'msaas_engine_queue_depth{engine="demucs"}'
        assert "msaas_engine_queue_depth" in families and families["msaas_engine_queue_depth"].samples[0].labels == {
            "engine": "demucs"}
        scaled_gpu = find(docs, "ScaledObject", "worker-roformer")["spec"]
        assert scaled_gpu["scaleTargetRef"]["name"] == "worker-roformer" and scaled_gpu["minReplicaCount"] == 0
        measured = {trigger["metadata"]["valueLocation"] for trigger in scaled_gpu["triggers"]}
        only_gpu = {engine for engine in ENGINE_SETS
                    if set(engine.split("+")) <= set(pool_engines(docs, "worker-roformer")[0])
                    and not set(engine.split("+")) <= set(pool_engines(docs, "worker")[0])}
        assert measured == {f'msaas_engine_queue_depth{{engine="{engine}"}}' for engine in only_gpu}
        assert "replicas" not in find(docs, "Deployment", "worker-roformer")["spec"], "KEDA owns the replica count"
    assert "replicas" not in find(docs, "Deployment", "worker")["spec"], "KEDA owns the replica count"


def test_redis_and_minio_folders_cannot_shadow_the_client_libraries():
    for folder in ("redis", "minio"):
        assert not (ROOT / folder / "__init__.py").exists()


# --- images ----------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def pins(requirements: Path) -> dict[str, str]:
    """name -> version of every requirement in the file and the files it includes with -r."""
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found.update(pins(requirements.parent / line[3:].strip()))
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        assert match, f"{requirements.name}: {line!r} is not pinned with =="
        found[match.group(1).lower().replace("_", "-")] = match.group(3)
    return found


@pytest.mark.parametrize("service", IMAGES)
def test_images_install_the_pins_make_test_installs(service):
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = ROOT / service / "Dockerfile"
    runs = [arguments for keyword, arguments in dockerfile_instructions(dockerfile) if keyword == "RUN"]
    installs = [step.strip() for command in runs for step in command.split("&&") if "pip install" in step]
    requirement_file = f"requirements/{service}.txt"
    assert any(f"-r {requirement_file} -c constraints.txt" in step for step in installs), installs
    pip_pin = re.search(r"pip==([\d.]+)", makefile).group(1)
    torch_pin = re.search(r"torch==([\d.]+)", makefile).group(1)
    for step in installs:
        if f"-r {requirement_file}" in step:
            continue
        if "pip==" in step:
            assert f"pip=={pip_pin}" in step, "the images' pip differs from make install's"
        elif service == "worker" and "torch_pin" in step:
            # the torch pin is read from requirements/worker.txt by the same RUN step
            assert "grep -E '^torch==' requirements/worker.txt" in " ".join(runs)
        else:
            pytest.fail(f"{dockerfile.relative_to(ROOT)} installs outside the pinned requirements: {step}")
    # make test installs the same files: dev.txt includes each service's requirements, at the same versions.
    dev, own = pins(ROOT / "requirements/dev.txt"), pins(ROOT / requirement_file)
    assert {name: dev.get(name) for name in own} == own
    assert "-r requirements/dev.txt -c constraints.txt" in makefile
    if service == "worker":
        assert own["torch"] == torch_pin, "Makefile and requirements/worker.txt pin different torch versions"
    constraints = pins(ROOT / "constraints.txt")
    assert {name: version for name, version in own.items() if name in constraints} == {
        name: constraints[name] for name in own if name in constraints
    }, "a requirement disagrees with constraints.txt"


@pytest.mark.parametrize("service", IMAGES)
def test_images_are_multi_stage_pinned_non_root_with_exec_form_cmd(service):
    instructions = dockerfile_instructions(ROOT / service / "Dockerfile")
    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert len(bases) >= 2, "multi-stage: build tools and caches stay out of the final image"
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*(@sha256:[0-9a-f]{64})?", base), f"{base} is not pinned"
    final = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1] == f"{APP_UID}:{APP_UID}", "the final stage must run as the app's numeric UID"
    (cmd,) = [arguments for keyword, arguments in final if keyword == "CMD"]
    assert isinstance(json.loads(cmd), list), "CMD in exec form, so the service gets SIGTERM as PID 1"
    text = (ROOT / service / "Dockerfile").read_text().lower()
    assert not re.search(r"(password|secret|access_key|secret_key)\s*=", text), "no credentials in images"


def test_dockerignore_keeps_the_venv_data_and_tests_out():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in patterns if line and not line.startswith("#")]
    assert patterns[0] == "*", "everything is left out first, then only what the images copy is let in"
    let_in = {line[1:].rstrip("/") for line in patterns if line.startswith("!")}
    assert not let_in & {".venv", "data", "tests", "output", ".devstack", ".git"}
    for service in IMAGES:
        for keyword, arguments in dockerfile_instructions(ROOT / service / "Dockerfile"):
            if keyword == "COPY" and not arguments.startswith("--from"):
                for source in arguments.split()[:-1]:
                    assert source.rstrip("/") in let_in, f"{service}/Dockerfile copies {source}, which is ignored"


# What each image imports as it starts: the modules its CMD runs (held to the CMD below), and its readiness probe's.
STARTS = {
    "worker": ("worker.__main__",),
    "logs": ("logs.__main__",),
    "rpc": ("rpc.__main__",),
    "rest": ("rest", "rest.gunicorn_worker", "gunicorn.app.wsgiapp"),  # the app, gunicorn's worker class, gunicorn
}
PROBE_MODULES = ("msaas.connections", "msaas.settings")
VENV_OWN = ("pip", "setuptools")  # what `python -m venv` puts in every image's virtualenv besides its requirements
# Imports the modules named after the first argument while the top-level names in it (JSON) cannot be found, as
# in an image that does not install them; prints each module loaded and its file.
IMPORT_WITHOUT = """
import importlib, json, sys
absent = set(json.loads(sys.argv[1]))
preloaded = sorted(absent & {name.partition(".")[0] for name in sys.modules})
assert not preloaded, f"loaded before the check could refuse them: {preloaded}"


class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, Absent())
for module in sys.argv[2:]:
    importlib.import_module(module)
print(json.dumps({name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}))
"""


def installed_with(names: Iterable[str]) -> set[str]:
    """The distributions pip installs for these requirements: them and their dependencies, no extras."""
    found, pending = set(), [canonicalize_name(name) for name in names]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} is not installed here: `make test` installs every image's requirements")
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return found


@pytest.mark.parametrize("service", IMAGES)
def test_images_start_with_only_what_they_install_and_copy(service):
    """A worker that imported the API's msaas.songs (for pybase64) restarted in a loop in its image, which lacks it.

    Here, where every image's requirements are installed, the image's start-up imports run with every package its
    requirements file does not bring refused; then every module of ours they loaded must be in a folder it copies.
    """
    instructions = dockerfile_instructions(ROOT / service / "Dockerfile")
    final = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    (cmd,) = [json.loads(arguments) for keyword, arguments in final if keyword == "CMD"]
    if cmd[:2] == ["python", "-m"]:
        assert f"{cmd[2]}.__main__" in STARTS[service], f"STARTS does not name what {service}'s CMD runs: {cmd}"
    else:
        assert cmd[0] == "gunicorn" and cmd[-1].partition(":")[0] in STARTS[service], cmd
    copied = {arguments.split()[0].rstrip("/") for keyword, arguments in final
              if keyword == "COPY" and not arguments.startswith("--from")}
    installed = installed_with([*pins(ROOT / f"requirements/{service}.txt"), *VENV_OWN])
    absent = {top for top, distributions in importlib.metadata.packages_distributions().items()
              if not {canonicalize_name(name) for name in distributions} & installed}
    absent -= copied | set(sys.stdlib_module_names)  # ours: the repo's own package is installed here, editable
    result = run(sys.executable, "-c", IMPORT_WITHOUT, json.dumps(sorted(absent)), *STARTS[service], *PROBE_MODULES)
    assert result.returncode == 0, (
        f"{service} imports at start what requirements/{service}.txt does not install:\n{result.stderr[-2000:]}"
    )
    prefix = Path(sys.prefix).resolve()
    ours = {Path(file).resolve() for file in json.loads(result.stdout).values() if file}
    ours = {path.relative_to(ROOT) for path in ours if path.is_relative_to(ROOT) and not path.is_relative_to(prefix)}
    assert ours, "the check saw none of our modules load"
    assert {path for path in ours if path.parts[0] not in copied} == set(), f"{service}/Dockerfile copies {copied}"
