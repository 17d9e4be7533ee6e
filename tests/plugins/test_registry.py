"""nas.plugins.registry: plugins by registered name, ``module:Class`` or ``file.py:Class``; every bad reference
is one line naming it and what is accepted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import keras_tuner as kt
import pytest

from nas.errors import PluginError
from nas.plugins.registry import SPACES, STRATEGIES, available, check_ref, create_strategy, load

USER_PLUGIN = textwrap.dedent('''
    import nas

    class FirstChoice(nas.Strategy):
        """Always the first value of everything."""

        def __init__(self, space, objective="val_accuracy:max", seed=None, bonus=0):
            super().__init__(space, objective, seed)
            self.bonus = bonus

        def _ask(self):
            return {p.name: p.default if hasattr(p, "default") else p.value for p in self.space.space}

    class Half(nas.Strategy):
        pass

    NOT_A_CLASS = 3
''')


def _hp() -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.Int("units", 8, 64, step=8)
    return hp


def test_the_built_in_plugins_are_registered_by_entry_point() -> None:
    assert set(available(SPACES)) >= {"mlp", "cnn", "ae", "lstm", "enas_cnn"}
    assert set(available(STRATEGIES)) >= {"grid", "random", "bayes", "gp", "rl", "evolution", "given"}
    assert load(STRATEGIES, "rl").__name__ == "ReinforceSearch"
    assert load(STRATEGIES, "strategies.rl:ReinforceSearch") is load(STRATEGIES, "rl")  # as stored in runs


def test_a_users_file_plugin_loads_with_its_options(tmp_path: Path) -> None:
    path = tmp_path / "my_strategy.py"
    path.write_text(USER_PLUGIN)
    s = create_strategy(f"{path}:FirstChoice", space=_hp(), seed=0, bonus=2)
    assert type(s).__name__ == "FirstChoice" and s.bonus == 2 and s.ask().values == {"units": 8}


@pytest.mark.parametrize("ref, says", [
    ("nope", "unknown strategy 'nope'; registered: bayes, evolution, given, gp, grid, random, rl (or give "),
    ("{dir}/missing.py:X", "plugin file '{dir}/missing.py' does not exist"),
    ("{file}:Nothing", "has no 'Nothing'; classes there: FirstChoice, Half"),
    ("{file}:NOT_A_CLASS", "is 3, not a subclass of nas.Strategy"),
    ("{file}:Half", "does not implement _ask; a strategy plugin must define _ask(self) -> dict of values or None"),
    ("no_such_module:X", "module 'no_such_module' cannot be imported"),
    ("", "strategy name '' is not valid"),
])
def test_a_bad_reference_is_one_line_naming_it(tmp_path: Path, ref: str, says: str) -> None:
    (tmp_path / "plugin.py").write_text(USER_PLUGIN)
    ref, says = (x.format(dir=tmp_path, file=tmp_path / "plugin.py") for x in (ref, says))
    with pytest.raises(PluginError) as e:
        load(STRATEGIES, ref)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_option_lists_the_accepted_ones(tmp_path: Path) -> None:
    (tmp_path / "plugin.py").write_text(USER_PLUGIN)
    with pytest.raises(PluginError, match="has no option speed; accepted: bonus$"):
        create_strategy(f"{tmp_path / 'plugin.py'}:FirstChoice", space=_hp(), speed=3)
    with pytest.raises(PluginError, match="strategy 'random' has no option points; accepted: "):
        create_strategy("random", space=_hp(), points=3)


def test_check_ref_refuses_without_importing_a_space() -> None:
    """Names are checked in milliseconds, before Ray or Keras: a space's import would load its framework."""
    code = ("import sys\nfrom nas.plugins.registry import SPACES, check_ref\ncheck_ref(SPACES, 'cnn')\n"
            "try:\n    check_ref(SPACES, 'cnnn')\nexcept Exception as e:\n    print(e)\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'search_spaces.cnn') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines() == ["unknown space 'cnnn'; registered: ae, cnn, enas_cnn, lstm, mlp (or give "
                                "module:Class or path/to/file.py:Class)", "[]"]
    with pytest.raises(PluginError, match="plugin file 'x/y.py' does not exist"):
        check_ref(STRATEGIES, "x/y.py:Thing")


CHAINED = textwrap.dedent('''
    from nas.plugins.strategy import Strategy
    from somewhere_else import Mixin

    class Base(Strategy):
        def __init__(self, space, objective="val_accuracy:max", seed=None, *, width=3, **options):
            super().__init__(space, objective, seed, **options)

    class Tuned(Base):
        def __init__(self, depth=2, **options):
            super().__init__(**options)

    class Mixed(Mixin, Base):
        pass
''')


def test_options_are_refused_from_the_plugins_source_without_importing_them(tmp_path: Path) -> None:
    """A bad space or strategy option is one line in milliseconds, before Ray or Keras start: the keywords are
    read from the class's source along its __init__ chain (a **kwargs passed on to a base in the same file)."""
    (tmp_path / "chained.py").write_text(CHAINED)
    code = ("import sys\nfrom nas.plugins.registry import SPACES, STRATEGIES, check_options\n"
            "for group, ref, options in [(SPACES, 'cnn', {'bogus': 1}), (STRATEGIES, 'evolution', {'popsize': 3}),\n"
            f"        (STRATEGIES, {str(tmp_path / 'chained.py')!r} + ':Tuned', {{'size': 1}})]:\n"
            "    try:\n        check_options(group, ref, options)\n    except Exception as e:\n        print(e)\n"
            f"check_options(STRATEGIES, {str(tmp_path / 'chained.py')!r} + ':Tuned', {{'depth': 1, 'width': 2}})\n"
            f"check_options(STRATEGIES, {str(tmp_path / 'chained.py')!r} + ':Mixed', {{'anything': 1}})\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'keras_tuner', 'search_spaces.cnn', 'strategies.evolution')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines() == [
        "space 'cnn' has no option bogus; accepted: version",
        "strategy 'evolution' has no option popsize; accepted: population, sample",
        f"strategy '{tmp_path / 'chained.py'}:Tuned' has no option size; accepted: depth, width",
        "[]"], out  # Mixed: a base from another module, left to the check once it is imported


@pytest.mark.parametrize("group", [SPACES, STRATEGIES])
def test_the_source_reading_agrees_with_the_imported_class_for_every_plugin(group: str, tmp_path: Path) -> None:
    """The early check and the one made on the imported class accept exactly the same keywords."""
    from nas.plugins.registry import _accepted, _source_accepted

    (tmp_path / "plugin.py").write_text(USER_PLUGIN)
    refs = list(available(group)) + ([f"{tmp_path / 'plugin.py'}:FirstChoice"] if group == STRATEGIES else [])
    for ref in refs:
        assert _source_accepted(group, ref) == _accepted(load(group, ref)), ref


NOT_PLUGINS = textwrap.dedent('''
    import keras_tuner

    class Plain:
        pass

    class Broken(ValueError):
        pass

    class Deeper(Broken):
        tasks = ("regression",)

    class Hyper(keras_tuner.HyperModel):
        pass
''')


def test_a_class_that_is_no_plugin_and_a_spaces_tasks_are_read_from_source(tmp_path: Path) -> None:
    """Before Keras is imported: a ``module:Class`` whose bases end in a built-in class is refused with the line
    the imported check gives, and a space's ``tasks`` (which decide the task the labels are checked for) are
    read from its source, agreeing with the imported classes; what the source does not settle is left alone."""
    from nas.plugins.registry import check_class_source, source_tasks

    (tmp_path / "np.py").write_text(NOT_PLUGINS)
    code = ("import sys\nfrom nas.plugins.registry import SPACES, STRATEGIES, check_class_source, source_tasks\n"
            f"f = {str(tmp_path / 'np.py')!r}\n"
            "for group, ref in [(SPACES, 'nas.errors:NasError'), (SPACES, f + ':Plain'), (STRATEGIES, f + ':Deeper'),\n"
            "                   (SPACES, f + ':Hyper'), (SPACES, 'cnn'), (STRATEGIES, 'rl')]:\n"
            "    try:\n        check_class_source(group, ref)\n        print('left', ref.rpartition(':')[2])\n"
            "    except Exception as e:\n        print(e)\n"
            "print(source_tasks('mlp'), source_tasks('cnn'), source_tasks(f + ':Hyper'))\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'keras_tuner', 'search_spaces.cnn') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    f = str(tmp_path / "np.py")
    assert out.splitlines() == [
        "space 'nas.errors:NasError' is <class 'nas.errors.NasError'>, not a subclass of nas.SearchSpace",
        f"space '{f}:Plain' is <class 'Plain'>, not a subclass of nas.SearchSpace",
        f"strategy '{f}:Deeper' is <class 'Deeper'>, not a subclass of nas.Strategy",
        "left Hyper", "left cnn", "left rl",
        "('classification', 'regression') ('classification', 'regression') None", "[]"], out
    for ref in available(SPACES):
        assert source_tasks(ref) == load(SPACES, ref).tasks, ref
    with pytest.raises(PluginError, match="not a subclass of nas.SearchSpace"):
        load(SPACES, "nas.errors:NasError")  # the imported check says the same
    check_class_source(SPACES, f"{f}:Hyper")
