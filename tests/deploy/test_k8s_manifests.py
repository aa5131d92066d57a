"""The Kubernetes manifests under deploy/k8s: schemas and consistency, offline.

    .venv/bin/python -m pytest tests/deploy/test_k8s_manifests.py

What checks what:

- Core kinds (Namespace, ConfigMap, DaemonSet, Service): the Kubernetes OpenAPI schemas that the
  PyPI package kubernetes-validate bundles, in strict mode (unknown fields are errors), for the
  oldest Kubernetes the manifests claim (1.27: gRPC probes are GA from it) and the newest bundled.
- ServiceMonitor: the prometheus-operator CRD's fields, enums and patterns, as the pydantic models
  of cloudcoil-models-prometheus-operator (generated from the operator's CRDs); their JSON Schema
  is made strict here (every object closed to unknown fields). They live in
  .venv/prometheus-operator-models, off the venv's path (scripts/requirements-prometheus-operator.txt).
- ServingRuntime and InferenceService: the field maps (JSON key, type, required) of the KServe
  Python SDK's API models, generated from KServe's Go types. Only the model files in
  .venv/kserve-sdk are read, not imported (scripts/requirements-kserve-sdk.txt: installed without
  the SDK's server dependencies); the Kubernetes types inside them (Container, Probe, ...) go to
  the strict Kubernetes schemas.
- Kustomize: each kustomization under deploy/k8s is rendered here (resources, namespace, JSON
  patches: the subset the manifests use; anything else is refused) and, where kubectl is on PATH,
  compared with `kubectl kustomize`.
- Consistency between the objects: selectors and labels, named ports, probes, the server config
  in the ConfigMap against the server's own settings (server/src/config.rs), the grace period.

A missing validator is a failure naming what to install, never a skip.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CONFIG_RS = ROOT / "server" / "src" / "config.rs"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
KSERVE_SDK_DIR = Path(os.environ.get("KSERVE_SDK_DIR", ROOT / ".venv" / "kserve-sdk"))
KSERVE_SDK_REQUIREMENTS = ROOT / "scripts" / "requirements-kserve-sdk.txt"
PROMETHEUS_MODELS_DIR = Path(
    os.environ.get("PROMETHEUS_OPERATOR_MODELS_DIR", ROOT / ".venv" / "prometheus-operator-models")
)
PROMETHEUS_MODELS_REQUIREMENTS = ROOT / "scripts" / "requirements-prometheus-operator.txt"
INSTALL = "scripts/setup.sh (or: .venv/bin/pip install -r scripts/requirements.txt)"

# Oldest Kubernetes the manifests are for (gRPC probes GA) and the newest kubernetes-validate has.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")

# The server's config keys (README, server/examples/server.toml) and runtime tables.
SERVER_KEYS = {
    "model_repository",
    "grpc_addr",
    "metrics_addr",
    "http_addr",
    "log_format",
    "log_level",
    "shutdown_grace",
    "allow_model_control",
    "allow_shared_memory",
    "device_health_interval",
    "max_message_size",
}
# The health service that is SERVING while the server takes requests (server/src/api/health.rs).
LIVE_SERVICE = "inference.GRPCInferenceService"
RUNTIME_TABLES = {"onnxruntime", "openvino", "litert", "tflite", "edgetpu"}
# After the drain, the gRPC and HTTP listeners get 2 s each to flush (SERVER_FLUSH, server/src/main.rs).
LISTENER_FLUSH_S = 2 + 2

MODEL_REPOSITORY = "/var/lib/inference-server/models"
SERVER_BINARY = "/opt/inference-server/bin/inference-server"
ACCELERATOR_LABEL = "inference.edge/accelerator"
ACCELERATOR_VALUES = {"cpu", "coral-usb", "coral-pcie", "ncs2"}
IMAGE_UID = 10001

CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ClusterServingRuntime",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches"}


# --------------------------------------------------------------------------- loading


def _yaml():
    try:
        import yaml
    except ImportError:
        pytest.fail(f"PyYAML is not installed: run {INSTALL}")
    return yaml


def load_docs(path: Path) -> list:
    """Every non-empty YAML document of a file."""
    yaml = _yaml()
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def rel(path: Path) -> str:
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def obj_id(obj: dict) -> str:
    ns = obj.get("metadata", {}).get("namespace")
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}" + (f" (ns {ns})" if ns else "")


# --------------------------------------------------------------------------- kustomize subset


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts: list[str], path: str):
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            if part not in doc:
                raise ValueError(f"{path}: no {part!r}")
            doc = doc[part]
        else:
            raise ValueError(f"{path}: {part!r} is inside a scalar")
    return doc


def apply_json_patch(doc: dict, ops: list) -> dict:
    """RFC 6902 add / replace / remove / test, as kustomize applies a JSON patch."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        parent, last = _walk(doc, parts[:-1], path), parts[-1]
        if kind == "test":
            if _walk(doc, parts, path) != op["value"]:
                raise ValueError(f"test failed at {path}: {_walk(doc, parts, path)!r} != {op['value']!r}")
        elif kind == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "replace":
            _walk(doc, parts, path)  # must exist
            parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            _walk(doc, parts, path)
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ValueError(f"JSON patch op {kind!r} is not supported by this renderer")
    return doc


def _matches(obj: dict, target: dict) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    want = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
    for key, value in target.items():
        if key not in want:
            raise ValueError(f"patch target key {key!r} is not supported by this renderer")
        if want[key] != value:
            return False
    return True


def render(directory: Path, _seen: tuple = ()) -> list[dict]:
    """`kubectl kustomize DIRECTORY` for the features the manifests use; refuses the others."""
    if directory in _seen:
        raise ValueError(f"kustomization cycle through {rel(directory)}")
    (k,) = load_docs(directory / "kustomization.yaml")
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise ValueError(
            f"{rel(directory)}/kustomization.yaml: {sorted(unknown)} not supported by "
            "this test's renderer; extend render() (and compare with kubectl kustomize)"
        )
    if (k.get("apiVersion"), k.get("kind")) != ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        raise ValueError(
            f"{rel(directory)}/kustomization.yaml: not a kustomize.config.k8s.io/v1beta1 Kustomization"
        )
    objects: list[dict] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path, _seen + (directory,))
        elif path.is_file():
            objects += load_docs(path)
        else:
            raise ValueError(f"{rel(directory)}/kustomization.yaml lists {entry!r}, which does not exist")
    for patch in k.get("patches", []):
        if set(patch) - {"path", "patch", "target"} or "target" not in patch:
            raise ValueError(f"{rel(directory)}: only JSON patches with path/patch and target are supported")
        ops = (
            load_docs(directory / patch["path"])[0] if "path" in patch else _yaml().safe_load(patch["patch"])
        )
        if not isinstance(ops, list):
            raise ValueError(f"{rel(directory)}: patch {patch} is not a JSON patch (a list of operations)")
        hits = [i for i, o in enumerate(objects) if _matches(o, patch["target"])]
        if not hits:
            raise ValueError(f"{rel(directory)}: patch target {patch['target']} matches no resource")
        for i in hits:
            objects[i] = apply_json_patch(objects[i], ops)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    keys = [obj_id(o) for o in objects]
    dupes = {x for x in keys if keys.count(x) > 1}
    if dupes:
        raise ValueError(f"{rel(directory)}: resources defined twice: {sorted(dupes)}")
    return objects


