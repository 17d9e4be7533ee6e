"""launch/onprem/cluster.yaml, run for real with Ray's cluster launcher against this machine: `ray up` (file mounts
through rsync, setup commands, the head's `ray stop` and `ray start`), `ray exec` of a search on the head (`nas
search --address auto`), `nas status` of its run, then `ray down`. The head is this machine behind a real OpenSSH
server (Debian's openssh-server, rsync and netcat-openbsd, installed with apt-get as root when missing) that this
module starts on 127.0.0.1 with a configuration, host key and client key of its own, and stops at the end by pid.

What the test changes in the file, and why (everything else is the file as written, synced from this checkout):
- the provider lists 127.0.0.1 as the head and no workers, so the head runs the trials (`--num-cpus=2`, not 0);
- `auth`: root and the module's key; Ray has no ssh port setting (ray-project/ray#5950, #15225, #30452), so the
  server's port is reached through `ssh_proxy_command: nc %h PORT`;
- `setup_commands`: this machine has nas's dependencies already (no TensorFlow with CUDA is installed here): the
  synced checkout ~/nas is put on the head's PYTHONPATH, and the head imports nas from there;
- `ray start --head`: free ports instead of 6379, 8265, 10001 and 52365 (other Rays may run on this machine);
- the head's login environment (sshd's SetEnv): a home directory of the test's own (~/nas, ~/ray_bootstrap_*.yaml,
  ~/.ray/auth_token are written there, never in root's), RAY_TMPDIR of its own, and Ray's single-machine mode
  (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0): on Linux Ray listens on every interface otherwise, and keeps a cluster on
  127.0.0.1 only in that mode. The head has a Ray token in ~/.ray/auth_token, as any machine that ran Ray before
  does: `ray start --head` turns token authentication on, and the search's driver (`--address auto`) uses it.

The server runs in a PID namespace of its own (unshare): `ray down` runs `ray stop` on the head, which stops
every Ray process on its machine, other users' and other tests' included; in the namespace it sees the cluster's
processes only, as on a head of its own. A process that `ray stop` would stop, started outside the namespace, is
checked to be left alone. Ends by pid: the namespace's first process (the server), which takes everything in the
namespace with it, and the ssh connection `ray up` keeps open (ControlPersist).

What one machine does not cover: worker nodes (`worker_ips`, `worker_start_ray_commands`): a worker joining the
head would have to reach it at the machine's network address, and the tests bind every server to 127.0.0.1;
`ray dashboard`'s tunnel and `ray job submit` (Ray's job API needs `ray[default]`, which nas does not install: the
head's dashboard runs without its HTTP server here, and the jobs CLI refuses to start); GPUs; the file's own setup
commands (`pip install -e ".[gpu]"`, the Horovod build)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from getpass import getuser
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from conftest import apt_install, free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "launch" / "onprem" / "cluster.yaml"
SSHD = Path("/usr/sbin/sshd")
COMMANDS = ("ssh", "ssh-keygen", "rsync", "nc")
PACKAGES = ("openssh-server", "openssh-client", "rsync", "netcat-openbsd")

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _installed() -> bool:
    return SSHD.exists() and all(shutil.which(c) for c in COMMANDS)


def _no_pid_namespace() -> str | None:
    """None where this process can start a PID namespace with its own /proc, or why it cannot."""
    if not shutil.which("unshare"):
        return "no unshare command (util-linux)"
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True,
                          timeout=30)
    return None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()[-300:]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _environ(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class Head:
    """The head machine: an OpenSSH server of the test's own, in a PID namespace of its own, on 127.0.0.1."""

    def __init__(self, root: Path, ray_tmp: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        self.port = free_port()
        self.key = root / "client_key"
        self.log = root / "sshd.log"
        self.ray_tmp = ray_tmp
        self.proc: subprocess.Popen | None = None
        self.init = 0  # the server: the first process of the namespace
        self.namespace = ""
        for key in (root / "host_key", self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        (root / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        env = {
            "HOME": self.home,
            "RAY_TMPDIR": ray_tmp,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "NAS_TEST_SESSION": os.environ.get("NAS_TEST_SESSION", "none"),  # conftest's check sees its Ray too
        }
        (root / "sshd_config").write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PrintMotd no", "PrintLastLog no", "X11Forwarding no",
            "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
        ]) + "\n")
        # a login shell resets PATH (/etc/profile); Ray sources ~/.bashrc before every command it runs
        (self.home / ".bashrc").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
        token = self.home / ".ray" / "auth_token"
        token.parent.mkdir(mode=0o700)
        token.touch(mode=0o600)
        token.write_text(os.urandom(32).hex())

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        check = subprocess.run([str(SSHD), "-t", "-f", str(self.root / "sshd_config")], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                 str(SSHD), "-D", "-e", "-f", str(self.root / "sshd_config")],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        import psutil

        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, f"sshd exited {self.proc.returncode}: {self.log.read_text()}"
            children = psutil.Process(self.proc.pid).children()
            if children and "Server listening on 127.0.0.1" in self.log.read_text():
                self.init = children[0].pid
                self.namespace = os.readlink(f"/proc/{self.init}/ns/pid")
                return
            time.sleep(0.1)
        raise AssertionError(f"sshd did not start within 30 s: {self.log.read_text()}")

    def pids(self) -> list[int]:
        """Every process on the head (in its PID namespace), by its pid here."""
        out = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and os.readlink(p / "ns" / "pid") == self.namespace:
                    out.append(int(p.name))
            except OSError:
                pass
        return out

    def ray_pids(self) -> dict[int, str]:
        """The head's processes other than its ssh server (and zombies), with their command lines."""
        return {pid: cmd for pid in self.pids() if (cmd := _cmdline(pid)) and not cmd.startswith("sshd")}

    def stop(self) -> None:
        """The namespace's first process (the server) ends, and the kernel ends every process in the namespace."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.init, signal.SIGKILL) if self.init else self.proc.kill()  # unshare --kill-child
            except OSError:
                self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _cluster_config(head: Head, name: str) -> dict[str, Any]:
    """launch/onprem/cluster.yaml for this machine (what changes and why: the module's docstring)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["cluster_name"] = name
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["max_workers"] = 0
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(head.key),
                      "ssh_proxy_command": f"nc %h {head.port}"}
    config["setup_commands"] = [
        """echo 'export PYTHONPATH="$HOME/nas"' >> ~/.bashrc""",
        """cd / && python -c 'import nas; print("nas imported from", nas.__file__)'""",
    ]
    head_start = config["head_start_ray_commands"]
    assert head_start[0] == "ray stop"  # in the namespace: the cluster's own Ray only
    (i, start), = [(i, c) for i, c in enumerate(head_start) if "ray start --head" in c]
    for old, new in {"--port=6379": f"--port={free_port()}", "--num-cpus=0": "--num-cpus=2"}.items():
        assert old in start, (old, start)
        start = start.replace(old, new)
    head_start[i] = (f"{start} --dashboard-port={free_port()} --ray-client-server-port={free_port()} "
                     f"--dashboard-agent-listen-port={free_port()}")
    return config


