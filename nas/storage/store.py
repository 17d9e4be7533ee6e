"""One directory per search (its layout: ``nas.storage.layout``): the storage that holds runs, atomic JSON files, and
``ExperimentStore``, which reads and writes a run's spec, trial records and strategy state."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas.errors import RunError, StorageError
from nas.plugins.objective import Objective
from nas.storage.layout import SPEC, STRATEGY, TRIALS, trial_record
from nas.storage.records import RunSpec, TrialRecord, TrialStatus
from nas.storage.results import format_config, format_value, pareto_front, rank, sort_by_id

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def default_storage() -> Path:
    """``$NAS_STORAGE`` or ``~/nas-runs``."""
    return Path(os.environ.get("NAS_STORAGE") or Path.home() / "nas-runs").expanduser()


def open_storage(storage: Path | str | None, create: bool = True) -> Path:
    """The storage directory (``--storage``, else the default), created if absent, checked to be a directory
    this process can write in, before anything else starts; ``StorageError`` naming it otherwise."""
    path = Path(storage).expanduser() if storage else default_storage()
    what = f"--storage {str(storage)!r}" if storage else f"storage directory {str(path)!r} ($NAS_STORAGE or ~/nas-runs)"
    if path.exists() and not path.is_dir():
        raise StorageError(f"{what} is not a directory; give a writable directory (created if absent)")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        # a real file, not os.access: root passes access() on a read-only file system too
        with tempfile.TemporaryFile(dir=path, prefix=".nas-write-check-"):
            pass
    except OSError as e:
        raise StorageError(f"{what} cannot hold runs ({e.strerror or e}); give a writable directory (created if "
                           f"absent)") from None
    return path


def storage_flag(storage: Path | str) -> str:
    """`` --storage DIR`` when ``storage`` is not the default one, so a printed command works when pasted."""
    try:
        default = Path(storage).expanduser().resolve() == default_storage().resolve()
    except OSError:
        default = False
    return "" if default else f" --storage {shlex.quote(str(storage))}"


def generate_name(space: str, strategy: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    clean = lambda s: re.sub(r"[^A-Za-z0-9]+", "-", s.rsplit(":", 1)[-1]).strip("-").lower() or "x"  # noqa: E731
    return f"{clean(space)}-{clean(strategy)}-{stamp}-{secrets.token_hex(2)}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RunError(
            f"run name {name!r} is not valid; use letters, digits, '.', '_' and '-' (at most 128, not starting with . or -)"
        )
    return name


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a reader never sees half a file, and a crash never leaves one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # full or read-only storage: the previous file stays as it was, no half file beside it
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename in (None, str(tmp)):
            e.filename = str(path)  # a failed write() names no file; the user knows the file by its real name
        raise


def read_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is corrupted ({e}); nothing was changed") from None


class ExperimentStore:
    """Reads and writes one search's directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, name: str, storage: Path | str | None = None) -> "ExperimentStore":
        """An existing run, with a clear error when it is missing."""
        storage = Path(storage) if storage else default_storage()
        check_name(name)
        store = cls(storage / name)
        if store.root.is_dir() and not store.spec_path.is_file():
            raise RunError(f"{store.root} is not a run: it has no spec.json (a search that never started, or a "
                           f"folder that is not nas's); nas runs --storage {storage} lists the runs there")
        if not store.spec_path.is_file():
            runs = sorted(p.name for p in storage.glob("*/spec.json") for p in [p.parent]) if storage.is_dir() else []
            hint = f"; runs there: {', '.join(runs[-10:])}" if runs else f"; {storage} has no runs"
            raise RunError(f"no run named {name!r} in {storage}{hint}")
        return store

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def spec_path(self) -> Path:
        return self.root / SPEC

    @property
    def trials_dir(self) -> Path:
        return self.root / TRIALS

    @property
    def strategy_path(self) -> Path:
        return self.root / STRATEGY

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def command(self, verb: str, *args: str) -> str:
        """A next-step command for this run that works when pasted (``--storage`` when not the default)."""
        return " ".join(["nas", verb, self.name, *args]) + storage_flag(self.root.parent)

    def has_files(self, ignore: tuple[str, ...] = ()) -> bool:
        """Whether the run directory holds anything besides ``ignore`` (the lock files of a starting driver)."""
        return self.root.is_dir() and any(p.name not in ignore for p in self.root.iterdir())

    def write_spec(self, spec: RunSpec) -> None:
        write_json(self.spec_path, spec.to_json())

    def spec(self) -> RunSpec:
        """The run's spec; one that is not a run spec raises ``RunError`` naming the file (left as it is)."""
        return RunSpec.from_json(read_json(self.spec_path), source=self.spec_path)

    def start_session(self, spec: RunSpec) -> None:
        """A driver starts searching: ``spec.sessions`` gains an entry (how long a run searched, idle time
        between sessions left out: ``nas.views.report.searching_s``) and the spec is written."""
        spec.sessions.append({"started": time.time(), "ended": None})
        self.write_spec(spec)

    def end_session(self, spec: RunSpec) -> None:
        """The driver stops searching (a killed one never says so: its last trial write tells instead)."""
        if spec.sessions:
            spec.sessions[-1]["ended"] = time.time()
        try:
            self.write_spec(spec)
        except OSError:  # full or read-only storage: the search stops with that error, not this one
            pass

    def write_trial(self, record: TrialRecord) -> None:
        # ``updated``: when the driver last wrote it (how long a killed session searched: nas.views.report.searching_s)
        record.updated = time.time()
        write_json(trial_record(self.root, record.trial_id), record.to_json())

    def trial(self, trial_id: str) -> TrialRecord:
        path = trial_record(self.root, trial_id)
        if not path.is_file():
            ids = [t.trial_id for t in self.trials()]
            raise RunError(f"run {self.name!r} has no trial {trial_id!r}; trials: {', '.join(ids[:30]) or 'none'}")
        return TrialRecord.from_json(read_json(path), source=path)

    def trials(self) -> list[TrialRecord]:
        """Every trial's record, by id; one that is not a record raises ``RunError`` naming its file."""
        if not self.trials_dir.is_dir():
            return []
        return sort_by_id(TrialRecord.from_json(read_json(p), source=p) for p in self.trials_dir.glob("*.json"))

    def write_strategy_state(self, state: Mapping[str, Any]) -> None:
        write_json(self.strategy_path, dict(state))

    def strategy_state(self) -> dict[str, Any] | None:
        return read_json(self.strategy_path) if self.strategy_path.is_file() else None