def canonical(objects: list[dict]) -> list[str]:
    return sorted(json.dumps(o, sort_keys=True) for o in objects)


# --------------------------------------------------------------------------- validators


@lru_cache(maxsize=None)
def _kubernetes_validate():
    try:
        import kubernetes_validate.utils as kv
    except ImportError:
        pytest.fail(
            f"kubernetes-validate is not installed (pinned in scripts/requirements.txt): run {INSTALL}"
        )
    missing = [v for v in KUBERNETES_VERSIONS if v not in kv.all_versions()]
    if missing:
        pytest.fail(f"kubernetes-validate {kv.__version__} has no schemas for Kubernetes {missing}")
    return kv


@lru_cache(maxsize=None)
def _k8s_definitions(version: str):
    """The strict definitions (io.k8s.api.core.v1.Container, ...) and a registry resolving them."""
    kv = _kubernetes_validate()
    from referencing import Registry, Resource

    defs = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    return defs, Resource.from_contents(defs) @ Registry()


def validate_k8s_type(value, definition: str, version: str = KUBERNETES_VERSIONS[-1]) -> list[str]:
    """Errors of `value` against one strict Kubernetes definition, e.g. io.k8s.api.core.v1.Probe."""
    import jsonschema

    defs, registry = _k8s_definitions(version)
    if definition not in defs["$defs"]:
        return [f"no Kubernetes {version} definition {definition}"]
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"{defs['$id']}#/$defs/{definition}"}, registry=registry
    )
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(value)
    ]


def validate_core(obj: dict, version: str) -> list[str]:
    kv = _kubernetes_validate()
    try:
        kv.validate(obj, version, strict=True)
    except kv.SchemaNotFoundError as e:
        return [f"{obj_id(obj)}: no Kubernetes {version} schema: {e.message}"]
    except kv.ValidationError as e:
        return [f"{obj_id(obj)}: {'.'.join(map(str, e.path))}: {e.message} (Kubernetes {version}, strict)"]
    return []


def _close_objects(schema):
    """Make a JSON Schema strict: an object with listed properties takes no others."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _close_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            _close_objects(value)
    return schema


def _pinned(requirements: Path, package: str) -> str:
    for line in requirements.read_text().splitlines():
        if m := re.fullmatch(rf"\s*{re.escape(package)}==(\S+)\s*", line):
            return m[1]
    pytest.fail(f"{rel(requirements)} pins no {package}==VERSION")


def _require_target(directory: Path, requirements: Path, package: str, no_deps: bool) -> str:
    """A package installed by scripts/setup.sh into a folder of its own, at its pinned version."""
    pin = _pinned(requirements, package)
    dist = package.replace("-", "_")
    if not list(directory.glob(f"{dist}-{pin}.dist-info")):
        pytest.fail(
            f"{package}=={pin} is not installed in {rel(directory)}: run scripts/setup.sh, or "
            f".venv/bin/pip install{' --no-deps' if no_deps else ''} --target {rel(directory)} "
            f"-r {rel(requirements)}"
        )
    return pin


@lru_cache(maxsize=None)
def _servicemonitor_validator():
    _require_target(
        PROMETHEUS_MODELS_DIR,
        PROMETHEUS_MODELS_REQUIREMENTS,
        "cloudcoil-models-prometheus-operator",
        no_deps=False,
    )
    if str(PROMETHEUS_MODELS_DIR) not in sys.path:
        sys.path.append(str(PROMETHEUS_MODELS_DIR))  # after the venv's own packages
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator
    import jsonschema

    schema = prometheus_operator.ServiceMonitor.model_json_schema(by_alias=True, mode="validation")
    # metadata is checked against Kubernetes' own ObjectMeta instead of the package's copy.
    schema["properties"]["metadata"] = {"type": "object"}
    return prometheus_operator, jsonschema.Draft202012Validator(_close_objects(schema))


def validate_servicemonitor(obj: dict) -> list[str]:
    models, validator = _servicemonitor_validator()
    errors = [
        f"{obj_id(obj)}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    if not errors:  # the models' own validation (types, enums, patterns) as a second opinion
        try:
            models.ServiceMonitor.model_validate(obj)
        except Exception as e:  # pydantic.ValidationError
            errors.append(f"{obj_id(obj)}: {e}")
    return errors


class KServeAPI:
    """The KServe SDK's generated models, read as data: class -> (JSON key -> type, required keys)."""

    def __init__(self, models_dir: Path):
        self.classes: dict[str, tuple[dict[str, str], set[str]]] = {}
        for path in sorted(models_dir.glob("*.py")):
            source = path.read_text()
            for node in ast.parse(source).body:
                if not isinstance(node, ast.ClassDef):
                    continue
                maps = {}
                for stmt in node.body:
                    if (
                        isinstance(stmt, ast.Assign)
                        and isinstance(stmt.targets[0], ast.Name)
                        and stmt.targets[0].id in ("openapi_types", "attribute_map")
                    ):
                        maps[stmt.targets[0].id] = ast.literal_eval(stmt.value)
                if len(maps) == 2:
                    fields = {
                        maps["attribute_map"][attr]: kind for attr, kind in maps["openapi_types"].items()
                    }
                    required = {
                        maps["attribute_map"][attr]
                        for attr in re.findall(r"Invalid value for `(\w+)`, must not be `None`", source)
                        if attr in maps["attribute_map"]
                    }
                    self.classes[node.name] = (fields, required)
        if "V1alpha1ServingRuntimeSpec" not in self.classes:
            raise ValueError(f"no KServe API models in {models_dir}")

    @staticmethod
    def k8s_definition(type_name: str) -> str | None:
        defs, _ = _k8s_definitions(KUBERNETES_VERSIONS[-1])
        if type_name == "ResourceQuantity":
            return "io.k8s.apimachinery.pkg.api.resource.Quantity"
        m = re.fullmatch(r"K8sIoApi([A-Z][a-z0-9]*)(V\d+(?:alpha\d+|beta\d+)?)(\w+)", type_name)
        if m:
            name = f"io.k8s.api.{m[1].lower()}.{m[2].lower()}.{m[3]}"
            return name if name in defs["$defs"] else None
        m = re.fullmatch(r"(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w+)", type_name)
        if not m:
            return None
        suffix = f".{m[1].lower()}.{m[2]}"
        hits = sorted(
            k
            for k in defs["$defs"]
            if k.endswith(suffix)
            and (k.startswith("io.k8s.api.") or k.startswith("io.k8s.apimachinery.pkg.apis.meta."))
        )
        core = [k for k in hits if k.startswith("io.k8s.api.core.")]
        if len(core) == 1:
            return core[0]
        return hits[0] if len(hits) == 1 else None

    def check(self, value, type_name: str, where: str) -> list[str]:
        if value is None:
            return []
        if m := re.fullmatch(r"list\[(.+)\]", type_name):
            if not isinstance(value, list):
                return [f"{where}: expected a list ({type_name})"]
            return [e for i, item in enumerate(value) for e in self.check(item, m[1], f"{where}[{i}]")]
        if m := re.fullmatch(r"dict\(str, (.+)\)", type_name):
            if not isinstance(value, dict):
                return [f"{where}: expected a map ({type_name})"]
            return [e for key, item in value.items() for e in self.check(item, m[1], f"{where}.{key}")]
        scalar = {"str": str, "bool": bool, "int": int, "float": (int, float), "datetime": str}
        if type_name in scalar:
            ok = isinstance(value, scalar[type_name]) and not (
                type_name in ("int", "float") and isinstance(value, bool)
            )
            return [] if ok else [f"{where}: expected {type_name}, got {value!r}"]
        if type_name == "object":
            return []
        if type_name in self.classes:
            fields, required = self.classes[type_name]
            if not isinstance(value, dict):
                return [f"{where}: expected an object ({type_name})"]
            errors = [
                f"{where}: unknown field {key!r} ({type_name} has {sorted(fields)})"
                for key in value
                if key not in fields
            ]
            errors += [
                f"{where}: required field {key!r} missing ({type_name})"
                for key in required
                if key not in value
            ]
            for key, item in value.items():
                if key in fields:
                    errors += self.check(item, fields[key], f"{where}.{key}")
            return errors
        definition = self.k8s_definition(type_name)
        if definition is None:
            return [f"{where}: no schema known for type {type_name}"]
        return [f"{where}.{e}" for e in validate_k8s_type(value, definition)]


