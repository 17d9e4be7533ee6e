"""`nas status` and `nas runs` on a real run, and the error paths of the commands that read runs."""

from __future__ import annotations

import json

import pytest

from nas.errors import RunError

pytestmark = pytest.mark.ray


def _out(cli, capsys, monkeypatch, *args: str) -> str:
    """The CLI in this process (TensorFlow is imported once), its stdout; fails on a non-zero exit."""
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, (args, out, err)
    return out


def test_status_text_and_json(small_run, capsys, monkeypatch) -> None:
    cli, name, _ = small_run
    text = _out(cli, capsys, monkeypatch, "status", name)
    assert f"run {name}: space mlp, strategy gp, backend tensorflow, objective val_accuracy:max" in text
    assert "3 completed, 0 failed, 0 running, 0 pending of 3 (0 remaining)" in text
    assert "; searched " in text and " since created)" in text and "\nstate: finished\n" in text
    assert "top 3 by val_accuracy:max" in text and "rank" in text
    rows = [ln for ln in text.splitlines() if ln.strip()[:1].isdigit()]
    assert len(rows) == 3
    assert len(_out(cli, capsys, monkeypatch, "status", name, "--top", "1").splitlines()) < len(text.splitlines())

    data = json.loads(_out(cli, capsys, monkeypatch, "status", name, "--json"))  # the --json contract, plus added keys
    assert set(data) >= {"name", "space", "strategy", "objective", "trials", "best", "counts", "budget",
                         "elapsed_s", "remaining", "created", "state", "wall_s", "driver", "next"}
    assert data["counts"]["completed"] == 3 and data["remaining"] == 0 and 0 < data["elapsed_s"] <= data["wall_s"]
    assert data["state"] == "finished" and data["driver"]["outcome"] == "finished" and data["next"] is None
    best_row = rows[0].split()
    assert best_row[1] == data["best"]["trial_id"]


def test_runs_lists_the_storage(small_run, capsys, monkeypatch) -> None:
    cli, name, _ = small_run
    out = _out(cli, capsys, monkeypatch, "runs")
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["name", "space", "strategy", "state", "trials"]
    row = next(r for r in rows if r.startswith(name + " "))
    assert "mlp" in row and " gp " in row and "finished" in row and "3/3" in row and "val_accuracy:max" in row
    runs = json.loads(_out(cli, capsys, monkeypatch, "runs", "--json"))
    assert runs[0]["name"] == name and runs[0]["completed"] == 3 and runs[0]["best"] > 0.1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["status", "nope"], "no run named 'nope'"),
        (["plot", "nope"], "no run named 'nope'"),
        (["plot", "bad/name"], "run name 'bad/name' is not valid"),
        (["runs"], "does not exist"),
    ],
)
def test_missing_runs_are_one_clear_line(cli, capsys, monkeypatch, args, needle) -> None:
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 3


def test_runs_in_an_empty_storage(cli, capsys, monkeypatch) -> None:
    cli.storage.mkdir(parents=True)
    code, _, err = cli.inprocess("runs", capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and f"no runs in {cli.storage}" in err and "Traceback" not in err
    with pytest.raises(RunError):  # --debug: the exception itself, with its traceback
        cli.inprocess("--debug", "runs", capsys=capsys, monkeypatch=monkeypatch)


def test_plot_errors(small_run, capsys, monkeypatch, tmp_path) -> None:
    cli, name, _ = small_run
    code, _, err = cli.inprocess("plot", name, "--out", str(tmp_path / "x.jpg"), capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and "ending in .png" in err
    # a run whose trials have not finished yet has nothing to plot
    spec = json.loads((cli.storage / name / "spec.json").read_text())
    empty = tmp_path / "other" / "empty"
    (empty / "trials").mkdir(parents=True)
    (empty / "spec.json").write_text(json.dumps({**spec, "name": "empty"}))
    code, _, err = cli.inprocess("plot", "empty", "--storage", str(tmp_path / "other"), capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert code != 0 and "no completed trial" in err and "Traceback" not in err


def test_reading_runs_imports_no_tensorflow(small_run) -> None:
    """`nas runs` and `nas status` only read files: they start in a moment, without TensorFlow, Keras or Ray."""
    import subprocess
    import sys

    cli, name, _ = small_run
    code = ("import sys\nfrom nas.cli import main\n"
            f"assert main(['runs']) == 0 and main(['status', {name!r}]) == 0 and main(['status', {name!r}, '--json']) == 0\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'keras_tuner', 'ray') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cli.cwd, env=cli.env(),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{name} " in proc.stdout and "state: finished" in proc.stdout
