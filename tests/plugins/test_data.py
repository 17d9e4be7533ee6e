"""Every bad data input is refused with a clear message before any trial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.errors import DataError
from nas.plugins.data import load_data
from nas.plugins.task import make_task


def test_digits_is_real_and_split_is_seeded() -> None:
    a, b, c = load_data("digits", seed=0), load_data("digits", seed=0), load_data("digits", seed=1)
    assert a.x_train.shape[1:] == (8, 8) and len(a.x_train) + len(a.x_val) == 1797
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert np.array_equal(a.y_val, b.y_val) and not np.array_equal(a.y_val, c.y_val)
    task = make_task(a, "classification")
    assert task.num_classes == 10 and task.input_shape == (8, 8)


def test_npz_with_and_without_validation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=rng.random((50, 3)), y_train=rng.integers(0, 3, 50))
    d = load_data(str(p))
    assert len(d.x_train) == 40 and len(d.x_val) == 10
    np.savez(p, x_train=rng.random((50, 3)), y_train=rng.integers(0, 3, 50), x_val=rng.random((7, 3)),
             y_val=rng.integers(0, 3, 7))
    assert len(load_data(str(p)).x_val) == 7


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x": np.zeros((5, 2))}, "has no array 'x_train'"),
        ({"x_train": np.zeros((5, 2)), "y_train": np.zeros(4)}, "5 inputs but 4 labels"),
        ({"x_train": np.full((5, 2), np.nan), "y_train": np.zeros(5)}, "NaN"),
        ({"x_train": np.zeros(5), "y_train": np.zeros(5)}, "needs a sample axis"),
        ({"x_train": np.array([["a", "b"]] * 5), "y_train": np.zeros(5)}, "numeric arrays are needed"),
        ({"x_train": np.zeros((5, 2)), "y_train": np.zeros(5), "x_val": np.zeros((2, 2))}, "both x_val and y_val"),
        ({"x_train": np.zeros((5, 2)), "y_train": np.zeros(5), "x_val": np.zeros((2, 3)), "y_val": np.zeros(2)},
         "differs from x_train shape"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict, needle: str) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError) as e:
        load_data(str(p))
    assert needle in str(e.value)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    p = tmp_path / "junk.npz"
    p.write_text("not a zip")
    with pytest.raises(DataError, match=r"is not an .npz archive \(not a zip file\); write one with numpy.savez"):
        load_data(str(p))


def test_csv(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,b,label\n" + "\n".join(f"{i},{i * 2},{'yes' if i % 2 else 'no'}" for i in range(30)))
    d = load_data(str(p), target="label")
    assert d.x_train.shape[1] == 2 and d.info["class_names"] == ["no", "yes"]
    assert make_task(d, "classification").num_classes == 2
    with pytest.raises(DataError, match="needs --target"):
        load_data(str(p))
    with pytest.raises(DataError, match="'nope' is not a column"):
        load_data(str(p), target="nope")
    q = tmp_path / "s.csv"
    q.write_text("name,v\n" + "\n".join(f"x{i},{i}" for i in range(10)))
    with pytest.raises(DataError, match="not numeric"):
        load_data(str(q), target="v")
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "none.csv"), target="v")


def test_csv_regression_and_forecasting_window(tmp_path: Path) -> None:
    p = tmp_path / "series.csv"
    t = np.arange(200)
    p.write_text("t,value\n" + "\n".join(f"{i},{np.sin(i / 10) + 0.1 * i / 200:.5f}" for i in t))
    d = load_data(str(p), target="value")
    assert d.y_train.dtype == np.float32 and make_task(d, "regression").output_dim == 1
    w = load_data(str(p), target="value", window=12)
    assert w.x_train.shape[1:] == (12, 2) and len(w.x_train) + len(w.x_val) == 200 - 12
    with pytest.raises(DataError, match="--window 500 needs more"):
        load_data(str(p), target="value", window=500)


def test_label_checks() -> None:
    d = load_data("digits")
    with pytest.raises(DataError, match="1-D integer class labels"):
        make_task(d.replace(y_train=d.y_train.astype("float32")), "classification")
    with pytest.raises(DataError, match="at least 2 classes"):
        make_task(d.replace(y_train=np.zeros_like(d.y_train), y_val=np.zeros_like(d.y_val)), "classification")
    with pytest.raises(DataError, match="--normal-class 42"):
        make_task(d, "anomaly", normal_class=42)


def test_keras_dataset_offline_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    """The real keras.datasets loader, with an empty cache on a machine without internet access."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError, match="'fashion_mnist' could not be loaded .*use --data digits"):
        load_data("fashion_mnist")
