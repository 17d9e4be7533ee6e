"""The search-space contract.

A search space is a ``keras_tuner.HyperModel`` built for a ``Task``. It declares every hyperparameter (with
``hp.Int/Float/Choice/Boolean`` and ``hp.conditional_scope``) in ``declare(hp)`` and builds a compiled Keras
model in ``build_model(hp)``. Because ``declare`` registers every branch regardless of the values chosen, the
whole space, conditional parameters included, is known before the first trial (``hyperparameters()``); and
because ``build(hp)`` calls ``declare`` first, the same object works unchanged in ``keras_tuner.RandomSearch``.
"""

from __future__ import annotations

import abc
import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import keras_tuner as kt

from nas.errors import DataError, PluginError
from nas.plugins.task import DEFAULT_TASKS, Task, make_task

if TYPE_CHECKING:  # keep TensorFlow out of imports that do not train
    import keras

    from nas.plugins.data import Dataset


class SearchSpace(kt.HyperModel, abc.ABC):
    """Base class of every search space.

    Subclasses set ``name`` (and bump ``version`` when what a configuration builds changes: its ranges, its
    layers), implement ``declare`` and ``build_model``, and may override ``check_task``, ``default_objective``,
    ``prepare_data``, ``trial_metrics``, ``batch_size`` and ``fit``. A space that keeps this class's ``fit`` trains
    each trial in one ``fit`` call over all its epochs (its batches in nas's per-epoch order); one that defines its
    own ``fit`` gets the arrays ``(x, y)``, one epoch per call.
    """

    name: ClassVar[str] = ""
    #: the version a new run is searched with (recorded in its spec.json as ``space_version``)
    version: ClassVar[str] = "1"
    #: every version the class still builds, ``version`` among them: a run stored with an older one resumes and
    #: exports with what it was searched with (``nas.plugins.registry.stored_space_options``), and a user may ask
    #: for one with ``--space-option version=V``; empty: only ``version``
    versions: ClassVar[tuple[str, ...]] = ()
    #: task kinds this space can build for
    tasks: ClassVar[tuple[str, ...]] = DEFAULT_TASKS
    #: input ranks (excluding the batch axis) the space accepts, what it calls them, and a hint for other data
    input_ranks: ClassVar[tuple[int, ...] | None] = None
    input_kind: ClassVar[str] = ""
    input_hint: ClassVar[str] = ""

    def __init__(self, task: Task, version: str | None = None, **options: Any) -> None:
        super().__init__(name=self.name or type(self).__name__)
        if options:
            raise TypeError(f"unexpected options {sorted(options)}")
        if version is not None:
            known = self.versions or (type(self).version,)
            if str(version) not in known:
                raise PluginError(f"space {self.name or type(self).__name__!r} option version={version!r} is not "
                                  f"valid; it builds version{'s' if len(known) > 1 else ''} {', '.join(known)}")
            self.version = str(version)  # type: ignore[misc]  # this object builds that version
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


class BuildFunction(kt.HyperModel):
    """A KerasTuner build function ``build(hp) -> compiled keras.Model`` as a hypermodel, as ``kt.RandomSearch``
    takes one (KerasTuner wraps it the same way in its private ``DefaultHyperModel``; this keeps the function and
    its name, which name the space in messages and run names)."""

    def __init__(self, build: Any) -> None:
        super().__init__(name=getattr(build, "__name__", None) or type(build).__name__)
        self.function = build

    def build(self, hp: kt.HyperParameters) -> Any:
        return self.function(hp)


#: fit arguments the trial runner passes that a hypermodel's own ``fit`` may set itself (KerasTuner's guide tunes
#: ``shuffle``); they reach ``model.fit`` as defaults, so a keyword is never passed twice
SOFT_FIT_ARGUMENTS = ("shuffle", "verbose", "batch_size")


