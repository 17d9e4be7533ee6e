"""User errors: one clear line naming the bad value, non-zero exit, no traceback, no Ray started."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize(
    "args, needle",
    [
        (["search", "--space", "nope"], "unknown space 'nope'"),
        (["search", "--strategy", "nope"], "unknown strategy 'nope'"),
        (["search", "--trials", "0"], "--trials 0 is not valid"),
        (["search", "--trials", "-3"], "--trials -3 is not valid"),
        (["search", "--epochs", "0"], "--epochs 0 is not valid"),
        (["search", "--data", "missing.npz"], "data file 'missing.npz' does not exist"),
        (["search", "--data", "imagenet"], "data 'imagenet' is not valid; accepted: digits"),
        (["search", "--objective", "val_accuracy:up"], "mode 'up' is not valid"),
        (["search", "--strategy", "grid", "--strategy-option", "bogus=1"], "has no option bogus"),
        (["search", "--space", "nas.errors:NasError"], "not a subclass of nas.SearchSpace"),
        (["status", "no-such-run"], "no run named 'no-such-run'"),
    ],
)
def test_user_errors_are_one_clear_line(cli, capsys, monkeypatch, args: list[str], needle: str) -> None:
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0
    assert needle in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3, err


def test_user_error_in_a_real_process(cli) -> None:
    proc = cli("search", "--space", "nope", check=False)
    assert proc.returncode == 2 and "unknown space 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(cli) -> None:
    proc = cli("--debug", "search", "--space", "nope", check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_and_list(cli, capsys, monkeypatch) -> None:
    with pytest.raises(SystemExit):
        cli.inprocess("search", "--help", capsys=capsys, monkeypatch=monkeypatch)
    help_text = capsys.readouterr().out
    assert "example" in help_text and "--max-concurrent" in help_text and "--gpus-per-trial" in help_text
    listing = cli("list").stdout
    assert "mlp" in listing and "random" in listing and "grid" in listing
    for line in listing.splitlines():
        assert "cannot load" not in line, line


def test_bad_npz_in_cli(cli, capsys, monkeypatch, tmp_path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((10, 4), "float32"), y_train=np.zeros(9, "int64"))
    code, _, err = cli.inprocess("search", "--data", str(path), capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and "10 inputs but 9 labels" in err
