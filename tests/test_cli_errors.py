"""User errors: one clear line naming the bad value, non-zero exit, no traceback, no Ray started."""

from __future__ import annotations

import socket
import time

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
        # values argparse's types let through, each checked before anything starts (none an internal error)
        (["search", "--seed", "-1"], "--seed -1 is not valid; give an integer >= 0 and <= 4,294,967,295"),
        (["search", "--num-gpus", "-1"], "--num-gpus -1 is not valid; give an integer >= 0"),
        (["search", "--num-cpus", "99999999999999999999"], "--num-cpus 99999999999999999999 is not valid"),
        (["search", "--connect-timeout", "inf"], "--connect-timeout inf is not valid; give a finite number > 0"),
        (["search", "--gpus-per-trial", "nan"], "--gpus-per-trial nan is not valid; give a finite number >= 0"),
        (["search", "--trials", "-1", "--dump-config"], "--trials -1 is not valid"),
        (["search", "--config", "/bin/sh"], "config file '/bin/sh' is not a text file"),
        (["search", "--config", "/"], "config file '/' is a directory"),
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
    # each summary is a whole sentence, however many lines of its docstring it takes
    assert "in order; without any, the space's default point.  [strategies.given:" in listing


def test_a_wrong_kind_of_path_is_named_for_what_it_is(cli, capsys, monkeypatch, tmp_path) -> None:
    """A directory where a file is expected, a file where a directory is, a folder that is not a run: each said
    as such (they used to be "does not exist" or "no run named"), and an unknown key of a config file is offered
    only the keys a config file may hold."""
    (tmp_path / "dir.npz").mkdir()
    (tmp_path / "a-file").write_text("x")
    (cli.storage / "not-a-run").mkdir(parents=True)
    (tmp_path / "typo.yaml").write_text("trails: 3\n")
    for args, says in [
        (["search", "--data", str(tmp_path / "dir.npz")], f"data file '{tmp_path / 'dir.npz'}' is a directory"),
        (["runs", "--storage", str(tmp_path / "a-file")], f"storage directory {tmp_path / 'a-file'} is a file"),
        (["status", "not-a-run"], f"{cli.storage / 'not-a-run'} is not a run: it has no spec.json"),
        (["search", "--config", str(tmp_path / "typo.yaml")], "option 'trails' is not valid (did you mean trials?)"),
    ]:
        code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
        assert code == 2 and says in err and err.count("\n") == 1, (args, err)
    offered = err.split("accepted: ")[1].strip().split(", ")
    assert "address" in offered and "trials" in offered and not {"name", "storage"} & set(offered), offered


def test_bad_labels_are_one_line_before_any_trial(cli, capsys, monkeypatch, tmp_path) -> None:
    """Labels no trial could learn from, each named with its file and value, before any trial (they used to
    fail every trial: an output layer of 10**12 units, "loss became nan", a blank CSV cell read as label
    -9223372036854775808, a validation class never trained on passing silently). All are found before Ray
    starts: what needs the task (classes, which the space's kind of task decides) reads the space's ``tasks``
    from its source, without importing Keras."""
    import nas.driver.engine as engine

    early = {"started": 0}
    real = engine._early_ray
    monkeypatch.setattr(engine, "_early_ray", lambda *a: early.update(started=early["started"] + 1) or real(*a))
    x = np.random.default_rng(0).random((50, 4), dtype="float32")
    files = {
        "huge.npz": dict(x_train=x, y_train=np.r_[np.zeros(49, "int64"), 10**12]),
        "nan.npz": dict(x_train=x, y_train=np.r_[np.zeros(49), np.nan]),
        "unseen.npz": dict(x_train=x, y_train=np.arange(50) % 2, x_val=x[:6], y_val=np.array([0, 1, 2, 0, 1, 2])),
    }
    for name, arrays in files.items():
        np.savez(tmp_path / name, **arrays)
    (tmp_path / "blank.csv").write_text("a,b,t\n" + "".join(f"{i},{2 * i},{'' if i == 3 else i % 2}\n"
                                                            for i in range(20)))
    for args, says, before_ray in [
        (["--data", str(tmp_path / "nan.npz")], "x_train/y_train: 1 label(s) are NaN or infinite (the first at "
                                                "index 49)", True),
        (["--data", str(tmp_path / "blank.csv"), "--target", "t"], "--target column 't' has 1 blank cell(s) (line 5",
         True),
        (["--data", str(tmp_path / "huge.npz")], "has label 1000000000000 among 2 distinct labels and 50 examples",
         True),
        (["--data", str(tmp_path / "unseen.npz")], "validation label(s) 2 never occur in the training labels", True),
        (["--data", "digits", "--task", "anomaly", "--normal-class", "99"], "--normal-class 99 is not a label of "
                                                                             "'digits'", True),
    ]:
        started = early["started"]
        code, out, err = cli.inprocess("search", "--space", "mlp", *args, capsys=capsys, monkeypatch=monkeypatch)
        assert code == 2 and says in err and err.count("\n") == 1, (args, err)
        assert args[1] in err and out == "", (args, out)  # the file named; nothing announced
        assert early["started"] == started + (not before_ray), args


