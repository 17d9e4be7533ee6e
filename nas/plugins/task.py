"""What a search asks its models to do: a ``Task`` derived from the data before any trial.

Data loading (``nas.plugins.data``) produces arrays; a search space (``nas.plugins.space``) builds models for a task;
this module sits between them, so neither has to import the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import DataError

if TYPE_CHECKING:
    from nas.plugins.data import Dataset

TASK_KINDS = ("classification", "regression", "reconstruction", "anomaly")
#: a space's ``tasks`` unless it says otherwise (``nas.plugins.space.SearchSpace.tasks``)
DEFAULT_TASKS: tuple[str, ...] = ("classification",)


@dataclass(frozen=True)
class Task:
    """What the model must do, derived from the data before any trial.

    ``input_shape`` excludes the batch axis: ``(8, 8)`` for digits images, ``(64,)`` for flat features,
    ``(T, F)`` for sequences, ``(H, W, C)`` for colour images.
    """

    kind: str
    input_shape: tuple[int, ...]
    num_classes: int | None = None  # classification
    output_dim: int | None = None  # regression
    normal_class: int | None = None  # anomaly: the class trained on
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise DataError(f"task {self.kind!r} is not valid; accepted: {', '.join(TASK_KINDS)}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Task":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


def is_classification(d: "Dataset") -> bool:
    return np.issubdtype(d.y_train.dtype, np.integer) and d.y_train.ndim == 1


def make_task(d: "Dataset", kind: str, normal_class: int | None = None) -> Task:
    """The task a data set poses, checked: classification needs integer labels 0..K-1 and two classes."""
    if kind == "classification":
        if not is_classification(d):
            raise DataError(
                f"classification needs 1-D integer class labels; {d.source!r} has labels of dtype "
                f"{d.y_train.dtype} and shape {d.y_train.shape} (use a regression-capable space or integer labels)"
            )
        y = np.concatenate([d.y_train, d.y_val])
        if y.min() < 0:
            raise DataError(f"class labels must be >= 0; {d.source!r} has label {int(y.min())}")
        k = int(y.max()) + 1
        if k < 2:
            raise DataError(f"classification needs at least 2 classes; {d.source!r} has {k}")
        if k > len(y):  # an output per class: more classes than examples is a label that is not a class number
            raise DataError(f"class labels must number the classes 0..K-1; {d.source!r} has label {int(y.max())} "
                            f"among {len(np.unique(y))} distinct labels and {len(y)} examples (renumber the "
                            f"classes 0..K-1)")
        unseen = sorted(set(np.unique(d.y_val).tolist()) - set(np.unique(d.y_train).tolist()))
        if unseen:
            shown = ", ".join(map(str, unseen[:5])) + (", ..." if len(unseen) > 5 else "")
            raise DataError(f"{d.source!r}: validation label(s) {shown} never occur in the training labels; a "
                            f"class must have training examples (add some, or drop those validation examples)")
        return Task("classification", d.input_shape, num_classes=k)
    if kind == "regression":
        if not np.issubdtype(d.y_train.dtype, np.number):
            raise DataError(f"regression needs numeric targets; {d.source!r} has dtype {d.y_train.dtype}")
        out = 1 if d.y_train.ndim == 1 else int(np.prod(d.y_train.shape[1:]))
        return Task("regression", d.input_shape, output_dim=out)
    if kind == "reconstruction":
        return Task("reconstruction", d.input_shape)
    if kind == "anomaly":
        if not is_classification(d):
            raise DataError(f"--task anomaly needs integer class labels to know the normal class; {d.source!r} has none")
        classes = sorted(set(np.unique(d.y_train).tolist()))
        nc = classes[0] if normal_class is None else normal_class
        if nc not in classes:
            raise DataError(f"--normal-class {nc!r} is not a label of {d.source!r}; labels: {classes}")
        return Task("anomaly", d.input_shape, normal_class=int(nc))
    raise DataError(f"task {kind!r} is not valid; accepted: {', '.join(TASK_KINDS)}")
