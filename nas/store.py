"""One directory per search: its spec, its trials, the strategy's state, and what Ray needs.

    <storage>/<name>/spec.json          what was searched, how (space, strategy, data, objective, budgets, seed,
                                        package versions)
    <storage>/<name>/trials/<id>.json   one record per trial, rewritten atomically as it progresses
    <storage>/<name>/strategy.json      the strategy's get_state() after every tell
    <storage>/<name>/...                Ray Tune's experiment state and trial directories
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Mapping

from nas.errors import RunError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STATUSES = ("completed", "failed", "running", "pending")


def default_storage() -> Path:
    """``$NAS_STORAGE`` or ``~/nas-runs``."""
    return Path(os.environ.get("NAS_STORAGE") or Path.home() / "nas-runs").expanduser()


def generate_name(space: str, strategy: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    clean = lambda s: re.sub(r"[^A-Za-z0-9]+", "-", s.rsplit(":", 1)[-1]).strip("-").lower() or "x"  # noqa: E731
    return f"{clean(space)}-{clean(strategy)}-{stamp}-{secrets.token_hex(2)}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RunError(
            f"run name {name!r} is not valid; use letters, digits, '.', '_' and '-' (at most 128, not starting with . or -)"
        )
    return name


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a reader never sees half a file, and a crash never leaves one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        return self.root / "spec.json"

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def strategy_path(self) -> Path:
        return self.root / "strategy.json"

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def write_spec(self, spec: Mapping[str, Any]) -> None:
        write_json(self.spec_path, dict(spec))

    def spec(self) -> dict[str, Any]:
        return read_json(self.spec_path)

    def write_trial(self, record: Mapping[str, Any]) -> None:
        write_json(self.trials_dir / f"{record['trial_id']}.json", dict(record))

    def trial(self, trial_id: str) -> dict[str, Any]:
        path = self.trials_dir / f"{trial_id}.json"
        if not path.is_file():
            ids = [t["trial_id"] for t in self.trials()]
            raise RunError(f"run {self.name!r} has no trial {trial_id!r}; trials: {', '.join(ids[:30]) or 'none'}")
        return read_json(path)

    def trials(self) -> list[dict[str, Any]]:
        from nas.results import sort_by_id

        if not self.trials_dir.is_dir():
            return []
        return list(sort_by_id(read_json(p) for p in self.trials_dir.glob("*.json")))

    def write_strategy_state(self, state: Mapping[str, Any]) -> None:
        write_json(self.strategy_path, dict(state))

    def strategy_state(self) -> dict[str, Any] | None:
        return read_json(self.strategy_path) if self.strategy_path.is_file() else None