def test_max_params_no_model_meets_is_one_line_before_any_trial(cli, capsys, monkeypatch) -> None:
    """--max-params 1: every trial would be infeasible (they used to run and fail, 46-57 s, with an internal
    exception name and advice to resume); the smallest model found is named, with the bound that would work.
    Checking it builds models, so such a search is prepared before Ray starts: the refusal starts no Ray."""
    import nas.driver.engine as engine

    monkeypatch.setattr(engine, "_early_ray", lambda *a: pytest.fail("Ray started before the refusal"))
    code, out, err = cli.inprocess("search", "--space", "mlp", "--strategy", "random", "--max-params", "1",
                                   capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "--max-params 1 is below every model of space 'mlp': none of the 26 configurations tried fits" in err
    smallest = int(err.split("the smallest has ")[1].split(" ")[0].replace(",", ""))
    assert f"give --max-params >= {smallest:,}, or leave it out" in err and "num_layers=1" in err
    assert not any(cli.storage.glob("*/trials/*.json"))  # no trial ran


def test_an_objective_no_trial_reports_is_refused_before_ray_starts(cli, capsys, monkeypatch) -> None:
    """--objective needs a model built to know what trials report: the search is prepared first, so the one
    line names the metrics that exist and no Ray was started for nothing (it used to start, then stop)."""
    import nas.driver.engine as engine

    monkeypatch.setattr(engine, "_early_ray", lambda *a: pytest.fail("Ray started before the refusal"))
    code, out, err = cli.inprocess("search", "--space", "mlp", "--objective", "val_nothing", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 2 and err.count("\n") == 1 and out == "", err
    assert "--objective 'val_nothing' is not a metric trials of space 'mlp' report; known: accuracy," in err


def test_bad_npz_in_cli(cli, capsys, monkeypatch, tmp_path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((10, 4), "float32"), y_train=np.zeros(9, "int64"))
    code, _, err = cli.inprocess("search", "--data", str(path), capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and "10 inputs but 9 labels" in err


NO_ASK = '''
from nas import Strategy

class Lazy(Strategy):
    """A user strategy that forgot its _ask."""
    name = "lazy"
'''


def test_bad_storage_is_one_clear_line_and_starts_nothing(cli, capsys, monkeypatch, tmp_path) -> None:
    a_file = tmp_path / "some-file.csv"
    a_file.write_text("x,y\n1,2\n")
    for storage, needle in [("/proc/forbidden", "--storage '/proc/forbidden' cannot hold runs"),
                            (str(a_file), f"--storage {str(a_file)!r} is not a directory")]:
        code, out, err = cli.inprocess("search", "--storage", storage, "--trials", "1", capsys=capsys,
                                       monkeypatch=monkeypatch)
        assert code == 2 and needle in err and "give a writable directory" in err, err
        assert "internal error" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "searching space" not in out  # refused before anything started
    assert a_file.read_text() == "x,y\n1,2\n"
    # resume and its storage: the same line, before any lookup of the run
    code, _, err = cli.inprocess("resume", "x", "--storage", str(a_file), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and "is not a directory" in err, err


def test_unknown_space_option_names_the_accepted_ones(cli, capsys, monkeypatch) -> None:
    code, out, err = cli.inprocess("search", "--space-option", "bogus_key=3", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2, err
    assert "space 'mlp' has no option bogus_key; accepted: version" in err, err
    assert "internal error" not in err and "searching space" not in out
    code, _, err = cli.inprocess("search", "--strategy", "evolution", "--strategy-option", "popsize=3",
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and "strategy 'evolution' has no option popsize; accepted: population, sample" in err, err


def test_strategy_plugin_without_ask_says_what_to_implement(cli, capsys, monkeypatch, tmp_path) -> None:
    (tmp_path / "lazy.py").write_text(NO_ASK)
    code, out, err = cli.inprocess("search", "--strategy", f"{tmp_path / 'lazy.py'}:Lazy", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 2, err
    assert "does not implement _ask; a strategy plugin must define _ask(self) -> dict of values or None" in err, err
    assert "internal error" not in err and "abstract" not in err and "searching space" not in out


def test_nothing_is_announced_before_the_options_are_checked(cli, capsys, monkeypatch) -> None:
    for args in (["--space", "nope"], ["--strategy", "grid", "--strategy-option", "bogus=1"], ["--epochs", "0"]):
        code, out, err = cli.inprocess("search", *args, capsys=capsys, monkeypatch=monkeypatch)
        assert code == 2 and out == "", (args, out, err)
    assert not cli.storage.exists() or not any(cli.storage.iterdir())  # no trace of the attempts


def test_connect_timeout_must_be_positive(cli, capsys, monkeypatch) -> None:
    with pytest.raises(SystemExit) as e:
        cli.inprocess("search", "--connect-timeout", "0", capsys=capsys, monkeypatch=monkeypatch)
    assert e.value.code == 2 and "--connect-timeout: '0' must be > 0" in capsys.readouterr().err


def test_unreachable_cluster_fails_at_once_with_one_line(cli) -> None:
    started = time.time()
    proc = cli("search", "--address", "127.0.0.1:1", "--trials", "1", "--name", "nowhere", check=False, timeout=200)
    took = time.time() - started
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("nas: error: cannot reach a Ray cluster at --address '127.0.0.1:1' (Connection refused)")
    assert "ray start --head" in err and len(err.splitlines()) == 1, err  # the likely causes; no Ray GCS warnings
    assert took < 100, took  # the interpreter, TensorFlow and the data load, then no wait at all
    assert not (cli.storage / "nowhere").exists()


def test_an_unreachable_address_or_a_request_too_big_is_found_before_ray_or_keras_start(cli, capsys,
                                                                                         monkeypatch) -> None:
    """The address is tried (a TCP connection), a request is held against the local machine, and the plugins'
    options against their classes' source, before Ray starts in the background and Keras is imported: the
    error never waits for either."""
    import nas.driver.engine as engine

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for an address nothing answers at")

    monkeypatch.setattr(engine, "EarlyRay", no_ray)
    monkeypatch.setattr(engine, "prepare", no_ray)
    for args, says in [
        (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster at --address '127.0.0.1:1' (Connection refused)"),
        (["--num-gpus", "2", "--gpus-per-trial", "3"], "asking --cpus-per-trial 1 --gpus-per-trial 3: the largest "
                                                       "node has 2 CPUs and 2 GPUs"),
        (["--num-cpus", "2", "--cpus-per-trial", "3"], "asking --cpus-per-trial 3 --gpus-per-trial 0: the largest "
                                                       "node has 2 CPUs"),
        (["--space", "cnn", "--space-option", "blocks=3"], "space 'cnn' has no option blocks; accepted: version"),
        (["--strategy", "rl", "--strategy-option", "polcy=lstm"], "strategy 'rl' has no option polcy; accepted: "
                                                                   "policy, bins"),
    ]:
        code, out, err = cli.inprocess("search", *args, "--trials", "1", capsys=capsys, monkeypatch=monkeypatch)
        assert code == 2 and says in err and err.count("\n") == 1, (args, err)


def test_cluster_address_that_never_answers_fails_after_connect_timeout(cli) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never says a word, unlike a Ray head
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        proc = cli("search", "--address", address, "--connect-timeout", "4", "--trials", "1", "--name", "mute",
                   check=False, timeout=200)
    finally:
        silent.close()
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert f"cannot connect to the Ray cluster at --address {address!r} within 4 s (--connect-timeout)" in err, err
    assert len(err.splitlines()) == 1, err
    assert not (cli.storage / "mute").exists()


def test_a_taken_name_points_to_a_command_that_works(cli, capsys, monkeypatch, tmp_path) -> None:
    storage = tmp_path / "elsewhere"  # not the default storage ($NAS_STORAGE here)
    (storage / "dup24").mkdir(parents=True)
    (storage / "dup24" / "spec.json").write_text("{}")
    code, out, err = cli.inprocess("search", "--name", "dup24", "--storage", str(storage), capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 2 and f"or continue it with `nas resume dup24 --storage {storage}`" in err, err
    assert (storage / "dup24" / "spec.json").read_text() == "{}" and out == ""
    assert [p.name for p in (storage / "dup24").iterdir()] == ["spec.json"]  # untouched


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path) -> None:
    """`nas runs --json | head -1`: the pipe closes before nas writes; nas ends with 141 (128 + SIGPIPE), as Unix
    tools do, and says nothing (it used to report an internal BrokenPipeError)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    shutil.copytree(Path(__file__).parent / "data" / "runs_af59df6", tmp_path, dirs_exist_ok=True)  # stored runs
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "runs", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, NAS_STORAGE=str(tmp_path)))
    proc.stdout.close()  # before the interpreter has even started: the first write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err