@lru_cache(maxsize=None)
def _kserve_api() -> KServeAPI:
    _require_target(KSERVE_SDK_DIR, KSERVE_SDK_REQUIREMENTS, "kserve", no_deps=True)
    return KServeAPI(KSERVE_SDK_DIR / "kserve" / "models")


KSERVE_TOP = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntimeSpec",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceServiceSpec",
}


def validate_kserve(obj: dict) -> list[str]:
    api = _kserve_api()
    spec_type = KSERVE_TOP[(obj["apiVersion"], obj["kind"])]
    errors = [
        f"{obj_id(obj)}: unknown top-level field {k!r}"
        for k in obj
        if k not in ("apiVersion", "kind", "metadata", "spec")
    ]
    if "spec" not in obj:
        errors.append(f"{obj_id(obj)}: no spec")
    errors += [f"{obj_id(obj)}: {e}" for e in api.check(obj.get("spec"), spec_type, "spec")]
    return errors


def validate_object(obj: dict) -> list[str]:
    """Every schema error of one object, whatever its kind."""
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return [f"not a Kubernetes object: {str(obj)[:80]}"]
    key = (obj["apiVersion"], obj["kind"])
    if key not in CRD_KINDS:
        return [e for version in KUBERNETES_VERSIONS for e in validate_core(obj, version)]
    # A custom resource: Kubernetes' own ObjectMeta, then the CRD's spec.
    errors = [
        f"{obj_id(obj)}: metadata.{e}"
        for e in validate_k8s_type(obj.get("metadata"), "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    ]
    if not obj.get("metadata", {}).get("name"):
        errors.append(f"{obj_id(obj)}: metadata.name is missing")
    if key == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        return errors + validate_servicemonitor(obj)
    return errors + validate_kserve(obj)


# --------------------------------------------------------------------------- consistency


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind]


def _one(objects, kind, problems) -> dict | None:
    found = _by_kind(objects, kind)
    if len(found) != 1:
        problems.append(f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _port_of(addr: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"(.+):(\d+)", addr or "")
    return (m[1], int(m[2])) if m else None


def _struct_fields(source: str, struct: str) -> set[str] | None:
    m = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", source, re.S)
    if not m:
        return None
    fields, skip = set(), False
    for line in m[1].splitlines():
        line = line.strip()
        if line.startswith("#[serde(skip"):
            skip = True
        elif fm := re.match(r"pub (\w+):", line):
            if not skip:
                fields.add(fm[1])
            skip = False
    return fields


def server_config_problems(text: str) -> list[str]:
    """The ConfigMap's server.toml against the keys the server accepts."""
    problems = []
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [f"server.toml does not parse: {e}"]
    source = CONFIG_RS.read_text()
    accepted = _struct_fields(source, "SettingsFile")
    runtime_keys = _struct_fields(source, "RuntimeServerSettings")
    if accepted is None or runtime_keys is None:
        return [f"cannot find SettingsFile / RuntimeServerSettings in {rel(CONFIG_RS)}: update this test"]
    for key, value in config.items():
        if isinstance(value, dict):
            if key not in RUNTIME_TABLES:
                problems.append(f"server.toml: table [{key}] is not a runtime ({sorted(RUNTIME_TABLES)})")
            problems += [
                f"server.toml: [{key}] {k} is not a runtime setting ({sorted(runtime_keys)})"
                for k in value
                if k not in runtime_keys
            ]
        elif key not in SERVER_KEYS:
            problems.append(f"server.toml: {key} is not one of the documented keys {sorted(SERVER_KEYS)}")
        elif key not in accepted:
            problems.append(f"server.toml: {key} is no longer accepted by the server ({rel(CONFIG_RS)})")
    if config.get("log_format") != "json":
        problems.append("server.toml: log_format must be json in the cluster")
    for key in ("grpc_addr", "http_addr", "metrics_addr"):
        addr = _port_of(config.get(key, ""))
        if addr is None or addr[0] not in ("0.0.0.0", "[::]"):
            problems.append(
                f"server.toml: {key} = {config.get(key)!r} must listen on all interfaces (0.0.0.0:PORT)"
            )
    grace = config.get("shutdown_grace", 30)
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace <= 0:
        problems.append(f"server.toml: shutdown_grace = {grace!r} is not a positive number of seconds")
    return problems


def _container_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}


def _probe_port(probe: dict, ports: dict[str, int]) -> tuple[str, int | None]:
    for handler in ("grpc", "httpGet", "tcpSocket"):
        if handler in probe:
            port = probe[handler]["port"]
            return handler, ports.get(port) if isinstance(port, str) else port
    return "exec", None


def server_problems(objects: list[dict]) -> list[str]:
    """Consistency of a base/overlay build: DaemonSet, ConfigMap, Service, ServiceMonitor."""
    problems: list[str] = []
    ds = _one(objects, "DaemonSet", problems)
    cm = _one(objects, "ConfigMap", problems)
    svc = _one(objects, "Service", problems)
    sm = _one(objects, "ServiceMonitor", problems)
    ns = _one(objects, "Namespace", problems)
    if None in (ds, cm, svc, sm, ns):
        return problems
    for obj in (ds, cm, svc, sm):
        if obj["metadata"].get("namespace") != ns["metadata"]["name"]:
            problems.append(f"{obj_id(obj)} is not in namespace {ns['metadata']['name']}")

    spec = ds["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    if not _selects(spec["selector"].get("matchLabels", {}), pod_labels) or set(spec["selector"]) != {
        "matchLabels"
    }:
        problems.append("DaemonSet selector.matchLabels does not match its pod template's labels")
    if not _selects(svc["spec"].get("selector", {}), pod_labels):
        problems.append("Service selector does not select the DaemonSet's pods")
    if not _selects(sm["spec"]["selector"].get("matchLabels", {}), svc["metadata"].get("labels", {})):
        problems.append("ServiceMonitor selector does not select the Service's labels")

    containers = [c for c in pod["containers"] if c["name"] == "inference-server"]
    if len(containers) != 1:
        return problems + ["no container named inference-server"]
    c = containers[0]
    ports = _container_ports(c)
    if set(ports) != {"grpc", "http", "metrics"}:
        problems.append(f"container ports are named {sorted(ports)}, expected grpc, http, metrics")

    # Service -> container ports, ServiceMonitor -> Service port.
    svc_ports = {p.get("name"): p for p in svc["spec"]["ports"]}
    for name, p in svc_ports.items():
        target = p.get("targetPort", p["port"])
        if isinstance(target, str) and target not in ports:
            problems.append(f"Service port {name} targets {target!r}, not a named container port")
        if isinstance(target, int) and target not in ports.values():
            problems.append(f"Service port {name} targets {target}, not a container port")
        if name in ports and p["port"] != ports[name]:
            problems.append(f"Service port {name} is {p['port']}, the container's is {ports[name]}")
    if svc_ports.get("grpc", {}).get("appProtocol") != "grpc":
        problems.append("Service port grpc needs appProtocol: grpc")
    if svc["spec"].get("type", "ClusterIP") != "ClusterIP":
        problems.append("Service must be ClusterIP")
    for ep in sm["spec"].get("endpoints", []):
        if ep.get("port") not in svc_ports:
            problems.append(f"ServiceMonitor endpoint port {ep.get('port')!r} is not a Service port name")
        if ep.get("interval") != "15s":
            problems.append(f"ServiceMonitor interval is {ep.get('interval')!r}, expected 15s")
    if not sm["spec"].get("endpoints"):
        problems.append("ServiceMonitor has no endpoints")

    # The config file: mounted where the args say, listening on the container ports.
    config_volumes = [
        v for v in pod.get("volumes", []) if v.get("configMap", {}).get("name") == cm["metadata"]["name"]
    ]
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    args = c.get("args", [])
    if c.get("command") != [SERVER_BINARY]:
        problems.append(f"container command is {c.get('command')}, expected [{SERVER_BINARY}]")
    if "server.toml" not in cm.get("data", {}):
        return problems + ["ConfigMap has no server.toml"]
    if len(config_volumes) != 1 or config_volumes[0]["name"] not in mounts:
        problems.append("the ConfigMap is not mounted into the container")
    else:
        items = config_volumes[0]["configMap"].get("items")
        file_name = (
            next((i["path"] for i in items if i["key"] == "server.toml"), None) if items else "server.toml"
        )
        config_path = f"{mounts[config_volumes[0]['name']]['mountPath'].rstrip('/')}/{file_name}"
        if args not in (["--config", config_path], [f"--config={config_path}"]):
            problems.append(f"container args {args} do not pass --config {config_path}")
    text = cm["data"]["server.toml"]
    problems += server_config_problems(text)
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return problems
    for key, name in (("grpc_addr", "grpc"), ("http_addr", "http"), ("metrics_addr", "metrics")):
        addr = _port_of(config.get(key, ""))
        if addr and ports.get(name) != addr[1]:
            problems.append(
                f"server.toml {key} port {addr[1]} is not the container port {name} ({ports.get(name)})"
            )
    grace = config.get("shutdown_grace", 30)
    if not isinstance(grace, (int, float)):
        grace = 30

    # The model repository: the node's folder, read-only, where server.toml says.
    repo = config.get("model_repository")
    repo_mounts = [
        m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == str(repo).rstrip("/")
    ]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if repo != MODEL_REPOSITORY or len(repo_mounts) != 1:
        problems.append(f"model_repository {repo!r} is not {MODEL_REPOSITORY}, mounted once")
    else:
        m = repo_mounts[0]
        hp = volumes.get(m["name"], {}).get("hostPath", {})
        if hp.get("path") != MODEL_REPOSITORY or hp.get("type") != "Directory":
            problems.append(
                f"the model repository volume is not hostPath {MODEL_REPOSITORY} (type Directory)"
            )
        if m.get("readOnly") is not True:
            problems.append("the model repository is not mounted read-only")
    for m in c.get("volumeMounts", []):
        if m["name"] not in volumes:
            problems.append(f"volumeMount {m['name']} has no volume")
    for name, v in volumes.items():
        if name not in mounts:
            problems.append(f"volume {name} is not mounted")
        hp = v.get("hostPath")
        if hp and hp["path"] != MODEL_REPOSITORY and not hp["path"].startswith("/dev/"):
            problems.append(f"hostPath {hp['path']} is neither the model repository nor a device")

    # Probes.
    startup, liveness, readiness = (c.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe"))
    if not (startup and liveness and readiness):
        return problems + ["the container needs startup, liveness and readiness probes"]
    for what, probe in (("startup", startup), ("liveness", liveness), ("readiness", readiness)):
        handler, port = _probe_port(probe, ports)
        if port is None or port not in ports.values():
            problems.append(f"{what} probe ({handler}) uses a port the container does not expose")
    for what, probe in (("startup", startup), ("liveness", liveness)):
        if (probe.get("grpc", {}).get("port") != ports.get("grpc")
                or probe["grpc"].get("service") != LIVE_SERVICE):
            problems.append(f"{what} probe must be gRPC health service {LIVE_SERVICE} on the grpc port")
    http = readiness.get("httpGet")
    grpc_model = readiness.get("grpc", {}).get("service")
    if not ((http and http.get("path") == "/v2/health/ready") or grpc_model):
        problems.append("readiness probe must be GET /v2/health/ready or the gRPC health of a model")
    if http and config.get("http_addr") == "off":
        problems.append("readiness probe uses HTTP but server.toml turns HTTP off")

    def window(probe):
        return probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)

    if window(startup) < 300:
        problems.append(
            f"startup probe allows {window(startup)} s for model loads; a Raspberry Pi needs >= 300"
        )
    if window(liveness) <= grace:
        problems.append(
            f"liveness fails after {window(liveness)} s, within the {grace} s drain (NOT_SERVING)"
        )

    # Shutdown, placement, resources.
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > grace + LISTENER_FLUSH_S:
        problems.append(
            f"terminationGracePeriodSeconds {tgps} must exceed shutdown_grace {grace}"
            f" + {LISTENER_FLUSH_S} s flush"
        )
    exprs = [
        e
        for term in pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
        for e in term.get("matchExpressions", [])
    ]
    accel = [e for e in exprs if e["key"] == ACCELERATOR_LABEL]
    if not accel or any(
        e["operator"] not in ("In", "Exists") or not set(e.get("values", [])) <= ACCELERATOR_VALUES
        for e in accel
    ):
        problems.append(f"node affinity must require {ACCELERATOR_LABEL} in {sorted(ACCELERATOR_VALUES)}")
    if not any(
        t.get("operator") == "Exists" and t.get("effect") == "NoSchedule" for t in pod.get("tolerations", [])
    ):
        problems.append("no toleration for the edge nodes' NoSchedule taints")
    rolling = spec.get("updateStrategy", {}).get("rollingUpdate", {})
    if rolling.get("maxSurge", 0) not in (0, "0", "0%"):
        problems.append("a surge pod would fight the old one for the node's accelerator: maxSurge must be 0")
    problems += resource_problems(c)

    # Security: the base pod is locked down; privileged only together with device mounts.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    device_mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].startswith("/dev/")]
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not set")
    if (
        csc.get("runAsUser", psc.get("runAsUser")) != IMAGE_UID
        or csc.get("runAsGroup", psc.get("runAsGroup")) != IMAGE_UID
    ):
        problems.append(f"the container must run as uid/gid {IMAGE_UID} (the image's inference-server user)")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if csc.get("capabilities", {}).get("drop") != ["ALL"] or csc.get("capabilities", {}).get("add"):
        problems.append("capabilities must drop ALL and add none")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false")
    if pod.get("enableServiceLinks") is not False:
        problems.append("enableServiceLinks must be false (INFERENCE_SERVER_* service variables)")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} must not be set")
    if csc.get("privileged"):
        if not device_mounts:
            problems.append("privileged without any device mount")
        if not psc.get("supplementalGroups"):
            problems.append("privileged device access without the device group in supplementalGroups")
    else:
        if device_mounts:
            problems.append(
                f"device mounts {[m['mountPath'] for m in device_mounts]}"
                " without privileged cannot open the devices"
            )
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation must be false")
        seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            problems.append("seccompProfile must be RuntimeDefault")
    return problems


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value) -> float:
    m = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi)?", str(value))
    if not m:
        raise ValueError(f"quantity {value!r} not understood by this test")
    return float(m[1]) * _UNITS[m[2] or ""]


