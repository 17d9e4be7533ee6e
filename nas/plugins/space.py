"""The search-space contract.

A search space is a ``keras_tuner.HyperModel`` built for a ``Task``. It declares every hyperparameter (with
``hp.Int/Float/Choice/Boolean`` and ``hp.conditional_scope``) in ``declare(hp)`` and builds a compiled Keras
model in ``build_model(hp)``. Because ``declare`` registers every branch regardless of the values chosen, the
whole space, conditional parameters included, is known before the first trial (``hyperparameters()``); and
because ``build(hp)`` calls ``declare`` first, the same object works unchanged in ``keras_tuner.RandomSearch``.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import keras_tuner as kt

from nas.errors import DataError
from nas.plugins.task import Task, make_task

if TYPE_CHECKING:  # keep TensorFlow out of imports that do not train
    import keras

    from nas.plugins.data import Dataset


class SearchSpace(kt.HyperModel, abc.ABC):
    """Base class of every search space.

    Subclasses set ``name`` (and bump ``version`` when the space changes), implement ``declare`` and
    ``build_model``, and may override ``check_task``, ``default_objective``, ``prepare_data``,
    ``trial_metrics``, ``batch_size`` and ``fit``. A space that keeps this class's ``fit`` trains each trial in
    one ``fit`` call over all its epochs (its batches in nas's per-epoch order); one that defines its own ``fit``
    gets the arrays ``(x, y)``, one epoch per call.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    #: task kinds this space can build for
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    #: input ranks (excluding the batch axis) the space accepts, what it calls them, and a hint for other data
    input_ranks: ClassVar[tuple[int, ...] | None] = None
    input_kind: ClassVar[str] = ""
    input_hint: ClassVar[str] = ""

    def __init__(self, task: Task, **options: Any) -> None:
        super().__init__(name=self.name or type(self).__name__)
        if options:
            raise TypeError(f"unexpected options {sorted(options)}")
        self.check_task(task)
        self.task = task

    # -- the contract ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def declare(self, hp: kt.HyperParameters) -> None:
        """Register every hyperparameter of the space on ``hp``, every conditional branch included."""

    @abc.abstractmethod
    def build_model(self, hp: kt.HyperParameters) -> "keras.Model":
        """Return a compiled Keras model for the values in ``hp`` (declared already)."""

    # -- optional hooks -------------------------------------------------------------------------------------
    def check_task(self, task: Task) -> None:
        """Raise ``DataError`` with a clear message when this space cannot build for ``task``."""
        if task.kind not in self.tasks:
            raise DataError(
                f"space {self.name!r} cannot do task {task.kind!r}; it accepts: {', '.join(self.tasks)}"
            )
        shape = tuple(task.input_shape)
        if self.input_ranks is not None and len(shape) not in self.input_ranks:
            raise DataError(f"space {self.name!r} needs {self.input_kind}; got inputs of shape {shape} "
                            f"({self.input_hint})")

    def default_objective(self) -> str:
        return "val_accuracy:max" if self.task.kind == "classification" else "val_loss:min"

    def prepare_data(self, data: "Dataset") -> "Dataset":
        """The (x, y) pairs the model trains on; e.g. an autoencoder trains to reproduce its input."""
        return data

    def trial_metrics(self, model: "keras.Model", data: "Dataset") -> dict[str, float]:
        """Extra metrics computed after each epoch on the validation data (e.g. anomaly precision/recall)."""
        return {}

    @classmethod
    def example_task(cls, data: "Dataset") -> Task:
        """The task this space solves on ``data`` by default (its first accepted task kind)."""
        return make_task(data, cls.tasks[0])

    # -- KerasTuner integration ------------------------------------------------------------------------------
    def hyperparameters(self) -> kt.HyperParameters:
        """The whole space, conditional parameters included, before any trial."""
        hp = kt.HyperParameters()
        self.declare(hp)
        return hp

    def build(self, hp: kt.HyperParameters) -> "keras.Model":
        self.declare(hp)  # idempotent: registers any parameter not yet known, keeps values already set
        return self.build_model(hp)

    def batch_size(self, hp: kt.HyperParameters) -> int:
        """The batch size a model of ``hp`` trains with: the space's ``batch_size`` hyperparameter when it
        declares one, else Keras' default, 32."""
        return int(hp.get("batch_size")) if "batch_size" in hp.values else 32

    def fit(self, hp: kt.HyperParameters, model: "keras.Model", *args: Any, **kwargs: Any) -> Any:
        """Train with ``batch_size(hp)`` (which also sets the validation batches when the training data come
        in batches already)."""
        kwargs.setdefault("batch_size", self.batch_size(hp))
        return model.fit(*args, **kwargs)


def optimizer(name: str, learning_rate: float, momentum: float = 0.9) -> Any:
    """A Keras optimizer by name (sgd uses momentum, as our users' lecture material does)."""
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ValueError(f"optimizer {name!r} is not valid; accepted: sgd, adam, rmsprop")


def head(task: Task) -> tuple[int, str | None, str, list[str]]:
    """Output units, activation, loss and metrics for a supervised task."""
    if task.kind == "classification":
        return int(task.num_classes or 2), "softmax", "sparse_categorical_crossentropy", ["accuracy"]
    if task.kind == "regression":
        return int(task.output_dim or 1), None, "mse", ["mae"]
    raise DataError(f"task {task.kind!r} has no supervised head")


class HyperModelSpace(SearchSpace):
    """Any ``keras_tuner.HyperModel`` as a search space (``nas.search(space=MyHyperModel())``).

    A KerasTuner hypermodel declares its hyperparameters while it builds, so a branch it does not take is unknown
    until some trial takes it. Our strategies see the whole space before the first trial, so the space is
    discovered up front: the model is built with the defaults, then with seeded random values of what is known,
    until ``discover`` builds in a row find nothing new (KerasTuner's own oracles learn the space as trials run;
    nothing in KerasTuner enumerates it, which is why this loop is written here). The hypermodel's own ``fit`` trains.
    """

    name = "hypermodel"
    tasks = ("classification", "regression", "reconstruction", "anomaly")

    def __init__(self, task: Task, hypermodel: kt.HyperModel, discover: int = 8, seed: int = 0) -> None:
        super().__init__(task)
        self.hypermodel = hypermodel
        self.name = type(hypermodel).__name__
        self._space = self._discover(discover, seed)

    def _discover(self, patience: int, seed: int) -> kt.HyperParameters:
        import keras
        import numpy as np

        from nas.plugins import params as P

        found = kt.HyperParameters()
        self.hypermodel.build(found)
        rng, quiet, builds = np.random.default_rng(seed), 0, 0
        while quiet < patience and builds < 20 * patience:
            hp = P.to_hp(found, P.sample_values(found, rng))
            self.hypermodel.build(hp)
            builds += 1
            new = [p for p in hp.space if p.name not in {q.name for q in found.space}]
            for p in new:
                found.merge([p])
            quiet = 0 if new else quiet + 1
            keras.backend.clear_session(free_memory=False)
        return found

    def declare(self, hp: kt.HyperParameters) -> None:
        hp.merge(self._space, overwrite=False)

    def build_model(self, hp: kt.HyperParameters) -> "keras.Model":
        return self.hypermodel.build(hp)

    def fit(self, hp: kt.HyperParameters, model: "keras.Model", *args: Any, **kwargs: Any) -> Any:
        return self.hypermodel.fit(hp, model, *args, **kwargs)

    def default_objective(self) -> str:
        """Validation accuracy when the hypermodel's default model is compiled with it, else validation loss."""
        import keras

        from nas.plugins import params as P

        model = self.build(P.to_hp(self._space, P.default_values(self._space)))
        metrics = [m if isinstance(m, str) else getattr(m, "name", "") for m in
                   (model.get_compile_config() or {}).get("metrics") or []]
        keras.backend.clear_session(free_memory=False)
        return "val_accuracy:max" if {"accuracy", "acc"} & set(metrics) else "val_loss:min"