class HyperModelSpace(SearchSpace):
    """Any ``keras_tuner.HyperModel``, or a build function, as a search space (``nas.search(space=build_model)``).

    A KerasTuner hypermodel declares its hyperparameters while it builds (and, in its own ``fit``, while it
    trains), so a branch it does not take is unknown until some trial takes it. Our strategies see the whole space
    before the first trial, so the space is discovered up front: the model is built with the defaults, then with
    seeded random values of what is known, until ``discover`` builds in a row find nothing new; after each build
    the hypermodel's own ``fit`` runs with ``model.fit`` doing nothing, so what ``fit`` declares is found too
    (KerasTuner's own oracles learn the space as trials run; nothing in KerasTuner enumerates it, which is why this
    loop is written here). The hypermodel's own ``fit`` trains.
    """

    name = "hypermodel"
    tasks = ("classification", "regression", "reconstruction", "anomaly")

    def __init__(self, task: Task, hypermodel: kt.HyperModel, discover: int = 8, seed: int = 0,
                 hyperparameters: dict[str, Any] | None = None, tune_new_entries: bool = True,
                 allow_new_entries: bool = True) -> None:
        """``hyperparameters`` (a ``keras_tuner.HyperParameters``' ``get_config()``: JSON, stored in the run's
        spec), ``tune_new_entries``, ``allow_new_entries``: KerasTuner's restriction of a space. Its entries are
        declared first, so they win over the hypermodel's own declarations of the same names; with
        ``tune_new_entries=False`` every other entry keeps its default; with ``allow_new_entries=False`` the
        hypermodel may declare no other (one line naming them)."""
        super().__init__(task)
        self.hypermodel = hypermodel
        self.name = getattr(hypermodel, "name", None) or type(hypermodel).__name__
        self._given = kt.HyperParameters.from_config(hyperparameters) if hyperparameters else kt.HyperParameters()
        self._space = self._restricted(self._discover(discover, seed), tune_new_entries, allow_new_entries)

    def _restricted(self, found: kt.HyperParameters, tune_new: bool, allow_new: bool) -> kt.HyperParameters:
        from keras_tuner.engine.hyperparameters import Fixed

        given = {p.name for p in self._given.space}
        new = [p for p in found.space if p.name not in given]
        if new and not allow_new:
            raise PluginError(f"space {self.name!r} declares {', '.join(p.name for p in new)}, not in "
                              f"hyperparameters= (allow_new_entries=False); declare them there or allow them")
        if tune_new:
            return found
        out = kt.HyperParameters()
        for p in found.space:
            kept = p if p.name in given or isinstance(p, Fixed) else \
                Fixed(p.name, p.default, conditions=getattr(p, "conditions", None))
            out.merge([kept])
        return out

    @property
    def own_fit(self) -> bool:
        """Whether the hypermodel trains with a ``fit`` of its own (KerasTuner's default calls ``model.fit``)."""
        return type(self.hypermodel).fit is not kt.HyperModel.fit

    def _build_checked(self, hp: kt.HyperParameters) -> "keras.Model":
        """``hypermodel.build(hp)``, its failures as one line naming the space (the first build, before Ray)."""
        import keras

        try:
            model = self.hypermodel.build(hp)
        except Exception as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise PluginError(f"space {self.name!r}: build(hp) raised {type(e).__name__}: {text}"[:500]) from e
        if not isinstance(model, keras.Model):
            raise PluginError(f"space {self.name!r}: build(hp) returned {type(model).__name__}, not a keras.Model; "
                              f"return the compiled model")
        if not self.own_fit and not getattr(model, "compiled", True):  # its own fit may train an uncompiled one
            raise PluginError(f"space {self.name!r}: build(hp) returned a model that is not compiled; call "
                              f"model.compile(optimizer=..., loss=..., metrics=[...]) before returning it")
        return model

    def _declare_fit(self, hp: kt.HyperParameters, model: "keras.Model") -> None:
        """Run the hypermodel's own ``fit`` on two zero examples of the task's shape, with ``model.fit`` doing
        nothing: what it declares joins ``hp``. A custom training loop runs (two examples: milliseconds, plus its
        tracing); a fit that fails on such data stops there, and what it declared before stays."""
        import numpy as np

        if not self.own_fit:
            return
        x = np.zeros((2, *self.task.input_shape), dtype="float32")
        y = {"classification": np.zeros(2, dtype="int64"),
             "regression": np.zeros((2, self.task.output_dim or 1), dtype="float32")}.get(self.task.kind, x)
        with _fit_defaults(model, {}, replace=lambda *a, **k: None):
            try:
                self.hypermodel.fit(hp, model, x, y, validation_data=(x, y), epochs=1, callbacks=[])
            except Exception:  # noqa: BLE001 - discovery only; the trial runs the real fit
                pass

    def _discover(self, patience: int, seed: int) -> kt.HyperParameters:
        import keras
        import numpy as np

        from nas.plugins import params as P

        found = self._given.copy()  # declared first: the given entries win (KerasTuner's rule)
        self._declare_fit(found, self._build_checked(found))
        rng, quiet, builds, fit_quiet = np.random.default_rng(seed), 0, 0, False
        while quiet < patience and builds < 20 * patience:
            hp = P.to_hp(found, P.sample_values(found, rng))
            model = self.hypermodel.build(hp)
            built = {p.name for p in hp.space}
            if not fit_quiet:  # fit again until a call with drawn values declares nothing new (a loop is costly)
                self._declare_fit(hp, model)
                fit_quiet = {p.name for p in hp.space} <= built | {q.name for q in found.space}
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
        """The hypermodel's ``fit``, handed what KerasTuner hands it (data, ``validation_data``, ``epochs``,
        ``callbacks``, the user's fit arguments); the runner's ``SOFT_FIT_ARGUMENTS`` reach ``model.fit`` as
        defaults the hypermodel's own keywords override (its ``shuffle=hp.Boolean(...)``)."""
        soft = {k: kwargs.pop(k) for k in SOFT_FIT_ARGUMENTS if k in kwargs}
        if not self.own_fit:
            return model.fit(*args, **soft, **kwargs)
        with _fit_defaults(model, soft):
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


@contextlib.contextmanager
def _fit_defaults(model: Any, defaults: dict[str, Any], replace: Any = None) -> Iterator[None]:
    """Within the block, ``model.fit`` (or ``replace``) takes ``defaults`` for keywords its caller leaves out. Set
    on the instance, bypassing Keras' attribute tracking, and removed after."""
    original = replace or model.fit

    def fit(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**defaults, **kwargs})

    object.__setattr__(model, "fit", fit)
    try:
        yield
    finally:
        vars(model).pop("fit", None)