def resource_problems(container: dict) -> list[str]:
    """Requests and limits set, requests within limits, sized for a Raspberry Pi 4."""
    problems = []
    res = container.get("resources", {})
    requests, limits = res.get("requests", {}), res.get("limits", {})
    for key in ("cpu", "memory"):
        if key not in requests or key not in limits:
            problems.append(f"{container['name']}: resources need a {key} request and limit")
        elif _quantity(requests[key]) > _quantity(limits[key]):
            problems.append(
                f"{container['name']}: {key} request {requests[key]} exceeds the limit {limits[key]}"
            )
    if "cpu" in limits and _quantity(limits["cpu"]) > 4:
        problems.append(f"{container['name']}: a cpu limit over 4 cores does not fit a Raspberry Pi 4")
    if "memory" in requests and _quantity(requests["memory"]) > 2**30:
        problems.append(
            f"{container['name']}: a memory request over 1 GiB does not fit a 2 GiB Raspberry Pi 4"
        )
    return problems


def _flag_problems(args: list[str]) -> list[str]:
    """Each --flag=value in args is a flag the server has (its INFERENCE_SERVER_* variable exists)."""
    source = CONFIG_RS.read_text()
    problems = []
    for arg in args:
        m = re.fullmatch(r"--([a-z-]+)=(.*)", arg)
        if not m:
            problems.append(f"argument {arg!r} is not --flag=value")
            continue
        env = "INFERENCE_SERVER_" + m[1].upper().replace("-", "_")
        if f'env = "{env}"' not in source:
            problems.append(f"{arg}: the server has no flag --{m[1]} ({env} not in {rel(CONFIG_RS)})")
    return problems


