"""Ray scheduling: logical GPUs on a CPU machine, requests no node can satisfy, a real 2-node cluster; the local
Ray listens on the loopback address only."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


BARRIER_SPACE = '''"""The mlp space, whose trials wait (up to 150 s) until `n` of them are running: a digits trial lasts a
few seconds, less than starting another worker takes on a loaded machine, so without the wait trials that could
run at once would not be seen overlapping."""
import os, time
from pathlib import Path
from search_spaces.mlp import MLPSpace

class Barrier(MLPSpace):
    name = "barrier"
    def __init__(self, task, barrier="", n=4):
        super().__init__(task)
        self.barrier, self.n = Path(barrier), int(n)
    def fit(self, hp, model, *args, **kwargs):
        (self.barrier / f"{os.getpid()}-{time.time()}").touch()
        deadline = time.time() + 150
        while len(list(self.barrier.iterdir())) < self.n and time.time() < deadline:
            time.sleep(0.2)
        return super().fit(hp, model, *args, **kwargs)
'''


def test_half_gpus_run_four_trials_at_once_each_on_its_device(cli, tmp_path) -> None:
    (tmp_path / "barrier_space.py").write_text(BARRIER_SPACE)
    (tmp_path / "barrier").mkdir()
    cli("search", "--space", "barrier_space.py:Barrier", "--space-option", f"barrier={tmp_path / 'barrier'}",
        "--trials", "4", "--epochs", "1", "--name", "gpus", "--num-gpus", "2", "--num-cpus", "2",
        "--gpus-per-trial", "0.5", "--cpus-per-trial", "0.5", "--max-concurrent", "4", timeout=400)
    trials = cli.status("gpus")["trials"]
    assert len(trials) == 4 and all(t["status"] == "completed" for t in trials), trials
    # all four were running at the same moment: the last start precedes the first finish
    assert max(t["started"] for t in trials) < min(t["finished"] for t in trials), trials
    from nas.storage.store import ExperimentStore

    recs = ExperimentStore(cli.storage / "gpus").trials()
    ids = sorted(r.gpu_ids for r in recs)
    assert ids == ["0", "0", "1", "1"], ids  # each trial sees exactly its half GPU's device


def test_more_gpus_or_ranks_than_any_node_fails_at_once(cli) -> None:
    proc = cli("search", "--trials", "1", "--num-gpus", "2", "--gpus-per-trial", "3", "--name", "toomany",
               check=False, timeout=120)
    assert proc.returncode != 0 and "--gpus-per-trial 3" in proc.stderr and "2 GPUs" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (cli.storage / "toomany" / "spec.json").exists()
    # a data-parallel trial's ranks together: 3 ranks x 1 CPU can never fit 2 CPUs
    proc = cli("search", "--trials", "1", "--num-cpus", "2", "--workers-per-trial", "3", "--distributed", "horovod",
               "--name", "toomanyranks", check=False, timeout=120)
    assert proc.returncode != 0 and "--workers-per-trial 3" in proc.stderr and "2 CPUs" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_node_cluster_runs_trials_on_both_nodes(cli, monkeypatch, tmp_path) -> None:
    from ray.cluster_utils import Cluster

    # Both nodes listen on 127.0.0.1 only, and the user gives --address 127.0.0.1:PORT without knowing Ray's
    # switch for loopback-only clusters (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER): the driver finds out by itself.
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        nodes = {n.node_id for n in cluster.list_all_nodes()}
        assert len(nodes) == 2
        # each trial waits for the other to run: with 1 CPU per node, they must be on different nodes
        (tmp_path / "barrier_space.py").write_text(BARRIER_SPACE)
        (tmp_path / "barrier").mkdir()
        out = cli("search", "--space", "barrier_space.py:Barrier", "--space-option", f"barrier={tmp_path / 'barrier'}",
                  "--space-option", "n=2", "--address", cluster.address, "--trials", "2", "--max-concurrent", "2",
                  "--epochs", "1", "--name", "two-nodes", timeout=400).stdout
        assert out.count("] trial ") == 2, out
        from nas.storage.store import ExperimentStore

        recs = ExperimentStore(cli.storage / "two-nodes").trials()
        assert all(r.status == "completed" for r in recs)
        assert {r.node_id for r in recs} == nodes, (recs, nodes)
    finally:
        cluster.shutdown()


def _listening(pids: set[int]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the TCP sockets these processes listen on, from /proc (no `ss` needed)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd) if fd.is_symlink() else ""
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    addrs = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(cols[1].split(":")[0])
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # 32-bit words, little-endian
            addrs.append(ipaddress.ip_address(words))
    return addrs


def test_local_ray_listens_on_loopback_only() -> None:
    import ray

    from nas.runtime.cluster import ray_session, uses_session

    before = ray._private.ray_constants.ENABLE_RAY_CLUSTER
    with ray_session(None, verbose=False, num_cpus=1):
        ray.get(ray.remote(lambda: 1).remote())  # a worker process too
        session = Path(ray._private.worker._global_node.get_session_dir_path()).name
        pids = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and uses_session(p, session)}
        addrs = _listening(pids | {os.getpid()})
        dashboard = {p for p in pids if b"dashboard/dashboard.py" in Path(f"/proc/{p}/cmdline").read_bytes()}
        served = _listening(dashboard)
    assert served == [], served  # Ray's dashboard process runs in its minimal mode: no web UI, no port
    assert len(addrs) >= 3, addrs  # the GCS, the raylet, workers
    exposed = [a for a in addrs if not (a.is_loopback or getattr(a, "ipv4_mapped", None) and a.ipv4_mapped.is_loopback)]
    assert not exposed, f"Ray listens beyond the loopback address: {exposed}"
    assert ray._private.ray_constants.ENABLE_RAY_CLUSTER == before  # put back for later --address connections
