"""`nas plot`: a real PNG of a real run; the Pareto view for several objectives."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nas.objective import Objective
from nas.results import pareto_front

pytestmark = pytest.mark.ray


def _out(cli, capsys, monkeypatch, *args: str) -> str:
    """The CLI in this process (TensorFlow is imported once), its stdout; fails on a non-zero exit."""
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, (args, out, err)
    return out


def _check_png(path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 400 and img.shape[1] > 400
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 10  # not a blank canvas


def test_plot_writes_a_real_png(small_run, tmp_path, capsys, monkeypatch) -> None:
    cli, name, _ = small_run
    out = tmp_path / "plots" / "run.png"
    assert str(out) in _out(cli, capsys, monkeypatch, "plot", name, "--out", str(out))
    _check_png(out)
    proc = cli("plot", name)  # a real, headless process; default: inside the run directory
    assert str(cli.storage / name / "plot.png") in proc.stdout
    _check_png(cli.storage / name / "plot.png")


def test_plot_pareto_front_for_two_objectives(small_run, tmp_path, capsys, monkeypatch) -> None:
    cli, name, _ = small_run
    storage = tmp_path / "mo-runs"
    shutil.copytree(cli.storage / name, storage / "mo")
    spec = json.loads((storage / "mo" / "spec.json").read_text())
    spec.update(name="mo", objectives=[{"metric": "val_accuracy", "mode": "max"}, {"metric": "params", "mode": "min"}])
    (storage / "mo" / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "mo.png"
    _out(cli, capsys, monkeypatch, "plot", "mo", "--storage", str(storage), "--out", str(out))
    _check_png(out)
    status = json.loads(_out(cli, capsys, monkeypatch, "status", "mo", "--storage", str(storage), "--json"))
    assert status["pareto_front"]
    assert "Pareto front of val_accuracy:max, params:min" in _out(cli, capsys, monkeypatch, "status", "mo", "--storage", str(storage))


def test_pareto_front_helper() -> None:
    objs = [Objective("acc", "max"), Objective("params", "min")]
    t = lambda i, a, p, s="completed": {"trial_id": str(i), "status": s, "metrics": {"acc": a, "params": p}}  # noqa: E731
    trials = [t(0, 0.9, 100), t(1, 0.8, 50), t(2, 0.7, 80), t(3, 0.9, 100), t(4, 0.99, 10, "failed"), t(5, 0.95, 200)]
    assert [x["trial_id"] for x in pareto_front(trials, objs)] == ["0", "1", "3", "5"]