def kserve_problems(objects: list[dict]) -> list[str]:
    problems: list[str] = []
    sr = _one(objects, "ServingRuntime", problems)
    isvc = _one(objects, "InferenceService", problems)
    if None in (sr, isvc):
        return problems
    spec = sr["spec"]
    formats = {f["name"]: f for f in spec.get("supportedModelFormats", [])}
    if set(formats) != {"onnx", "openvino", "tflite"}:
        problems.append(f"supportedModelFormats are {sorted(formats)}, expected onnx, openvino, tflite")
    if formats.get("onnx", {}).get("autoSelect") is not True:
        problems.append("onnx must be autoSelect: true")
    protocols = spec.get("protocolVersions", [])
    if not {"v2", "grpc-v2"} <= set(protocols):
        problems.append(f"protocolVersions {protocols} must include v2 and grpc-v2")
    containers = spec.get("containers", [])
    if [c.get("name") for c in containers] != ["kserve-container"]:
        problems.append("the ServingRuntime needs exactly one container, named kserve-container")
        return problems
    c = containers[0]
    args = c.get("args", [])
    if c.get("command") != [SERVER_BINARY]:
        problems.append(f"container command is {c.get('command')}, expected [{SERVER_BINARY}]")
    if "--model-repository=/mnt/models" not in args:
        problems.append("args must take the model repository from KServe's /mnt/models")
    problems += _flag_problems(args)
    values = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    for key in ("http-addr", "grpc-addr", "metrics-addr"):
        addr = _port_of(values.get(key, ""))
        if addr is None or addr[0] != "0.0.0.0":
            problems.append(f"--{key} must listen on 0.0.0.0")
    http, grpc, metrics = (_port_of(values.get(k, "")) for k in ("http-addr", "grpc-addr", "metrics-addr"))
    if http and http[1] != 8080:
        problems.append("KServe sends HTTP to port 8080: --http-addr must use it")
    if metrics and spec.get("annotations", {}).get("prometheus.kserve.io/port") != str(metrics[1]):
        problems.append("the prometheus.kserve.io/port annotation is not the --metrics-addr port")
    if len({a[1] for a in (http, grpc, metrics) if a}) != 3:
        problems.append("HTTP, gRPC and metrics need three different ports")
    csc = c.get("securityContext", {})
    if (
        not csc.get("runAsNonRoot")
        or csc.get("allowPrivilegeEscalation") is not False
        or csc.get("capabilities", {}).get("drop") != ["ALL"]
        or csc.get("readOnlyRootFilesystem") is not True
    ):
        problems.append(
            "the kserve-container must be non-root, without privilege escalation or capabilities,"
            " read-only root"
        )
    problems += resource_problems(c)

    model = isvc["spec"].get("predictor", {}).get("model", {})
    if model.get("runtime") != sr["metadata"]["name"]:
        problems.append(
            f"InferenceService runtime {model.get('runtime')!r}"
            f" is not the ServingRuntime {sr['metadata']['name']!r}"
        )
    if model.get("modelFormat", {}).get("name") not in formats:
        problems.append(
            f"InferenceService modelFormat {model.get('modelFormat')} is not supported by the runtime"
        )
    if model.get("protocolVersion", "v1") not in protocols:
        problems.append(
            f"InferenceService protocolVersion {model.get('protocolVersion')!r} is not one of {protocols}"
        )
    if not model.get("storageUri"):
        problems.append("InferenceService has no storageUri")
    return problems


