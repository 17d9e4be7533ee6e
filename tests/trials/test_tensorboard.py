"""TensorBoard: every trial's hyperparameters (HParams plugin) and per-epoch scalars, read back from the event
files; the run's experiment config lists every hyperparameter of the space and the metrics."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.ray


def _out(cli, capsys, monkeypatch, *args: str) -> str:
    """The CLI in this process (TensorFlow is imported once), its stdout; fails on a non-zero exit."""
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, (args, out, err)
    return out


def _accumulate(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(path), size_guidance={"tensors": 0})
    ea.Reload()
    return ea


def test_hparams_and_scalars_for_every_trial(small_run, capsys, monkeypatch) -> None:
    from tensorboard.plugins.hparams import metadata

    cli, name, _ = small_run
    run = cli.storage / name
    status = json.loads(_out(cli, capsys, monkeypatch, "status", name, "--json"))
    assert len(status["trials"]) == 3
    for t in status["trials"]:
        ea = _accumulate(run / "tensorboard" / t["trial_id"])
        content = ea.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        logged = {k: (v.string_value or v.bool_value or v.number_value) for k, v in start.hparams.items()}
        assert set(logged) == set(t["config"]), (logged, t["config"])
        for k, v in t["config"].items():
            assert logged[k] == pytest.approx(v) if isinstance(v, (int, float)) else logged[k] == v
        tags = ea.Tags()["tensors"]
        assert {"val_accuracy", "val_loss", "loss", "accuracy"} <= set(tags), tags
        events = ea.Tensors("val_accuracy")
        assert [e.step for e in events] == [1, 2]
        history = json.loads((run / "trials" / f"{t['trial_id']}.json").read_text())["history"]
        import tensorflow as tf

        assert [float(tf.make_ndarray(e.tensor_proto)) for e in events] == pytest.approx(
            [h["val_accuracy"] for h in history], rel=1e-5)

    # the experiment config, written once by the driver: every hyperparameter with its domain, the metrics
    ea = _accumulate(run / "tensorboard")
    content = ea.PluginTagToContent(metadata.PLUGIN_NAME)
    exp = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    spec = json.loads((run / "spec.json").read_text())
    assert {h.name for h in exp.hparam_infos} == {h["name"] for h in spec["hyperparameters"]}
    metrics = [m.name.tag for m in exp.metric_infos]
    assert metrics[0] == "val_accuracy" and "val_loss" in metrics
    by_name = {h.name: h for h in exp.hparam_infos}
    assert sorted(v.string_value for v in by_name["activation"].domain_discrete.values) == ["relu", "tanh"]
    assert by_name["learning_rate"].domain_interval.min_value == pytest.approx(1e-4)
