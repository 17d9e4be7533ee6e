"""Data sets: loaded once per search, checked before any trial, shared with trials through Ray's object store.

``--data digits`` (default, offline: scikit-learn), ``mnist | fashion_mnist | cifar10`` (keras.datasets,
downloaded on first use), ``path.npz`` (x_train, y_train, optional x_val, y_val) and ``path.csv --target COL``
(optionally ``--window W`` for forecasting the next value of a series from W steps).
Images keep their shape ((N, 8, 8) for digits): each space adapts the input it receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import DataError

#: data sets known by name; anything else is a path
BUILTIN = ("digits", "mnist", "fashion_mnist", "cifar10")
ACCEPTED = f"{', '.join(BUILTIN)}, PATH.npz, PATH.csv (with --target COLUMN)"


@dataclass
class Dataset:
    """Train and validation arrays plus a description of where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def replace(self, **changes: Any) -> "Dataset":
        d = dict(self.__dict__)
        d.update(changes)
        return Dataset(**d)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "train": int(len(self.x_train)),
            "val": int(len(self.x_val)),
            "input_shape": list(self.input_shape),
            **self.info,
        }


def loads_keras(spec: str) -> bool:
    """Whether loading ``spec`` imports Keras (its built-in data sets: seconds, TensorFlow's import)."""
    return spec in BUILTIN and spec != "digits"


def load_data(
    spec: str = "digits",
    target: str | None = None,
    window: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load and check a data set; a missing validation split is taken from the training data, seeded."""
    check_spec(spec, target, window, val_fraction)
    if spec == "digits":
        data = _digits(val_fraction, seed)
    elif spec in BUILTIN:
        data = _keras_dataset(spec, val_fraction, seed)
    elif spec.endswith(".npz"):
        data = _npz(Path(spec), val_fraction, seed)
    else:
        data = _csv(Path(spec), target, window, val_fraction, seed)
    _check_arrays(data)
    return data


def check_spec(spec: str, target: str | None = None, window: int | None = None, val_fraction: float = 0.2) -> None:
    """What is wrong with a data spec that can be seen without reading the data (a name, a missing file, an
    option that does not apply): the search checks this before Ray starts, and loads while Ray starts."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction {val_fraction!r} is not valid; give a number between 0 and 1")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise DataError(f"--window {window!r} is not valid; give an integer >= 1")
    is_file = spec.endswith((".npz", ".csv"))
    if spec not in BUILTIN and not is_file:
        raise DataError(f"data {spec!r} is not valid; accepted: {ACCEPTED}")
    if is_file and Path(spec).is_dir():
        raise DataError(f"data file {spec!r} is a directory; give a .npz or .csv file")
    if is_file and not Path(spec).is_file():
        raise DataError(f"data file {spec!r} does not exist")
    if spec.endswith(".csv") and not target:
        raise DataError(f"CSV data {spec!r} needs --target COLUMN naming the column to predict")
    if target is not None and not spec.endswith(".csv"):
        raise DataError(f"--target {target!r} applies to CSV data only; {spec!r} is not a .csv file")
    if window is not None and not spec.endswith(".csv"):
        raise DataError(f"--window {window} applies to CSV time series only; {spec!r} is not a .csv file")


# -- loaders ------------------------------------------------------------------------------------------------
def _split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    idx = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    if len(x) - n_val < 1:
        raise DataError(f"{len(x)} examples are too few to split off a validation set; give at least 2")
    val, train = idx[:n_val], idx[n_val:]
    return x[train], y[train], x[val], y[val]