# --------------------------------------------------------------------------- tests: files and builds

BUILDS = {rel(d): d for d in kustomization_dirs()}
YAML_FILES = sorted(rel(p) for p in K8S.rglob("*.y*ml"))


def test_the_expected_builds_exist():
    assert set(BUILDS) == {
        f"deploy/k8s/{d}" for d in ("base", "overlays/accelerators", "overlays/coral-pcie", "kserve")
    }


def test_every_yaml_file_is_a_kustomization_resource_or_patch():
    used = set()
    for d in BUILDS.values():
        (k,) = load_docs(d / "kustomization.yaml")
        used.add(d / "kustomization.yaml")
        used |= {(d / r).resolve() for r in k.get("resources", []) if (d / r).is_file()}
        used |= {(d / p["path"]).resolve() for p in k.get("patches", []) if "path" in p}
    orphans = [f for f in YAML_FILES if (ROOT / f).resolve() not in used]
    assert not orphans, f"not in any kustomization, so never deployed nor validated: {orphans}"
    assert not [f for f in YAML_FILES if f.endswith(".yml")], "use .yaml"


@pytest.mark.parametrize("name", YAML_FILES)
def test_file_parses_and_every_document_validates(name):
    path = ROOT / name
    docs = load_docs(path)
    assert docs, f"{name} is empty"
    if path.name == "kustomization.yaml":
        return  # rendered below
    if isinstance(docs[0], list):  # a JSON patch of an overlay: its result is validated with the build
        assert len(docs) == 1 and all(
            {"op", "path"} <= set(op) for op in docs[0]
        ), f"{name}: not a JSON patch"
        return
    errors = [e for doc in docs for e in validate_object(doc)]
    assert not errors, f"{name}:\n" + "\n".join(errors)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_build_renders_and_validates(build):
    objects = render(BUILDS[build])
    assert objects
    errors = [e for obj in objects for e in validate_object(obj)]
    assert not errors, f"{build}:\n" + "\n".join(errors)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_build_equals_kubectl_kustomize(build):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not on PATH: the builds are still rendered and checked by this test's renderer"
        )
    out = subprocess.run(
        [kubectl, "kustomize", str(BUILDS[build])], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"kubectl kustomize {build} failed:\n{out.stderr}"
    theirs = [d for d in _yaml().safe_load_all(out.stdout) if d is not None]
    assert canonical(render(BUILDS[build])) == canonical(theirs)


@pytest.mark.parametrize("build", [b for b in sorted(BUILDS) if not b.endswith("/kserve")])
def test_server_build_is_consistent(build):
    problems = server_problems(render(BUILDS[build]))
    assert not problems, "\n".join(problems)


def test_kserve_build_is_consistent():
    problems = kserve_problems(render(K8S / "kserve"))
    assert not problems, "\n".join(problems)


def test_base_is_unprivileged_and_overlays_add_only_device_access():
    base = {obj_id(o): o for o in render(K8S / "base")}
    ds = base["DaemonSet/inference-server (ns inference-server)"]
    c = ds["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["privileged"] is False
    assert not [
        v
        for v in ds["spec"]["template"]["spec"]["volumes"]
        if v.get("hostPath", {}).get("path", "").startswith("/dev")
    ]
    for overlay, devices in (
        ("overlays/accelerators", {"/dev/bus/usb"}),
        ("overlays/coral-pcie", {"/dev/bus/usb", "/dev/apex_0"}),
    ):
        objects = {obj_id(o): o for o in render(K8S / overlay)}
        assert set(objects) == set(base), overlay
        for key, obj in objects.items():
            if obj["kind"] != "DaemonSet":
                assert obj == base[key], f"{overlay} changes {key}"
        pod = objects["DaemonSet/inference-server (ns inference-server)"]["spec"]["template"]["spec"]
        host = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in pod["volumes"] if "hostPath" in v}
        assert {p for p in host if p.startswith("/dev")} == devices, overlay
        assert host.get("/dev/bus/usb") == "Directory", "USB sticks re-enumerate: mount the directory"
        if "/dev/apex_0" in host:
            assert host["/dev/apex_0"] == "CharDevice"
            values = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"
            ][0]["matchExpressions"][0]["values"]
            assert values == ["coral-pcie"], "only nodes with the PCIe TPU have /dev/apex_0"