def _control_dir(cluster: str) -> Path:
    """Where Ray's ssh keeps its shared connection for ``cluster`` (ray.autoscaler's SSHCommandRunner)."""
    user = hashlib.sha256(getuser().encode()).hexdigest()[:10]
    return Path(f"/tmp/ray_ssh_{user}") / hashlib.sha256(cluster.encode()).hexdigest()[:10]


def _stop_ssh_masters(control: Path) -> None:
    """The background ssh that Ray's commands leave holding their connection (ControlPersist=10s; its command line
    names its socket, ``ssh: <control>/<hash> [mux]``), by pid."""
    lines = {int(p.name): _cmdline(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    masters = [pid for pid, cmd in lines.items() if cmd.startswith("ssh") and f"{control}/" in cmd]
    for pid in masters:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(_cmdline(pid) for pid in masters):  # a zombie has none
        time.sleep(0.1)
    shutil.rmtree(control, ignore_errors=True)
    try:
        control.parent.rmdir()  # only when no other cluster's connection is kept there
    except OSError:
        pass


@pytest.fixture
def head(tmp_path: Path, tmp_path_factory: Any) -> Iterator[Head]:
    why = apt_install(PACKAGES, _installed, "sshd", tmp_path_factory.getbasetemp().parent)
    if why:
        pytest.skip(why)
    why = _no_pid_namespace()
    if why:
        pytest.skip(f"cannot start a PID namespace ({why}): `ray down` runs `ray stop` on the head, which would "
                    f"stop every Ray process of this machine, other tests' included")
    ray_tmp = Path(tempfile.mkdtemp(prefix="onprem-"))  # short: Ray's socket paths must fit in 107 bytes
    machine = Head(tmp_path / "head", ray_tmp)
    try:
        machine.start()
        yield machine
    finally:
        machine.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _ray(cmd: str, *args: str, env: dict[str, str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", cmd, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)
    return proc, time.monotonic() - start


def _loopback(addr: str) -> bool:
    return addr in ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def test_ray_up_runs_a_search_on_the_onprem_cluster_and_ray_down_stops_it(head: Head, tmp_path: Path) -> None:
    """`ray up` brings the head up with the checkout synced and Ray started on 127.0.0.1 only, with token
    authentication; `ray exec` runs `nas search --address auto` there to its budget; `ray down` stops every Ray
    process on the head and nothing outside it."""
    import psutil

    name = f"nas-onprem-test-{os.getpid()}-{os.urandom(3).hex()}"
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(_cluster_config(head, name), sort_keys=False))
    local = head.ray_tmp / "local"  # `ray up`'s own state (the local provider's cluster state, its config cache)
    local.mkdir()
    env = {**os.environ, "RAY_TMPDIR": str(local), "TMPDIR": str(local), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    storage = tmp_path / "runs"
    # a process outside the head that `ray stop` would stop if it could see it
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "ray.util.client.server"])
    control = _control_dir(name)
    try:
        up, up_s = _ray("up", "-y", "--no-config-cache", str(config), env=env, timeout=300)
        assert up.returncode == 0, f"ray up exited {up.returncode}\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
        assert f"nas imported from {head.home}/nas/nas/__init__.py" in up.stdout + up.stderr  # synced, set up
        ray = head.ray_pids()
        gcs = [pid for pid, cmd in ray.items() if "gcs_server" in cmd]
        assert gcs and any("raylet" in cmd for cmd in ray.values()), ray
        assert "RAY_AUTH_MODE=token" in _environ(gcs[0])  # ray start turned token authentication on
        assert f"NAS_TEST_SESSION={os.environ.get('NAS_TEST_SESSION', 'none')}" in _environ(gcs[0])
        listening = [(c.pid, c.laddr) for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in ray]
        assert listening and all(_loopback(addr.ip) for _, addr in listening), listening

        search = (f"python -m nas.cli search --address auto --space mlp --strategy random --trials 2 --epochs 1 "
                  f"--name onprem --storage {storage}")
        run, run_s = _ray("exec", "--no-config-cache", str(config), search, env=env, timeout=300)
        assert run.returncode == 0, f"ray exec exited {run.returncode}\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
        status = subprocess.run([sys.executable, "-m", "nas.cli", "status", "onprem", "--json", "--storage",
                                 str(storage)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["counts"]["completed"] == 2 and report["counts"]["failed"] == 0, report["counts"]
        assert sorted(t["trial_id"] for t in report["trials"]) == ["0", "1"]

        down, down_s = _ray("down", "-y", str(config), env=env, timeout=300)
        assert down.returncode == 0, f"ray down exited {down.returncode}\n{down.stdout[-4000:]}\n{down.stderr[-4000:]}"
        deadline = time.time() + 20  # what `ray stop` signalled may take a moment to go
        while time.time() < deadline and head.ray_pids():
            time.sleep(0.2)
        assert not head.ray_pids(), head.ray_pids()
        assert head.proc is not None and head.proc.poll() is None  # the head's ssh server is still up
        assert bystander.poll() is None  # what runs outside the head is left alone
        print(f"\nonprem: ray up {up_s:.1f} s, ray exec of the search (2 mlp trials x 1 epoch) {run_s:.1f} s, "
              f"ray down {down_s:.1f} s")
    finally:
        bystander.kill()
        bystander.wait()
        head.stop()  # every process on the head, whatever the test reached
        _stop_ssh_masters(control)
