"""deploy/k8s: valid Kubernetes objects (checked offline against the schema of a pinned Kubernetes
version, shipped inside kubernetes-validate) that deploy what docker-compose.yml deploys, so that the
two cannot drift apart silently."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are written for (every field they use is GA there), and the newest
# whose schema kubernetes-validate 1.37 ships.
KUBERNETES_VERSIONS = ["1.33", "1.37"]

# Where the two differ on purpose; everything else must match.
# Kubernetes' device plugin gives each trainer pod its own GPU: compose's claim-gpu wrapper, its GPU
# pool and its lock volume have no counterpart.
COMMAND_PREFIX_ONLY_IN_COMPOSE = {"trainer": ["claim-gpu"]}
ENV_ONLY_IN_COMPOSE = {"trainer": {"GOLD_GPU_POOL"}}
MOUNTS_ONLY_IN_COMPOSE = {"trainer": {"/var/lib/gold/gpu-locks"}}
# A subfolder of the volume, since a fresh volume's root may hold lost+found.
ENV_ONLY_IN_K8S = {"postgres": {"PGDATA"}}

Doc = dict[str, Any]


def load_compose() -> dict[str, Doc]:
    services: dict[str, Doc] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def load_kustomization() -> Doc:
    kustomization: Doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return kustomization


def load_manifests() -> list[Doc]:
    return [
        doc
        for name in load_kustomization()["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc is not None
    ]


COMPOSE = load_compose()
MANIFESTS = load_manifests()
WORKLOADS = {d["metadata"]["name"]: d for d in MANIFESTS if d["kind"] in ("Deployment", "StatefulSet")}
SERVICES = {d["metadata"]["name"]: d for d in MANIFESTS if d["kind"] == "Service"}
CONFIG = next(d for d in MANIFESTS if d["kind"] == "ConfigMap")
CLAIMS = {d["metadata"]["name"]: d for d in MANIFESTS if d["kind"] == "PersistentVolumeClaim"}
SECRET_NAME = load_kustomization()["secretGenerator"][0]["name"]
# Compose services that wait for the one-shot `migrate`, which Kubernetes runs as an init container.
MIGRATED = {
    name for name, svc in COMPOSE.items() if "migrate" in (svc.get("depends_on") or {}) and name != "migrate"
}


def pod_spec(name: str) -> Doc:
    spec: Doc = WORKLOADS[name]["spec"]["template"]["spec"]
    return spec


def container(name: str) -> Doc:
    """The k8s container that plays compose service `name`."""
    return next(c for c in pod_spec(name)["containers"] if c["name"] == name)


def containers_for(name: str) -> list[Doc]:
    """Those that play compose service `name`: `migrate` is an init container of several pods."""
    if name == "migrate":
        return [c for w in sorted(MIGRATED) for c in pod_spec(w)["initContainers"] if c["name"] == "migrate"]
    return [container(name)]


def compose_env_value(raw: str) -> tuple[str, str]:
    """('secret', NAME) for `${NAME:?...}` (compose refuses to start without it), else ('value', default)."""
    match = re.fullmatch(r"\$\{(\w+)(?::([-?])(.*))?\}", raw, re.DOTALL)
    if match is None:
        return ("value", raw)
    name, kind, rest = match.groups()
    return ("secret", name) if kind == "?" else ("value", rest or "")


def k8s_env_value(var: Doc) -> tuple[str, str]:
    if "value" in var:
        return ("value", var["value"])
    source = var["valueFrom"]
    if "secretKeyRef" in source:
        assert source["secretKeyRef"]["name"] == SECRET_NAME
        return ("secret", source["secretKeyRef"]["key"])
    ref = source["configMapKeyRef"]
    assert ref["name"] == CONFIG["metadata"]["name"]
    return ("value", CONFIG["data"][ref["key"]])


def port_number(ctr: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in ctr["ports"] if p["name"] == port))


def compose_mounts(name: str) -> dict[str, bool]:
    """Mount target -> read-only, for compose's `source:target[:ro]` entries."""
    mounts = {}
    for entry in COMPOSE[name].get("volumes", []):
        read_only = entry.endswith(":ro")
        mounts[entry.removesuffix(":ro").rsplit(":", 1)[1]] = read_only
    return mounts