def test_servicemonitor_job_is_the_one_the_alerts_use():
    if not ALERTS.exists():
        pytest.skip(f"{rel(ALERTS)} is not there to compare with")
    jobs = set(re.findall(r'job="([^"]+)"', ALERTS.read_text()))
    objects = render(K8S / "base")
    (svc,) = _by_kind(objects, "Service")
    (sm,) = _by_kind(objects, "ServiceMonitor")
    label = sm["spec"].get("jobLabel")
    job = svc["metadata"]["labels"].get(label) if label else svc["metadata"]["name"]
    assert jobs and job in jobs, f"Prometheus will call the job {job!r}; {rel(ALERTS)} expects {sorted(jobs)}"


# --------------------------------------------------------------------------- tests: the checks bite


def _base() -> list[dict]:
    return render(K8S / "base")


def _find(objects, kind) -> dict:
    return next(o for o in objects if o["kind"] == kind)


def _container(objects) -> dict:
    return _find(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def test_strict_core_validation_rejects_an_unknown_field():
    ds = copy.deepcopy(_find(_base(), "DaemonSet"))
    assert validate_object(ds) == []
    ds["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["servce"] = ""
    errors = validate_object(ds)
    assert len(errors) == len(KUBERNETES_VERSIONS) and all("servce" in e for e in errors), errors


def test_core_validation_rejects_a_wrong_type_and_an_unknown_kind():
    svc = copy.deepcopy(_find(_base(), "Service"))
    svc["spec"]["ports"][0]["port"] = "eight thousand"
    assert validate_object(svc)
    assert validate_object({"apiVersion": "v1", "kind": "Servise", "metadata": {"name": "x"}})


def test_core_validation_knows_the_oldest_supported_kubernetes():
    # GRPCAction.mode is newer than 1.27: accepted by the newest schema, refused by the oldest.
    ds = copy.deepcopy(_find(_base(), "DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["mode"] = "Plaintext"
    assert validate_core(ds, KUBERNETES_VERSIONS[-1]) == []
    assert validate_core(ds, KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda sm: sm["spec"]["endpoints"][0].update(intervall="15s"), "intervall"),
        (lambda sm: sm["spec"]["endpoints"][0].update(interval="15 seconds"), "15 seconds"),
        (lambda sm: sm["spec"]["endpoints"][0].update(scheme="ftp"), "ftp"),
        (lambda sm: sm["spec"].pop("selector"), "selector"),
        (lambda sm: sm.update(apiVersion="monitoring.coreos.com/v2"), "monitoring.coreos.com"),
    ],
)
def test_servicemonitor_validation_rejects(mutate, expected):
    sm = copy.deepcopy(_find(_base(), "ServiceMonitor"))
    assert validate_object(sm) == []
    mutate(sm)
    errors = validate_object(sm)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda sr, isvc: sr["spec"].update(supportedModelFormat=[]), "supportedModelFormat"),
        (lambda sr, isvc: sr["spec"]["supportedModelFormats"][0].update(autoSelect="yes"), "autoSelect"),
        (lambda sr, isvc: sr["spec"]["containers"][0].update(imagee="x"), "imagee"),
        (
            lambda sr, isvc: sr["spec"]["containers"][0]["securityContext"].update(runAsNonroot=True),
            "runAsNonroot",
        ),
        (lambda sr, isvc: isvc["spec"]["predictor"]["model"].update(storageURI="pvc://x"), "storageURI"),
        (lambda sr, isvc: isvc["spec"]["predictor"]["model"].pop("modelFormat"), "modelFormat"),
        (lambda sr, isvc: isvc["spec"]["predictor"].update(modell={}), "modell"),
    ],
)
def test_kserve_validation_rejects(mutate, expected):
    objects = copy.deepcopy(render(K8S / "kserve"))
    sr, isvc = _find(objects, "ServingRuntime"), _find(objects, "InferenceService")
    assert validate_object(sr) == [] and validate_object(isvc) == []
    mutate(sr, isvc)
    errors = validate_object(sr) + validate_object(isvc)
    assert any(expected in e for e in errors), errors


def test_schema_sources_are_the_pinned_versions():
    kv = _kubernetes_validate()
    pinned = re.search(
        r"^kubernetes-validate==(\S+)$", (ROOT / "scripts" / "requirements.txt").read_text(), re.M
    )
    assert pinned and kv.__version__ == pinned[1], f"kubernetes-validate {kv.__version__} is installed"
    for directory, requirements, package, no_deps in (
        (KSERVE_SDK_DIR, KSERVE_SDK_REQUIREMENTS, "kserve", True),
        (
            PROMETHEUS_MODELS_DIR,
            PROMETHEUS_MODELS_REQUIREMENTS,
            "cloudcoil-models-prometheus-operator",
            False,
        ),
    ):
        pin = _require_target(directory, requirements, package, no_deps)
        dist = package.replace("-", "_")
        assert [p.name for p in directory.glob(f"{dist}-*.dist-info")] == [f"{dist}-{pin}.dist-info"]


def _set_port(objs, name, value):
    for p in _container(objs)["ports"]:
        if p["name"] == name:
            p["containerPort"] = value