def _digits(val_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")  # (1797, 8, 8) in [0, 1]
    y = d.target.astype("int64")
    return Dataset(*_split(x, y, val_fraction, seed), source="digits", info={"classes": 10})


def _keras_dataset(name: str, val_fraction: float, seed: int) -> Dataset:
    import keras

    loader = getattr(keras.datasets, name)
    try:
        (x, y), _ = loader.load_data()
    except Exception as e:  # offline: urllib errors, partial files
        raise DataError(
            f"data {name!r} could not be loaded ({(str(e).splitlines() or [type(e).__name__])[0][:300]}); "
            f"keras downloads it on first use, so this machine needs internet access or a copy in ~/.keras/datasets; "
            f"offline, use --data digits or an .npz file"
        ) from None
    x = (x.astype("float32") / 255.0)
    y = y.reshape(-1).astype("int64")
    return Dataset(*_split(x, y, val_fraction, seed), source=name, info={"classes": int(y.max()) + 1})


def _npz(path: Path, val_fraction: float, seed: int) -> Dataset:
    import zipfile

    if not zipfile.is_zipfile(path):  # numpy would take it for a pickle and say "pickled (object) data"
        raise DataError(f"data file {str(path)!r} is not an .npz archive (not a zip file); write one with "
                        f"numpy.savez(path, x_train=..., y_train=...)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise DataError(f"data file {str(path)!r} is not a readable .npz archive ({type(e).__name__}: {e})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(
                f"data file {str(path)!r} has no array {key!r}; it has {sorted(arrays) or 'none'} "
                f"(expected x_train, y_train and optionally x_val, y_val)"
            )
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"data file {str(path)!r} must have both x_val and y_val, or neither")
    return from_arrays(arrays["x_train"], arrays["y_train"], arrays.get("x_val"), arrays.get("y_val"),
                       source=str(path), val_fraction=val_fraction, seed=seed)


def from_arrays(x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                source: str = "arrays", val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A checked data set from arrays (an .npz file's, or a Python caller's); without validation arrays a seeded
    ``val_fraction`` of the training ones is held out."""
    x, y = np.asarray(x), np.asarray(y)
    _check_numeric(x, f"{source}: x_train")
    _check_pair(x, y, f"{source}: x_train/y_train")
    if (x_val is None) != (y_val is None):
        raise DataError(f"{source}: give both validation inputs and labels, or neither")
    if x_val is not None:
        xv, yv = np.asarray(x_val), np.asarray(y_val)
        _check_numeric(xv, f"{source}: x_val")
        _check_pair(xv, yv, f"{source}: x_val/y_val")
        if xv.shape[1:] != x.shape[1:]:
            raise DataError(f"{source}: x_val shape {xv.shape[1:]} differs from x_train shape {x.shape[1:]}")
        parts = (x, y, xv, yv)
    else:
        parts = _split(x, y, val_fraction, seed)
    parts = (parts[0].astype("float32"), _labels(parts[1], f"{source}: y_train"), parts[2].astype("float32"),
             _labels(parts[3], f"{source}: y_val"))
    return Dataset(*parts, source=source)


def _csv(path: Path, target: str | None, window: int | None, val_fraction: float, seed: int) -> Dataset:
    import pandas as pd

    assert target  # check_spec
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise DataError(f"data file {str(path)!r} is not a readable CSV file ({type(e).__name__}: {e})") from None
    if target not in df.columns:
        raise DataError(f"--target {target!r} is not a column of {str(path)!r}; columns: {', '.join(map(str, df.columns))}")
    if len(df) < 2:
        raise DataError(f"data file {str(path)!r} has {len(df)} rows; at least 2 are needed")
    features = df.drop(columns=[target])
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise DataError(f"{str(path)!r}: feature columns {bad} are not numeric; only numeric features are accepted")
    if window is not None:  # forecasting: predict the target's next value from `window` steps of every column
        if not pd.api.types.is_numeric_dtype(df[target]):
            raise DataError(f"{str(path)!r}: --target {target!r} must be numeric for forecasting with --window")
        series = df.astype("float32").to_numpy()
        if np.isnan(series).any():
            raise DataError(f"{str(path)!r} has missing values; fill or drop them first")
        if len(series) <= window + 1:
            raise DataError(f"{str(path)!r} has {len(series)} rows; --window {window} needs more than {window + 1}")
        mean, std = series.mean(axis=0), series.std(axis=0) + 1e-8
        z = (series - mean) / std  # standardised so every column trains on the same scale
        t = list(df.columns).index(target)
        x = np.stack([z[i: i + window] for i in range(len(z) - window)]).astype("float32")
        y = z[window:, t].astype("float32")
        n_val = max(1, int(round(len(x) * val_fraction)))  # chronological: validate on the most recent windows
        info = {"target": target, "window": window, "target_mean": float(mean[t]), "target_std": float(std[t])}
        return Dataset(x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:], source=str(path), info=info)
    x = features.to_numpy(dtype="float32")
    if np.isnan(x).any():
        raise DataError(f"{str(path)!r} has missing values in its feature columns; fill or drop them first")
    col = df[target]
    blank = np.flatnonzero(col.isna().to_numpy())
    if len(blank):
        rows = ", ".join(str(int(i) + 2) for i in blank[:5]) + (", ..." if len(blank) > 5 else "")
        raise DataError(f"{str(path)!r}: --target column {target!r} has {len(blank)} blank cell(s) (line {rows} of "
                        f"the file); fill or drop those rows")
    if pd.api.types.is_float_dtype(col) and not np.all(np.mod(col.dropna(), 1) == 0):
        y = col.to_numpy(dtype="float32")
        info: dict[str, Any] = {"target": target}
    else:
        classes = sorted(col.astype(str).unique()) if not pd.api.types.is_numeric_dtype(col) else None
        if classes is not None:
            y = col.astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy("int64")
            info = {"target": target, "class_names": classes}
        else:
            y = col.to_numpy("int64")
            info = {"target": target}
    return Dataset(*_split(x, y, val_fraction, seed), source=str(path), info=info)


# -- checks -------------------------------------------------------------------------------------------------
def _check_numeric(x: np.ndarray, what: str) -> None:
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise DataError(f"{what} has dtype {x.dtype}; numeric arrays are needed")
    if x.ndim < 2:
        raise DataError(f"{what} has shape {x.shape}; it needs a sample axis and at least one feature axis")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{what} contains NaN or infinite values")


def _check_pair(x: np.ndarray, y: np.ndarray, what: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{what}: {len(x)} inputs but {len(y)} labels; they must have the same length")
    if len(x) == 0:
        raise DataError(f"{what} is empty")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        bad = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))
        raise DataError(f"{what}: {len(bad)} label(s) are NaN or infinite (the first at index {int(bad[0])}); "
                        f"finite numbers are needed")


def _labels(y: np.ndarray, what: str = "labels") -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return y.astype("int64").reshape(len(y), *y.shape[1:]) if y.ndim > 1 else y.astype("int64")
    if np.issubdtype(y.dtype, np.floating):
        return y.astype("float32")
    raise DataError(f"{what} has dtype {y.dtype}; integer class labels or numeric targets are needed")


def _check_arrays(d: Dataset) -> None:
    if d.x_train.shape[1:] != d.x_val.shape[1:]:
        raise DataError(f"train inputs {d.x_train.shape[1:]} and validation inputs {d.x_val.shape[1:]} differ in shape")