def choose_trial(store: ExperimentStore, objectives: Sequence[Objective], trial_id: str | int | None,
                 log: Callable[[str], None] | None = None, choose: str = "--trial ID",
                 completed: bool = True) -> TrialRecord:
    """The trial to export or load (``nas export``, ``Run.best_model``): ``trial_id`` if given (one that
    completed, unless ``completed`` is false), else the best completed trial.

    With several objectives there is no single best: the non-dominated trials are listed (to ``log``) and the
    error asks for a choice, the way ``choose`` says it (``--trial ID`` on the command line).
    """
    if trial_id is not None:
        t = store.trial(str(trial_id))
        if completed and t.status != TrialStatus.COMPLETED:
            raise RunError(f"trial {str(trial_id)!r} of run {store.name!r} is {t.status}, not completed; "
                           f"export a completed trial (see `{store.command('status')}`)")
        return t
    trials = store.trials()
    if len(objectives) > 1:
        front = pareto_front(trials, objectives)
        if not front:
            raise RunError(f"run {store.name!r} has no completed trial to export")
        if log is not None:
            log(f"run {store.name!r} has {len(objectives)} objectives; its non-dominated trials are:")
            for t in front:
                values = " ".join(f"{o.metric}={format_value(o.value(t.metrics))}" for o in objectives)
                log(f"  trial {t.trial_id}: {values}  {format_config(t.config)}")
        example = (f"`{store.command('export', '--trial', front[0].trial_id)}`" if choose == "--trial ID"
                   else f"trial={front[0].trial_id!r}")
        raise RunError(f"run {store.name!r} has several objectives and {len(front)} non-dominated trials "
                       f"({', '.join(t.trial_id for t in front)}); choose one with {choose}, e.g. {example}")
    ranked = rank(trials, objectives[0])
    if not ranked:
        raise RunError(f"run {store.name!r} has no completed trial to export (see `{store.command('status')}`)")
    return ranked[0]
