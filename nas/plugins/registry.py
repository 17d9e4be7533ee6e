"""Plugin discovery.

Spaces and strategies register through the entry-point groups ``nas.search_spaces`` and ``nas.strategies``
(a third-party package adds one in its own pyproject.toml). Anywhere a name is accepted, ``module:Class`` and
``path/to/file.py:Class`` work too, so a user's own plugin needs no packaging.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import PluginError
from nas.plugins.objective import Objective

if TYPE_CHECKING:
    import keras_tuner as kt

SPACES = "nas.search_spaces"
STRATEGIES = "nas.strategies"
_KIND = {SPACES: "space", STRATEGIES: "strategy"}


def available(group: str) -> dict[str, str]:
    """Registered plugin names mapped to their ``module:Class`` targets."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=group), key=lambda e: e.name)}


def _load_file(path: Path, attr: str) -> Any:
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist")
    mod_name = "nas_user_" + "_".join(path.resolve().with_suffix("").parts[-3:]).replace("-", "_").replace(".", "_")
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # registered first so pickling by Ray can find the class
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[mod_name]
            raise PluginError(f"plugin file {str(path)!r} failed to import: {type(e).__name__}: {e}") from e
    return _attr(sys.modules[mod_name], attr, str(path))


def _attr(module: Any, attr: str, where: str) -> Any:
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")]
        raise PluginError(f"{where!r} has no {attr!r}; classes there: {', '.join(names) or 'none'}") from None


def check_ref(group: str, ref: str) -> None:
    """Fail on a plugin that cannot exist, without importing it (a space's import loads Keras and its framework):
    an unregistered name or a missing file."""
    kind = _KIND[group]
    if not isinstance(ref, str) or not ref:
        raise PluginError(f"{kind} name {ref!r} is not valid")
    if ref.endswith(".pkl"):  # a plugin object the Python API saved with its run (nas.driver.inputs)
        if not Path(ref).is_file():
            raise PluginError(f"{kind} file {ref!r} does not exist")
        return
    target, sep, _ = ref.rpartition(":")
    if not sep:
        if ref not in available(group):
            raise PluginError(f"unknown {kind} {ref!r}; registered: {', '.join(available(group)) or 'none'} "
                              f"(or give module:Class or path/to/file.py:Class)")
    elif target.endswith(".py") or "/" in target or "\\" in target:
        if not Path(target).is_file():
            raise PluginError(f"plugin file {target!r} does not exist")


#: what ``create_space`` / ``create_strategy`` pass themselves: never a user's option
_FIXED = {SPACES: {"task"}, STRATEGIES: {"space", "objective", "seed"}}
#: the base classes' own ``__init__`` keywords, where a plugin's ``**kwargs`` chain ends
_BASES = {"SearchSpace": ["task", "version"], "Strategy": ["space", "objective", "seed"]}


def check_options(group: str, ref: str, options: dict[str, Any]) -> None:
    """Refuse an option the plugin's class cannot take, before the plugin is imported: the same check and line
    as ``create_space`` / ``create_strategy`` make, from the class's source. Importing a space or strategy
    imports KerasTuner, hence Keras and its framework (8 s of CPU on a 2-core machine, while Ray starts beside
    it); the ``__init__`` chain a class's source spells out is enough to know its keywords. Hand-written with
    ``ast`` because ``inspect`` needs the imported class. Whatever the source does not settle (a base from
    another module, a class built at run time, a ``**kwargs`` passed on to something unknown) is left to the
    check made once the class is imported."""
    if not options:
        return
    names = _source_accepted(group, ref)
    if names is not None:
        _refuse(options, [n for n in names if n not in _FIXED[group]], _KIND[group], ref)


def _refuse(options: dict[str, Any], accepted: list[str], kind: str, ref: str) -> None:
    bad = sorted(set(options) - set(accepted))
    if bad:
        raise PluginError(f"{kind} {ref!r} has no option {', '.join(bad)}; accepted: {', '.join(accepted) or 'none'}")


def _source_accepted(group: str, ref: str) -> list[str] | None:
    """``_accepted`` read from source: the keywords along the class's ``__init__`` chain, or None."""
    import ast

    found = _source_chain(group, ref)
    if found is None:
        return None
    chain, end, _ = found
    names: list[str] = []
    for node in chain:
        if not _plain(node):
            return None  # a base, metaclass or decorator the source does not settle
        init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        if init is not None:
            args = init.args
            names += [a.arg for a in args.args + args.kwonlyargs if a.arg != "self" and a.arg not in names]
            if args.kwarg is None:
                return names
        if len(node.bases) != 1:
            return None  # several bases: which __init__ comes next is the MRO's, known once imported
    return names + [n for n in _BASES[end] if n not in names] if end in _BASES else None


