"""`nas plot`: a real PNG of a real run; the Pareto view for several objectives."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nas.plugins.objective import Objective
from nas.storage.records import DataSpec, RunSpec, TrialRecord, TrialStatus
from nas.storage.results import pareto_front

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

    def t(i: int, a: float, p: float, s: str = "completed") -> TrialRecord:
        return TrialRecord(str(i), TrialStatus(s), metrics={"acc": a, "params": p})

    trials = [t(0, 0.9, 100), t(1, 0.8, 50), t(2, 0.7, 80), t(3, 0.9, 100), t(4, 0.99, 10, "failed"), t(5, 0.95, 200)]
    assert [x.trial_id for x in pareto_front(trials, objs)] == ["0", "1", "3", "5"]


def _sampled_run(space_name: str, n: int = 12) -> tuple[RunSpec, list[TrialRecord]]:
    """The spec and trial records a run of a built-in space holds (its real hyperparameters, configurations
    sampled from them, one failed trial); the objective values are drawn, their layout is what is checked."""
    from nas.plugins import params as P
    from nas.plugins.data import load_data
    from nas.plugins.registry import SPACES, create_space, load
    from nas.plugins.task import make_task

    task = make_task(load_data("digits"), load(SPACES, space_name).tasks[0])
    space = create_space(space_name, task=task)
    hp = space.hyperparameters()
    rng = np.random.default_rng(0)
    metric, mode = space.default_objective().split(":")
    trials = [TrialRecord(str(i), TrialStatus.FAILED if i == 5 else TrialStatus.COMPLETED,
                          config=P.sample_values(hp, rng), metrics={metric: float(rng.uniform(0.1, 0.95))})
              for i in range(n)]
    spec = RunSpec(name=f"{space_name}-run", space=space_name, strategy="random", task=task, data=DataSpec("digits"),
                   objectives=[Objective(metric, mode)], trials=n, epochs=1, hyperparameters=P.space_summary(hp))
    return spec, trials


@pytest.mark.parametrize("space", ["mlp", "cnn", "ae", "lstm"])
def test_plot_labels_never_overlap(space: str) -> None:
    """Every panel's tick labels stand apart (log ranges of less than two decades, e.g. cnn's filters 16..128,
    used to label minor ticks on top of each other), and the footer clears every panel."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from nas.views.plot import figure

    fig = figure(*_sampled_run(space))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            lo, hi = sorted(ax.get_xlim())
            labels = [t for t in ax.get_xticklabels(which="both")
                      if t.get_visible() and t.get_text() and lo <= t.get_position()[0] <= hi]
            boxes = sorted(((t.get_window_extent(renderer), t.get_text()) for t in labels), key=lambda b: b[0].x0)
            for (a, ta), (b, tb) in zip(boxes, boxes[1:]):
                assert a.x1 <= b.x0 + 0.5, f"{space} {ax.get_title(loc='left')!r}: tick labels {ta!r}, {tb!r} overlap"
        footers = [t for t in fig.findobj(Text) if "lower panels" in t.get_text()]
        assert len(footers) == 1
        footer = footers[0].get_window_extent(renderer)
        for ax in fig.axes:
            assert not footer.overlaps(ax.get_tightbbox(renderer)), f"{space}: footer on {ax.get_title(loc='left')!r}"
    finally:
        plt.close(fig)
