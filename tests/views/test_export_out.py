"""`nas export --out DIR` never deletes or overwrites a user's files: a directory holding anything but an earlier
export is refused before anything is loaded; an earlier export is replaced. (On the committed af59df6 run.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "runs_af59df6"


@pytest.fixture
def stored(cli):
    shutil.copytree(DATA, cli.storage)
    return cli


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_directory_with_the_users_files_is_refused_and_left_as_it_is(stored, tmp_path: Path, capsys,
                                                                        monkeypatch) -> None:
    proj = tmp_path / "proj"
    (proj / "saved_model").mkdir(parents=True)
    (proj / "README.md").write_text("notes")
    (proj / "saved_model" / "keep.txt").write_text("x")
    before = _files(proj)
    code, out, err = stored.inprocess("export", "finished", "--out", str(proj), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.count("\n") == 1, err
    assert f"--out {str(proj)!r} already holds files that are not a nas export (README.md, saved_model/)" in err
    assert _files(proj) == before
    a_file = tmp_path / "model.out"
    a_file.write_text("mine")
    code, out, err = stored.inprocess("export", "finished", "--out", str(a_file), capsys=capsys,
                                      monkeypatch=monkeypatch)
    assert code == 2 and f"--out {str(a_file)!r} is a file; give a directory" in err and a_file.read_text() == "mine"


def test_an_earlier_export_is_replaced(stored, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "exported"  # in this process: Keras is imported once for both exports
    code, _, err = stored.inprocess("export", "finished", "--out", str(out), "--format", "keras", capsys=capsys,
                                    monkeypatch=monkeypatch)
    assert code == 0, err
    first = json.loads((out / "architecture.json").read_text())
    code, stdout, err = stored.inprocess("export", "finished", "--trial", "1", "--out", str(out), "--format", "keras",
                                         capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "exported trial 1" in stdout, stdout + err
    assert (first["trial_id"], json.loads((out / "architecture.json").read_text())["trial_id"]) == ("0", "1")