def source_tasks(ref: Any) -> tuple[str, ...] | None:
    """A space class's ``tasks`` read from its source (the first literal ``tasks = ...`` up its chain, else the
    base's), or None where the source does not settle it: the default task is known before the space's import
    (seconds of Keras), so the data's labels are checked for it before Ray starts."""
    import ast

    from nas.plugins.task import DEFAULT_TASKS

    found = _source_chain(SPACES, ref)
    if found is None:
        return None
    chain, end, _ = found
    for node in chain:
        for stmt in node.body:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
                stmt.target if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else None
            if isinstance(target, ast.Name) and target.id == "tasks":
                try:
                    tasks = ast.literal_eval(stmt.value)
                except Exception:  # not a literal (ValueError, TypeError, ...): known once imported
                    return None
                return tuple(tasks) if isinstance(tasks, (tuple, list)) and tasks else None
        if not _plain(node) or len(node.bases) != 1:
            return None
    return DEFAULT_TASKS if end == "SearchSpace" else None


def check_class_source(group: str, ref: Any) -> None:
    """Refuse, from source, a ``module:Class`` whose class plainly is no plugin: its chain of bases, all in its
    own module, ends in a built-in class (``Exception``, ``object``, ``dict`` ...). The same line as the check
    made once the class is imported; anything else is left to that check."""
    import builtins

    found = _source_chain(group, ref) if isinstance(ref, str) and ":" in ref else None
    if found is None:
        return
    chain, end, bound = found
    # a chain that reached a base name (end) is plain all along; one with several bases is the MRO's to settle
    if chain and end is not None and end not in bound and isinstance(getattr(builtins, end, None), type) and \
            all(len(n.bases) <= 1 for n in chain):
        kind, base = _KIND[group], "SearchSpace" if group == SPACES else "Strategy"
        module = ref.rpartition(":")[0]
        shown = f"{module}.{chain[0].name}" if not module.endswith(".py") else chain[0].name
        raise PluginError(f"{kind} {ref!r} is <class {shown!r}>, not a subclass of nas.{base}")


def _plain(node: Any) -> bool:
    """A class statement whose bases are plain names (or our bases by attribute), with no metaclass keyword or
    decorator: its chain can be followed in the source."""
    import ast

    return not node.keywords and not node.decorator_list and all(
        isinstance(b, ast.Name) or isinstance(b, ast.Attribute) and b.attr in _BASES for b in node.bases)


def _source_chain(group: str, ref: Any) -> tuple[list[Any], str | None, set[str]] | None:
    """The ``ast.ClassDef`` statements from ``ref``'s class up its first bases while they are in the same module,
    the name of the base the chain leaves the module by (None: no base, or one the source does not name
    plainly), and the names the module binds by import or assignment (such a base is not a built-in). None
    where the source cannot be read (the import reports why), ``ref`` is no class statement there, or ``ref``
    is no reference to a source file (an object, or a plugin the Python API saved with its run, ``*.pkl``)."""
    import ast

    if not isinstance(ref, str) or ref.endswith(".pkl"):
        return None

    target = available(group).get(ref, ref) if ":" not in ref else ref
    module, sep, attr = target.rpartition(":")
    if not sep:
        return None
    try:
        if module.endswith(".py") or "/" in module or "\\" in module:
            path = Path(module)
        else:
            spec = importlib.util.find_spec(module)  # imports the parent packages only (ours are docstrings)
            path = Path(spec.origin) if spec and spec.origin else None
        if path is None or path.suffix != ".py":
            return None
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (ImportError, ValueError, OSError, SyntaxError, UnicodeDecodeError):
        return None  # the import reports it, as before
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bound = {a.asname or a.name.split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in n.names} | {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                                  if isinstance(t, ast.Name)}
    if attr not in classes or attr in bound:
        return None
    chain: list[Any] = []
    name: str | None = attr
    while name in classes and name not in bound and classes[name] not in chain:
        node = classes[name]
        chain.append(node)
        if not node.bases or not _plain(node):  # a plain class statement with no base is an ``object``
            return chain, "object" if not node.bases and _plain(node) else None, bound
        base = node.bases[0]
        name = base.id if isinstance(base, ast.Name) else base.attr
    return chain, name, bound


def load(group: str, ref: str) -> type:
    """A plugin class from a registered name, ``module:Class`` or ``file.py:Class``."""
    obj = _target(group, ref)
    _check_class(group, ref, obj)
    return obj