def _edit_config(objs, old, new):
    cm = _find(objs, "ConfigMap")
    assert old in cm["data"]["server.toml"]
    cm["data"]["server.toml"] = cm["data"]["server.toml"].replace(old, new)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda o: _find(o, "Service")["spec"]["ports"][0].update(targetPort="grpc-port"),
            "not a named container port",
        ),
        (
            lambda o: _find(o, "Service")["spec"]["selector"].update({"app.kubernetes.io/name": "other"}),
            "Service selector",
        ),
        (
            lambda o: _find(o, "DaemonSet")["spec"]["selector"]["matchLabels"].update(extra="x"),
            "DaemonSet selector",
        ),
        (
            lambda o: _find(o, "ServiceMonitor")["spec"]["endpoints"][0].update(port="prometheus"),
            "not a Service port name",
        ),
        (
            lambda o: _find(o, "ServiceMonitor")["spec"]["selector"]["matchLabels"].update(tier="x"),
            "ServiceMonitor selector",
        ),
        (lambda o: _set_port(o, "grpc", 9001), "grpc_addr port 8001"),
        (lambda o: _container(o)["readinessProbe"]["httpGet"].update(port="web"), "readiness probe"),
        (lambda o: _container(o)["livenessProbe"]["grpc"].update(port=9999), "liveness probe"),
        (lambda o: _container(o)["livenessProbe"].update(failureThreshold=2), "within the 30 s drain"),
        (lambda o: _container(o)["startupProbe"].update(failureThreshold=3), "startup probe allows"),
        (
            lambda o: _find(o, "DaemonSet")["spec"]["template"]["spec"].update(
                terminationGracePeriodSeconds=30
            ),
            "terminationGracePeriodSeconds",
        ),
        (
            lambda o: _edit_config(o, "shutdown_grace = 30", "shutdown_grace = 44"),
            "terminationGracePeriodSeconds",
        ),
        (
            lambda o: _edit_config(o, 'log_format = "json"', 'log_format = "json"\nlog_colour = true'),
            "log_colour",
        ),
        (lambda o: _edit_config(o, "[openvino]", "[tensorflow]"), "[tensorflow]"),
        (
            lambda o: _edit_config(o, 'library = "/opt/inference-server/lib/openvino"', 'path = "/x"'),
            "[openvino] path",
        ),
        (lambda o: _edit_config(o, '"0.0.0.0:8002"', '"127.0.0.1:8002"'), "metrics_addr"),
        (lambda o: _edit_config(o, 'log_format = "json"', 'log_format = "text"'), "log_format"),
        (lambda o: _edit_config(o, "grpc_addr =", "grpc_addr = = "), "does not parse"),
        (lambda o: _container(o).update(args=["--config", "/etc/server.toml"]), "do not pass --config"),
        (lambda o: _container(o)["volumeMounts"][1].update(readOnly=False), "read-only"),
        (
            lambda o: _container(o)["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (
            lambda o: _container(o)["securityContext"].update(privileged=True),
            "privileged without any device mount",
        ),
        (
            lambda o: _container(o)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
            "capabilities",
        ),
        (
            lambda o: _find(o, "DaemonSet")["spec"]["template"]["spec"]["securityContext"].pop(
                "seccompProfile"
            ),
            "seccompProfile",
        ),
        (
            lambda o: _find(o, "DaemonSet")["spec"]["template"]["spec"].update(enableServiceLinks=True),
            "enableServiceLinks",
        ),
        (lambda o: _container(o)["resources"]["requests"].update(memory="2Gi"), "exceeds the limit"),
        (
            lambda o: _find(o, "DaemonSet")["spec"]["updateStrategy"]["rollingUpdate"].update(maxSurge=1),
            "maxSurge",
        ),
        (
            lambda o: _find(o, "DaemonSet")["spec"]["template"]["spec"]["volumes"].append(
                {"name": "dev", "hostPath": {"path": "/dev/bus/usb"}}
            ),
            "volume dev is not mounted",
        ),
        (
            lambda o: _container(o)["volumeMounts"].append({"name": "sys", "mountPath": "/sys"}),
            "volumeMount sys has no volume",
        ),
    ],
)
def test_consistency_check_catches(mutate, expected):
    objects = copy.deepcopy(_base())
    assert server_problems(objects) == []
    mutate(objects)
    problems = server_problems(objects)
    assert any(expected in p for p in problems), problems


def test_consistency_check_catches_device_mounts_without_privileged():
    objects = copy.deepcopy(render(K8S / "overlays" / "accelerators"))
    assert server_problems(objects) == []
    _container(objects)["securityContext"].update(privileged=False, allowPrivilegeEscalation=False)
    assert any("without privileged" in p for p in server_problems(objects))


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda sr, isvc: sr["spec"]["supportedModelFormats"].pop(), "supportedModelFormats"),
        (lambda sr, isvc: sr["spec"]["supportedModelFormats"][0].update(autoSelect=False), "autoSelect"),
        (lambda sr, isvc: sr["spec"].update(protocolVersions=["v2"]), "grpc-v2"),
        (
            lambda sr, isvc: sr["spec"]["containers"][0]["args"].remove("--model-repository=/mnt/models"),
            "/mnt/models",
        ),
        (
            lambda sr, isvc: sr["spec"]["containers"][0]["args"].append("--model-repo=/x"),
            "no flag --model-repo",
        ),
        (lambda sr, isvc: sr["spec"]["containers"][0]["args"].append("--grpc-addr"), "not --flag=value"),
        (
            lambda sr, isvc: sr["spec"]["annotations"].update({"prometheus.kserve.io/port": "9090"}),
            "prometheus.kserve.io/port",
        ),
        (lambda sr, isvc: sr["spec"]["containers"][0].update(name="server"), "kserve-container"),
        (lambda sr, isvc: isvc["spec"]["predictor"]["model"].update(runtime="triton"), "runtime"),
        (
            lambda sr, isvc: isvc["spec"]["predictor"]["model"].update(modelFormat={"name": "pytorch"}),
            "modelFormat",
        ),
        (lambda sr, isvc: isvc["spec"]["predictor"]["model"].update(protocolVersion="v1"), "protocolVersion"),
    ],
)
def test_kserve_consistency_check_catches(mutate, expected):
    objects = copy.deepcopy(render(K8S / "kserve"))
    assert kserve_problems(objects) == []
    mutate(_find(objects, "ServingRuntime"), _find(objects, "InferenceService"))
    problems = kserve_problems(objects)
    assert any(expected in p for p in problems), problems


def test_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [a.yaml]\nnamePrefix: x-\n"
    )
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    with pytest.raises(ValueError, match="namePrefix"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml, b.yaml]\n"
    )
    with pytest.raises(ValueError, match="b.yaml"):
        render(tmp_path)


def test_json_patch():
    doc = {"a": {"b": [1, 2]}, "c": 1}
    assert apply_json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": 2},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "add", "path": "/d~1e", "value": 0},
        ],
    ) == {"a": {"b": [2, 3]}, "c": 2, "d/e": 0}
    with pytest.raises(ValueError, match="test failed"):
        apply_json_patch(doc, [{"op": "test", "path": "/c", "value": 5}])
    with pytest.raises(ValueError):
        apply_json_patch(doc, [{"op": "replace", "path": "/x", "value": 5}])