def test_kustomization_lists_every_manifest():
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(load_kustomization()["resources"]) == sorted(files)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", MANIFESTS, ids=lambda d: f"{d['kind'].lower()}/{d['metadata']['name']}")
def test_manifest_is_a_valid_kubernetes_object(doc, version):
    # strict: a misspelt or misplaced field fails instead of being dropped by the API server.
    assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_the_validator_rejects_a_misspelt_field():
    broken = copy.deepcopy(WORKLOADS["generator"])
    probe = broken["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = probe
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_the_same_services_images_and_commands_as_compose():
    assert set(WORKLOADS) == set(COMPOSE) - {"migrate"}
    for name in COMPOSE:
        for ctr in containers_for(name):
            assert ctr["image"] == COMPOSE[name]["image"], name
            # compose's `command` replaces the image's CMD, as Kubernetes' `args` does.
            command = COMPOSE[name].get("command")
            prefix = COMMAND_PREFIX_ONLY_IN_COMPOSE.get(name, [])
            assert command is None or command[: len(prefix)] == prefix, name
            assert ctr.get("args") == (command[len(prefix) :] if command else None), name


def test_migrations_run_before_the_services_compose_makes_wait_for_them():
    assert sorted(MIGRATED) == ["orchestrator", "trainer"]
    for name in WORKLOADS:
        init = [c["name"] for c in pod_spec(name).get("initContainers", [])]
        assert init == (["migrate"] if name in MIGRATED else []), name


@pytest.mark.parametrize("name", sorted(COMPOSE))
def test_the_same_environment_as_compose(name):
    """Same names; compose's required secrets come from the Secret, its defaults and literals are the
    values (directly or from the ConfigMap)."""
    expected = {
        var: compose_env_value(str(raw))
        for var, raw in COMPOSE[name].get("environment", {}).items()
        if var not in ENV_ONLY_IN_COMPOSE.get(name, set())
    }
    for ctr in containers_for(name):
        actual = {
            var["name"]: k8s_env_value(var)
            for var in ctr.get("env", [])
            if var["name"] not in ENV_ONLY_IN_K8S.get(name, set())
        }
        assert actual == expected


def test_secrets_are_those_compose_requires():
    required = {
        value
        for svc in COMPOSE.values()
        for raw in svc.get("environment", {}).values()
        for kind, value in [compose_env_value(str(raw))]
        if kind == "secret"
    }
    example = (K8S / "secrets.env.example").read_text().splitlines()
    keys = [line.split("=", 1)[0] for line in example if line and not line.startswith("#")]
    assert sorted(keys) == sorted(required)
    assert load_kustomization()["secretGenerator"][0]["envs"] == ["secrets.env"]
    assert "/deploy/k8s/secrets.env" in (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy" in (ROOT / ".dockerignore").read_text().splitlines()  # nor in the image


def test_service_urls_reach_the_services_on_the_ports_compose_uses():
    urls = {
        value
        for svc in COMPOSE.values()
        for var, raw in svc.get("environment", {}).items()
        if var.endswith("_URL")
        for _, value in [compose_env_value(str(raw))]
    }
    assert len(urls) == 4  # database, redis, generator, scorer
    for url in urls:
        parts = urlsplit(url)
        service = SERVICES[parts.hostname]["spec"]
        target = next(p for p in service["ports"] if p["port"] == parts.port)["targetPort"]
        workload = next(
            w for w, d in WORKLOADS.items() if d["spec"]["selector"]["matchLabels"] == service["selector"]
        )
        assert port_number(container(workload), target) == parts.port, url


@pytest.mark.parametrize("name", sorted(n for n, s in COMPOSE.items() if "healthcheck" in s))
def test_probes_check_what_compose_checks(name):
    test = COMPOSE[name]["healthcheck"]["test"]
    ctr = container(name)
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(test))
    if url is None:  # postgres, redis: the same command
        assert ctr["readinessProbe"]["exec"]["command"] == test[1:]
        assert ctr["livenessProbe"]["exec"]["command"] == test[1:]
        return
    port, path = int(url.group(1)), url.group(2)
    assert path == "/readyz"
    for probe, expected in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        http = ctr[probe]["httpGet"]
        assert (http["path"], port_number(ctr, http["port"])) == (expected, port), probe


def test_gpus_where_compose_reserves_them():
    def reserves_gpu(svc: Doc) -> bool:
        devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        return any(d.get("driver") == "nvidia" for d in devices)

    with_gpu = {
        n for n in WORKLOADS if container(n).get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    }
    assert with_gpu == {n for n, s in COMPOSE.items() if reserves_gpu(s)} == {"generator", "trainer"}
    assert all(container(n)["resources"]["limits"]["nvidia.com/gpu"] == 1 for n in with_gpu)


@pytest.mark.parametrize("name", sorted(COMPOSE))
def test_the_same_mounts_as_compose(name):
    expected = {
        target: ro
        for target, ro in compose_mounts(name).items()
        if target not in MOUNTS_ONLY_IN_COMPOSE.get(name, set())
    }
    for ctr in containers_for(name):
        mounts = {m["mountPath"]: m.get("readOnly", False) for m in ctr.get("volumeMounts", [])}
        if "shm_size" in COMPOSE[name]:
            assert mounts.pop("/dev/shm") is False
        assert mounts == expected


def test_shared_volumes_are_read_write_many_claims():
    """Pods of a Deployment may land on different nodes: every claim they share must be RWX."""
    used = set()
    for name, workload in WORKLOADS.items():
        for volume in pod_spec(name).get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert workload["kind"] == "Deployment"
                used.add(volume["persistentVolumeClaim"]["claimName"])
    assert used == set(CLAIMS)
    assert all(claim["spec"]["accessModes"] == ["ReadWriteMany"] for claim in CLAIMS.values())


def test_shared_memory_and_grace_period_as_compose():
    for name, svc in COMPOSE.items():
        volumes = {v["name"]: v for v in pod_spec(name).get("volumes", [])} if name in WORKLOADS else {}
        if "shm_size" in svc:
            assert volumes["shm"]["emptyDir"] == {
                "medium": "Memory",
                "sizeLimit": svc["shm_size"].removesuffix("gb") + "Gi",
            }
        if "stop_grace_period" in svc:
            assert pod_spec(name)["terminationGracePeriodSeconds"] == 60 * int(
                svc["stop_grace_period"].removesuffix("m")
            )