def _target(group: str, ref: str) -> Any:
    """What a registered name, ``module:attr`` or ``file.py:attr`` names (unchecked)."""
    kind = _KIND[group]
    if not isinstance(ref, str) or not ref:
        raise PluginError(f"{kind} name {ref!r} is not valid")
    if ":" in ref:
        target, _, attr = ref.rpartition(":")
        if target.endswith(".py") or "/" in target or "\\" in target:
            obj = _load_file(Path(target), attr)
        else:
            try:
                module = importlib.import_module(target)
            except ImportError as e:
                raise PluginError(f"{kind} {ref!r}: module {target!r} cannot be imported ({e})") from e
            obj = _attr(module, attr, target)
    else:
        eps = {ep.name: ep for ep in entry_points(group=group)}
        if ref not in eps:
            raise PluginError(
                f"unknown {kind} {ref!r}; registered: {', '.join(sorted(eps)) or 'none'} "
                f"(or give module:Class or path/to/file.py:Class)"
            )
        try:
            obj = eps[ref].load()
        except Exception as e:
            raise PluginError(f"{kind} {ref!r} ({eps[ref].value}) failed to load: {type(e).__name__}: {e}") from e
    return obj


def _check_class(group: str, ref: str, obj: Any) -> None:
    from nas.plugins.space import SearchSpace
    from nas.plugins.strategy import Strategy

    base = SearchSpace if group == SPACES else Strategy
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise PluginError(f"{_KIND[group]} {ref!r} is {obj!r}, not a subclass of nas.{base.__name__}")
    missing = sorted(getattr(obj, "__abstractmethods__", ()))
    if missing:
        needs = {"_ask": "_ask(self) -> dict of values or None", "declare": "declare(self, hp)",
                 "build_model": "build_model(self, hp) -> compiled keras.Model"}
        raise PluginError(f"{_KIND[group]} {ref!r} ({obj.__module__}.{obj.__qualname__}) does not implement "
                          f"{', '.join(missing)}; a {_KIND[group]} plugin must define "
                          f"{', '.join(needs.get(m, m) for m in missing)} (see nas.{base.__name__})")


def _accepted(cls: type) -> list[str] | None:
    """The keyword options ``cls(...)`` accepts, along its ``__init__`` chain: a class taking ``**kwargs`` passes
    them on to the next ``__init__`` up; our base classes take none (None: the chain ends in a ``**kwargs`` we
    cannot see through)."""
    from nas.plugins.space import SearchSpace
    from nas.plugins.strategy import Strategy

    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name != "self" and p.name not in names]
        if klass in (SearchSpace, Strategy) or not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _options(cls: type, options: dict[str, Any], kind: str, ref: str, fixed: set[str]) -> None:
    names = _accepted(cls)
    if names is None:
        return
    _refuse(options, [n for n in names if n not in fixed], kind, ref)


def create_strategy(
    name: Any,
    space: "kt.HyperParameters",
    objective: str | Objective | list[str | Objective] = "val_accuracy:max",
    seed: int | None = None,
    **options: Any,
) -> Any:
    """A strategy by registered name (or ``module:Class`` / ``file.py:Class`` / a saved ``.pkl``) over ``space``;
    a ``nas.Strategy`` subclass is made the same way, and an instance is used as it is."""
    from nas.plugins.strategy import Strategy

    plugin = _plugin(STRATEGIES, name)
    if isinstance(plugin, Strategy):
        return plugin
    _options(plugin, options, "strategy", _label(name), _FIXED[STRATEGIES])
    return plugin(space=space, objective=objective, seed=seed, **options)


def create_space(name: Any, task: Any, **options: Any) -> Any:
    """A search space by registered name (or ``module:Class`` / ``file.py:Class`` / a saved ``.pkl``) built for
    ``task``; a ``nas.SearchSpace`` subclass is made the same way, an instance is used as it is, and any other
    ``keras_tuner.HyperModel`` becomes a ``nas.plugins.space.HyperModelSpace``."""
    from nas.plugins.space import HyperModelSpace, SearchSpace

    plugin = _plugin(SPACES, name)
    if isinstance(plugin, SearchSpace):
        return plugin
    if not inspect.isclass(plugin):  # a KerasTuner HyperModel (checked by _plugin)
        return HyperModelSpace(task, plugin, **options)
    _options(plugin, options, "space", _label(name), _FIXED[SPACES])
    return plugin(task=task, **options)


def stored_space(spec: Any) -> Any:
    """The search space a stored run was searched with, from its ``spec.json``: its reference, task, options and
    version (export, the API's ``Run.best_model``); ``spec``: a ``nas.storage.records.RunSpec``."""
    return create_space(spec.space, task=spec.task, **stored_space_options(spec))


