"""python -m cgcnn.atom_init on a machine without mendeleev, or with a bad --compare file (issue 13,
class 4): one line and exit 2, no traceback, the --out file left as it was."""

from __future__ import annotations

import sys

import pytest
from test_safety_outputs import assert_error

from cgcnn import atom_init
from cgcnn.cli import run_main


@pytest.fixture
def no_mendeleev(monkeypatch):
    """Make ``import mendeleev`` fail, as where it is not installed."""
    for name in [m for m in sys.modules if m == "mendeleev" or m.startswith("mendeleev.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mendeleev", None)
    monkeypatch.setitem(sys.modules, "mendeleev.fetch", None)


def test_without_mendeleev(capsys, tmp_path, no_mendeleev):
    out = tmp_path / "atom_init.json"
    out.write_text('{"1": [1]}\n')
    code = run_main(atom_init.main, ["--out", str(out)])
    assert_error(code, capsys.readouterr().err, "pip install mendeleev")
    assert out.read_text() == '{"1": [1]}\n'


@pytest.mark.parametrize("kind", ["missing", "symlink loop", "not JSON"])
def test_bad_compare_file(capsys, tmp_path, no_mendeleev, kind):
    ref = tmp_path / "ref.json"
    words = {"missing": "not found", "symlink loop": "symbolic link loop", "not JSON": "not valid JSON"}[kind]
    if kind == "symlink loop":
        ref.symlink_to(tmp_path / "other.json")
        (tmp_path / "other.json").symlink_to(ref)
    elif kind == "not JSON":
        ref.write_text("{1: ")
    code = run_main(atom_init.main, ["--compare", str(ref)])
    assert_error(code, capsys.readouterr().err, "ref.json", words)


def test_out_naming_the_compare_file(capsys, tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text('{"1": [1]}\n')
    code = run_main(atom_init.main, ["--compare", str(ref), "--out", str(ref)])
    assert_error(code, capsys.readouterr().err, "ref.json", "same file as the input --compare")
    assert ref.read_text() == '{"1": [1]}\n'
