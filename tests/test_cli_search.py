"""End-to-end: `nas search` through the CLI, real training on digits, a real local Ray."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest

from nas.cli import build_parser, resume_changes
from nas.options import RESUME_MAY_CHANGE, SearchOptions
from nas.plugins import params as P
from nas.plugins.data import load_data
from nas.plugins.registry import create_space
from nas.plugins.task import make_task

pytestmark = pytest.mark.ray


def test_search_end_to_end_and_status_contract(small_run, cli, kept_ray, capsys, monkeypatch) -> None:
    """The session's small search (tests/conftest.py: mlp, the default strategy, 3 trials x 2 epochs, seed 1, 2 at
    a time, the CLI in a process of its own): its output, its status contract and its run directory, read only;
    then a second search, same seed, through the CLI's entry point in this process on the kept Ray."""
    shared, name, proc = small_run
    out = proc.stdout
    assert f"run {name} ->" in out
    assert out.count("] trial ") == 3, out  # one line per finished trial
    assert "best trial" in out and f"nas status {name}" in out

    status = shared.status(name)
    assert status["name"] == name and status["space"] == "mlp" and status["strategy"] == "gp"
    assert status["objective"] == {"metric": "val_accuracy", "mode": "max"}
    assert len(status["trials"]) == 3
    space = create_space("mlp", task=make_task(load_data("digits"), "classification")).hyperparameters()
    for t in status["trials"]:
        assert set(t) >= {"trial_id", "status", "config", "metrics", "error"}
        assert t["status"] == "completed" and t["error"] is None
        P.validate(space, t["config"])
        m = t["metrics"]
        assert 0.0 <= m["val_accuracy"] <= 1.0
        assert m["epochs"] == 2 and m["params"] > 0 and m["train_time_s"] > 0
        assert 1 <= m["best_epoch"] <= 2
    best = max(status["trials"], key=lambda t: t["metrics"]["val_accuracy"])
    assert status["best"]["trial_id"] == best["trial_id"]
    # the trials really learned: random guessing on 10 classes gives 0.1
    assert status["best"]["metrics"]["val_accuracy"] > 0.5

    # the run directory holds the spec (with versions), the trials, the strategy's state and Ray's files
    run = shared.storage / name
    spec = (run / "spec.json").read_text()
    assert '"tensorflow' in spec and '"ray"' in spec and '"seed": 1' in spec
    assert len(list((run / "trials").glob("*.json"))) == 3
    assert (run / "strategy.json").is_file()
    assert any(run.glob("ray/session-*/experiment_state*"))  # Ray Tune keeps its state under ray/session-N/

    text = shared("status", name).stdout
    assert "3 completed" in text and "rank" in text

    # completed trials keep their best-epoch model, not their mid-trial checkpoint ...
    assert all((run / "trials" / t["trial_id"] / "best.keras").is_file() for t in status["trials"])
    assert not list(run.glob("trials/*/*.npz"))

    # a second run with the same seed, its options from a config file, proposes the same configurations; ...
    # unless --keep-checkpoints
    config = cli.cwd / "again.yaml"
    config.write_text("space: mlp\nstrategy: random\ntrials: 3\nepochs: 1\nseed: 1\nmax-concurrent: 1\n"
                      "keep-checkpoints: true\n")  # random proposes what the default (gp) does at first
    code, out, err = cli.inprocess("search", "--config", str(config), "--name", "e2e-again", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 0, out + err
    assert len(list((cli.storage / "e2e-again").glob("trials/*/resume.npz"))) == 3
    spec = json.loads((cli.storage / "e2e-again" / "spec.json").read_text())
    assert spec["strategy"] == "random" and spec["options"]["keep_checkpoints"] is True
    assert spec["options"]["trials"] == 3 and spec["options"]["seed"] == 1 and spec["options"]["epochs"] == 1
    again = cli.status("e2e-again")
    assert sorted(P.canonical(t["config"]) for t in again["trials"]) == sorted(
        P.canonical(t["config"]) for t in status["trials"])

    # the name is taken now
    proc = cli("search", "--trials", "1", "--name", "e2e-again", check=False)
    assert proc.returncode != 0 and "already exists" in proc.stderr


def test_grid_search_exhausts_and_plugins_from_file(cli, kept_ray, tmp_path: Path, capsys, monkeypatch) -> None:
    plugin = tmp_path / "my_plugins.py"
    plugin.write_text(
        '"""A user\'s own space and strategy, loaded from a file without packaging."""\n'
        "from search_spaces.mlp import MLPSpace\n"
        "from strategies.grid import GridSearch\n\n"
        "class TinyMLP(MLPSpace):\n"
        '    """Two layer sizes only."""\n'
        '    name = "tiny"\n'
        "    def declare(self, hp):\n"
        '        hp.Int("num_layers", 1, 1)\n'
        '        hp.Int("units_0", 16, 32, step=16)\n'
        '        hp.Fixed("activation", "relu")\n'
        '        hp.Fixed("dropout", 0.0)\n'
        '        hp.Fixed("optimizer", "adam")\n'
        '        hp.Fixed("learning_rate", 0.01)\n'
        '        hp.Fixed("batch_size", 64)\n\n'
        "class MyGrid(GridSearch):\n"
        '    """A user strategy: the grid under another name."""\n'
        '    name = "my-grid"\n'
    )
    # one search, both plugins from the file: the space by its absolute path, the strategy relative to the cwd
    code, out, err = cli.inprocess("search", "--space", f"{plugin}:TinyMLP", "--strategy", "my_plugins.py:MyGrid",
                                   "--trials", "5", "--epochs", "1", "--max-concurrent", "1", "--name", "grid",
                                   capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
    status = cli.status("grid")
    # the grid has exactly 2 points: it stops there although 5 trials were allowed
    assert sorted(t["config"]["units_0"] for t in status["trials"]) == [16, 32], out
    assert all(t["status"] == "completed" for t in status["trials"])
    spec = json.loads((cli.storage / "grid" / "spec.json").read_text())
    assert "MyGrid" in json.dumps(spec["strategy"]) and "TinyMLP" in json.dumps(spec["space"]), spec


def test_resources_ray_can_never_satisfy_fail_at_once(cli) -> None:
    proc = cli("search", "--trials", "1", "--gpus-per-trial", "2", "--name", "toomuch", check=False, timeout=120)
    assert proc.returncode != 0
    assert "--gpus-per-trial 2" in proc.stderr and "GPUs" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (cli.storage / "toomuch" / "spec.json").exists()


def test_the_command_line_shows_the_apis_defaults_and_resume_offers_only_what_a_resume_may_change() -> None:
    """One set of defaults (``SearchOptions``'): what `nas search --help` shows is what a search gets; every flag of
    `nas resume` is an option a resume may change (``RESUME_MAY_CHANGE``), so none is refused after parsing."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    defaults = SearchOptions()
    shown = {a.dest: a.default for a in subs["search"]._actions}
    checked = 0
    for f in fields(SearchOptions):
        if f.name in shown and shown[f.name] is not None and not isinstance(shown[f.name], list):
            assert shown[f.name] == getattr(defaults, f.name), f.name
            checked += 1
    assert checked >= 15, checked
    resume = {a.dest for a in subs["resume"]._actions} - {"help", "name", "storage"}
    assert resume and resume <= set(RESUME_MAY_CHANGE), resume - set(RESUME_MAY_CHANGE)
    args = parser.parse_args(["resume", "r", "--trials", "12", "--max-failures", "2", "--connect-timeout", "5"])
    assert resume_changes(args) == {"trials": 12, "max_failures": 2, "connect_timeout": 5.0}