def stored_space_options(spec: Any) -> dict[str, Any]:
    """A stored run's space options, with the version of the space it was searched with (``versioned_options``)."""
    return versioned_options(space_class(spec.space), spec.space_options, spec.space_version)


def versioned_options(cls: type, options: dict[str, Any], version: str | None) -> dict[str, Any]:
    """``options`` that build space class ``cls`` at ``version`` (a stored run's ``space_version``): with
    ``version=`` added when the class's current version is another one that it still builds (its ``versions``).
    A class that does not list that version builds its current one, as every space did before versions were
    kept; ``version`` None (a new run) or a ``version`` option already given: ``options`` unchanged."""
    from nas.plugins.space import SearchSpace

    options = dict(options)
    if (version is not None and "version" not in options and issubclass(cls, SearchSpace)
            and str(version) != cls.version and str(version) in cls.versions):
        options["version"] = str(version)
    return options


def space_class(ref: Any) -> type:
    """The ``SearchSpace`` class a space reference, class or object stands for (its ``tasks`` are read before the
    space is built): a ``keras_tuner.HyperModel`` object stands for ``nas.plugins.space.HyperModelSpace``."""
    from nas.plugins.space import HyperModelSpace, SearchSpace

    plugin = _plugin(SPACES, ref)
    if inspect.isclass(plugin):
        return plugin
    return type(plugin) if isinstance(plugin, SearchSpace) else HyperModelSpace


def _plugin(group: str, ref: Any) -> Any:
    """A plugin class (from a reference, or given), or an instance given or saved in a ``.pkl`` file."""
    import keras_tuner as kt

    from nas.plugins.space import SearchSpace
    from nas.plugins.strategy import Strategy

    base = SearchSpace if group == SPACES else Strategy
    if isinstance(ref, str) and ref.endswith(".pkl"):
        import cloudpickle

        path = Path(ref)
        if not path.is_file():
            raise PluginError(f"{_KIND[group]} file {ref!r} does not exist")
        with open(path, "rb") as f:
            ref = cloudpickle.load(f)
    label = _label(ref)
    if isinstance(ref, str):
        if group == SPACES and ":" in ref:  # file.py:build_model, module:MyHyperModel, ... (KerasTuner's forms)
            ref = _target(group, ref)
            if inspect.isclass(ref) and issubclass(ref, base):
                _check_class(group, label, ref)
                return ref
        else:
            return load(group, ref)
    if group == SPACES:
        from nas.plugins.space import BuildFunction

        if inspect.isclass(ref) and issubclass(ref, kt.HyperModel) and not issubclass(ref, base):
            try:
                return ref()  # a HyperModel class, as KerasTuner users write them: no constructor arguments
            except TypeError as e:
                raise PluginError(f"space {label!r} is a keras_tuner.HyperModel class whose constructor needs "
                                  f"arguments ({e}); give an instance") from None
        if not inspect.isclass(ref) and not isinstance(ref, kt.HyperModel) and callable(ref):
            return BuildFunction(ref)  # KerasTuner's build function: build(hp) -> compiled keras.Model
    if inspect.isclass(ref):
        _check_class(group, label, ref)
        return ref
    if isinstance(ref, base) or (group == SPACES and isinstance(ref, kt.HyperModel)):
        return ref
    wanted = ("nas.SearchSpace or keras_tuner.HyperModel (class or instance), a build function build(hp)"
              if group == SPACES else "nas.Strategy (class or instance)")
    raise PluginError(f"{_KIND[group]} {label!r} is not a {wanted} nor a name")


def _label(ref: Any) -> str:
    if isinstance(ref, str):
        return ref
    if inspect.isfunction(ref) or inspect.ismethod(ref):
        return ref.__name__
    cls = ref if inspect.isclass(ref) else type(ref)
    return cls.__name__


def summary(cls: type) -> str:
    return first_sentence(inspect.getdoc(cls) or "")


def first_sentence(doc: str) -> str:
    """A docstring's first sentence, over as many lines as it takes (``nas list``'s summary of a plugin)."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = re.search(r"[.!?](\s|$)", paragraph)
    return paragraph[: end.start() + 1] if end else paragraph


def describe(group: str, name: str) -> str:
    """A registered plugin's one-line summary, read from its source without importing it (importing a space
    imports Keras and its framework: seconds, for a listing). Falls back to importing it."""
    import ast

    target = available(group).get(name, "")
    module, _, attr = target.partition(":")
    try:
        origin = importlib.util.find_spec(module).origin
        tree = ast.parse(Path(origin).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == attr:
                return first_sentence(ast.get_docstring(node) or "")
    except Exception:  # no source at hand (a compiled module, a namespace package): import it
        pass
    return summary(load(group, name))
