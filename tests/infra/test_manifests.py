"""The Kubernetes manifests, checked offline: every overlay renders with the pinned kubectl, every
object validates (Kubernetes 1.32 schemas; InferenceServices against the kserve SDK's models and
the webhook's rules), the policies hold, and each check fails on a copy broken on purpose."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import manifest_checks as mc

OVERLAYS = mc.overlays()


@pytest.fixture(scope="module", params=OVERLAYS, ids=[p.name for p in OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> list[mc.Obj]:
    return mc.render(request.param)


@pytest.fixture(scope="module")
def kind_objects() -> list[mc.Obj]:
    return mc.render(mc.K8S_DIR / "overlays" / "kind")


def test_the_kind_overlay_exists_and_renders_the_platform(kind_objects: list[mc.Obj]) -> None:
    kinds = {o["kind"] for o in kind_objects}
    assert {"Deployment", "StatefulSet", "InferenceService", "NetworkPolicy", "Job"} <= kinds
    names = {o["metadata"]["name"] for o in kind_objects}
    assert {
        "mlflow",
        "postgres",
        "minio",
        "redis",
        "prefect",
        "prefect-worker",
        "router",
        "world",
    } <= names
    assert {"fraud", "recsys"} <= names


def test_kubectl_is_the_pinned_one() -> None:
    assert Path(mc.kubectl()).resolve().is_relative_to(Path(__import__("sys").prefix).resolve())


CHECKS: dict[str, Callable[[list[mc.Obj]], list[str]]] = {
    "schema": mc.schema_problems,
    "inference_service": mc.inference_service_problems,
    "image": mc.image_problems,
    "resources": mc.resource_problems,
    "probes": mc.probe_problems,
    "security": mc.security_problems,
    "services": mc.service_problems,
    "network_policies": mc.network_policy_problems,
    "references": lambda objs: mc.reference_problems(objs, mc.install_secrets()),
    "job_template": mc.job_template_problems,
    "settings": mc.settings_problems,
    "world_paths": mc.world_path_problems,
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_every_check_holds_on_every_overlay(rendered: list[mc.Obj], check: str) -> None:
    assert CHECKS[check](rendered) == []


def test_the_install_makes_the_secrets_the_manifests_name() -> None:
    assert mc.install_secrets() == {"mlsd-postgres", "mlsd-minio", "mlsd-router-admin"}


def test_the_sdk_walked_is_the_kserve_the_cluster_gets() -> None:
    # The InferenceServices are checked against the SDK's models; kind-up installs the same
    # KServe release, so the models describe the CRD the cluster will hold.
    script = mc.KIND_UP.read_text()
    assert f'KSERVE_VERSION="${{KSERVE_VERSION:-v{version("kserve")}}}"' in script


# --- each check fails on a copy broken on purpose -------------------------------------------


def find(objs: list[mc.Obj], kind: str, name: str) -> mc.Obj:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def router_container(objs: list[mc.Obj]) -> dict[str, Any]:
    return find(objs, "Deployment", "router")["spec"]["template"]["spec"]["containers"][0]


def world_pod(objs: list[mc.Obj]) -> dict[str, Any]:
    return find(objs, "Deployment", "world")["spec"]["template"]["spec"]


def world_container(objs: list[mc.Obj]) -> dict[str, Any]:
    return world_pod(objs)["containers"][0]


def policy(objs: list[mc.Obj], name: str) -> dict[str, Any]:
    return find(objs, "NetworkPolicy", name)["spec"]


def app_peer(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}


def isvc_predictor(objs: list[mc.Obj], name: str = "fraud") -> dict[str, Any]:
    return find(objs, "InferenceService", name)["spec"]["predictor"]


def isvc_container(objs: list[mc.Obj], name: str = "fraud") -> dict[str, Any]:
    return isvc_predictor(objs, name)["containers"][0]


def set_job_template(objs: list[mc.Obj], change: Callable[[dict[str, Any]], None]) -> None:
    cm = next(o for o in objs if mc.JOB_TEMPLATE_KEY in (o.get("data") or {}))
    template = json.loads(cm["data"][mc.JOB_TEMPLATE_KEY])
    change(template)
    cm["data"][mc.JOB_TEMPLATE_KEY] = json.dumps(template)


def _settings(objs: list[mc.Obj]) -> dict[str, str]:
    return find(objs, "ConfigMap", "mlsd-settings")["data"]


MUTATIONS: dict[str, tuple[str, Callable[[list[mc.Obj]], None], str]] = {
    # id: (check, mutation, a word the problem must contain)
    "unknown field in a Deployment": (
        "schema",
        lambda o: router_container(o).__setitem__("imagePullPolice", "Never"),
        "imagePullPolice",
    ),
    "wrong type in a StatefulSet": (
        "schema",
        lambda o: find(o, "StatefulSet", "postgres")["spec"].__setitem__("replicas", "one"),
        "replicas",
    ),
    "a kind no schema describes": (
        "schema",
        lambda o: find(o, "Deployment", "redis").__setitem__("apiVersion", "example.com/v1"),
        "no Kubernetes",
    ),
    "unknown field in an InferenceService": (
        "inference_service",
        lambda o: isvc_predictor(o).__setitem__("minReplica", 1),
        "minReplica",
    ),
    "unknown field deep in its container": (
        "inference_service",
        lambda o: isvc_container(o)["readinessProbe"]["httpGet"].__setitem__("paht", "/"),
        "paht",
    ),
    "wrong type in an InferenceService": (
        "inference_service",
        lambda o: isvc_predictor(o).__setitem__("maxReplicas", "1"),
        "maxReplicas",
    ),
    "two model formats in one predictor": (
        "inference_service",
        lambda o: isvc_predictor(o).__setitem__("sklearn", {"storageUri": "s3://mlflow/x"}),
        "one model format",
    ),
    "canary percentages over 100": (
        "inference_service",
        lambda o: find(o, "InferenceService", "fraud")["spec"].__setitem__(
            "canary",
            [
                {"trafficPercent": 60, "predictor": copy.deepcopy(isvc_predictor(o))},
                {"trafficPercent": 50, "predictor": copy.deepcopy(isvc_predictor(o))},
            ],
        ),
        "sums to 110",
    ),
    "a serverless InferenceService": (
        "inference_service",
        lambda o: find(o, "InferenceService", "recsys")["metadata"]["annotations"].__setitem__(
            "serving.kserve.io/deploymentMode", "Serverless"
        ),
        "Standard",
    ),
    "latest tag": (
        "image",
        lambda o: router_container(o).__setitem__("image", "mlsd-lab:latest"),
        "mlsd-lab:latest",
    ),
    "no tag": (
        "image",
        lambda o: find(o, "Deployment", "redis")["spec"]["template"]["spec"]["containers"][
            0
        ].__setitem__("image", "redis"),
        "'redis'",
    ),
    "no memory limit": (
        "resources",
        lambda o: isvc_container(o, "recsys")["resources"]["limits"].pop("memory"),
        "memory limit",
    ),
    "no CPU request on an init container": (
        "resources",
        lambda o: isvc_predictor(o)["initContainers"][0]["resources"]["requests"].pop("cpu"),
        "cpu request",
    ),
    "no readiness probe": (
        "probes",
        lambda o: router_container(o).pop("readinessProbe"),
        "readinessProbe",
    ),
    "no liveness probe on a model server": (
        "probes",
        lambda o: isvc_container(o, "fraud-shadow").pop("livenessProbe"),
        "livenessProbe",
    ),
    "runs as root": (
        "security",
        lambda o: find(o, "Deployment", "mlflow")["spec"]["template"]["spec"][
            "securityContext"
        ].__setitem__("runAsUser", 0),
        "root",
    ),
    "privilege escalation": (
        "security",
        lambda o: router_container(o)["securityContext"].__setitem__(
            "allowPrivilegeEscalation", True
        ),
        "escalation",
    ),
    "writable root filesystem": (
        "security",
        lambda o: isvc_container(o)["securityContext"].pop("readOnlyRootFilesystem"),
        "writable",
    ),
    "capabilities kept": (
        "security",
        lambda o: set_job_template(
            o,
            lambda t: t["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
                "containers"
            ][0]["securityContext"].pop("capabilities"),
        ),
        "capabilities",
    ),
    "a Service that selects nothing": (
        "services",
        lambda o: find(o, "Service", "router")["spec"]["selector"].__setitem__(
            "app.kubernetes.io/name", "ruoter"
        ),
        "matches no pod",
    ),
    "a Service to a port no pod has": (
        "services",
        lambda o: find(o, "Service", "mlflow")["spec"]["ports"][0].__setitem__(
            "targetPort", "grpc"
        ),
        "grpc",
    ),
    "a NetworkPolicy for pods that do not exist": (
        "network_policies",
        lambda o: find(o, "NetworkPolicy", "redis")["spec"]["podSelector"][
            "matchLabels"
        ].__setitem__("app.kubernetes.io/name", "memcached"),
        "matches no pod",
    ),
    "a NetworkPolicy peer that does not exist": (
        "network_policies",
        lambda o: find(o, "NetworkPolicy", "model-servers")["spec"]["ingress"][0]["from"][0][
            "podSelector"
        ].__setitem__("matchLabels", {"app.kubernetes.io/name": "gateway"}),
        "gateway",
    ),
    "a Secret no install makes": (
        "references",
        lambda o: router_container(o)["env"][0]["valueFrom"]["secretKeyRef"].__setitem__(
            "name", "pg"
        ),
        "Secret pg",
    ),
    "a committed Secret": (
        "references",
        lambda o: o.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "mlsd"}}
        ),
        "committed",
    ),
    "a missing ConfigMap": (
        "references",
        lambda o: o.remove(find(o, "ConfigMap", "postgres-init")),
        "postgres-init",
    ),
    "flow runs on another image": (
        "job_template",
        lambda o: set_job_template(
            o,
            lambda t: t["variables"]["properties"]["image"].__setitem__(
                "default", "mlsd-lab:0.0.9"
            ),
        ),
        "mlsd-lab:0.0.9",
    ),
    "a setting that does not exist": (
        "settings",
        lambda o: _settings(o).__setitem__("MLSD_ROUTER__PORTT", "8080"),
        "MLSD_ROUTER__PORTT",
    ),
    "a setting of the wrong type": (
        "settings",
        lambda o: _settings(o).__setitem__("MLSD_ROUTER__PORT", "eighty"),
        "port",
    ),
    "a Service on another port than the settings": (
        "settings",
        lambda o: find(o, "Service", "prefect")["spec"]["ports"][0].__setitem__("port", 4201),
        "prefect",
    ),
    "a model server on another port than the settings": (
        "settings",
        lambda o: isvc_container(o, "recsys").__setitem__(
            "args", ["--product", "recsys", "--http-port", "8090"]
        ),
        "8082",
    ),
    "a tracking URI on another port": (
        "settings",
        lambda o: _settings(o).__setitem__(
            "MLFLOW_TRACKING_URI", "http://mlflow.mlsd.svc.cluster.local:5001"
        ),
        "MLFLOW_TRACKING_URI",
    ),
    "no shadow server where the settings have one": (
        "settings",
        lambda o: o.remove(find(o, "InferenceService", "fraud-shadow")),
        "fraud-shadow",
    ),
    "the router sends to a server that is not there": (
        "settings",
        lambda o: _settings(o).__setitem__(
            "MLSD_ROUTER__RECSYS_UPSTREAM", "http://recsys.mlsd.svc.cluster.local"
        ),
        "recsys_upstream",
    ),
    # The world goes through the same checks as every workload ...
    "the world on the latest tag": (
        "image",
        lambda o: world_container(o).__setitem__("image", "mlsd-lab:latest"),
        "Deployment/mlsd/world",
    ),
    "the world without a memory limit": (
        "resources",
        lambda o: world_container(o)["resources"]["limits"].pop("memory"),
        "container world has no memory limit",
    ),
    "the world's init container without a CPU request": (
        "resources",
        lambda o: world_pod(o)["initContainers"][0]["resources"]["requests"].pop("cpu"),
        "wait-for-router has no cpu request",
    ),
    "the world without a liveness probe": (
        "probes",
        lambda o: world_container(o).pop("livenessProbe"),
        "container world has no livenessProbe",
    ),
    "the world as root": (
        "security",
        lambda o: world_pod(o)["securityContext"].__setitem__("runAsUser", 0),
        "container world may run as root",
    ),
    "the world keeps its capabilities": (
        "security",
        lambda o: world_container(o)["securityContext"].pop("capabilities"),
        "container world does not drop all capabilities",
    ),
    "the world's init container on a writable root": (
        "security",
        lambda o: world_pod(o)["initContainers"][0]["securityContext"].__setitem__(
            "readOnlyRootFilesystem", False
        ),
        "wait-for-router has a writable root filesystem",
    ),
    "the world's Service to a port it does not have": (
        "services",
        lambda o: find(o, "Service", "world")["spec"]["ports"][0].__setitem__("targetPort", 8091),
        "8091",
    ),
    "the world on another port than the settings": (
        "settings",
        lambda o: world_container(o)["ports"][0].__setitem__("containerPort", 8091),
        "world container ports [8091], settings say 8090",
    ),
    "the world started with flags": (
        "settings",
        lambda o: world_container(o).__setitem__("args", ["--host", "127.0.0.1"]),
        "simulator.control",
    ),
    "the world sends to the local router": (
        "settings",
        lambda o: _settings(o).__setitem__("MLSD_WORLD__ROUTER_URL", "http://127.0.0.1:8080"),
        "world.router_url",
    ),
    # ... and its network paths are the architecture's arrows, no more, no less.
    "the world may reach the model servers": (
        "world_paths",
        lambda o: policy(o, "world")["egress"].append(
            {
                "to": [
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {
                                    "key": mc.ISVC_POD_LABEL,
                                    "operator": "In",
                                    "values": ["fraud", "recsys"],
                                }
                            ]
                        }
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 8081}, {"protocol": "TCP", "port": 8082}],
            }
        ),
        "the world may reach fraud on 8081/TCP",
    ),
    "the world may reach MLflow through another policy": (
        "world_paths",
        lambda o: policy(o, "jobs")["podSelector"]["matchExpressions"][0]["values"].append("world"),
        "the world may reach mlflow on 5000/TCP",
    ),
    "the world may reach anything on one port": (
        "world_paths",
        lambda o: policy(o, "world")["egress"].append({"ports": [{"port": 9000}]}),
        "the world may reach * on 9000/TCP",
    ),
    "the world without its policy": (
        "world_paths",
        lambda o: o.remove(find(o, "NetworkPolicy", "world")),
        "the world cannot reach router on 8080/TCP",
    ),
    "Prefect does not admit the world": (
        "world_paths",
        lambda o: policy(o, "prefect")["ingress"][0]["from"].remove(app_peer("world")),
        "prefect does not admit the world on 4200/TCP",
    ),
    "any pod may call the world's control API": (
        "world_paths",
        lambda o: policy(o, "world").__setitem__("ingress", [{"from": [app_peer("router")]}]),
        "router may call the world's control API",
    ),
    "the world's egress to the router on another port than the settings": (
        "world_paths",
        lambda o: _settings(o).__setitem__("MLSD_ROUTER__PORT", "8081"),
        "the world cannot reach router on 8081/TCP",
    ),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_each_check_fails_on_a_copy_broken_on_purpose(
    kind_objects: list[mc.Obj], case: str
) -> None:
    check, mutate, word = MUTATIONS[case]
    broken = copy.deepcopy(kind_objects)
    mutate(broken)
    problems = CHECKS[check](broken)
    assert problems, f"{check} did not notice: {case}"
    assert any(word in p for p in problems), problems


def test_the_base_job_template_is_the_one_the_worker_and_bootstrap_mount() -> None:
    text = (mc.K8S_DIR / "base" / "prefect-base-job-template.json").read_text()
    job = mc.filled_job_manifest(json.loads(text))
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "mlsd"
    assert yaml.safe_dump(job)  # a plain, serialisable manifest
