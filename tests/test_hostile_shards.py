"""Issue 24, class 8: a shard (or a final file) that cannot be written keeps the finished work.

The write of the second chunk's shard fails (a full disk, made here by its saver raising ENOSPC),
or the final file exceeds a file-size limit (RLIMIT_FSIZE, a real EFBIG): one line that says
``--resume`` continues, exit 2, the finished shards kept, earlier outputs intact; the resumed run
then gives the very file of an uninterrupted run."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_safety_outputs import assert_error

import cgcnn.screening.workfolder as workfolder
from cgcnn import predict
from cgcnn.cli import run_main
from cgcnn.outputs import save_atomic
from conftest import REPO

MODEL = REPO / "models" / "source.pth.tar"
SAMPLE = REPO / "data" / "sample"
IDS = ["C", "Si", "GaAs", "NaCl", "MgO", "AlN"]
FAST = ["-b", "2", "--chunk-size", "2", "-j", "0", "-q"]

pytestmark = pytest.mark.skipif(not SAMPLE.is_dir() or not MODEL.is_file(), reason="needs data/sample and models")


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in IDS:
        shutil.copy(SAMPLE / f"{i}.cif", folder / f"{i}.cif")
    return folder


def _run(data: Path, out: Path, *extra) -> int:
    return run_main(predict.main, [str(MODEL), str(data), "--out", str(out), *FAST, *extra])


def test_second_shard_unwritable_then_resume(capsys, monkeypatch, tmp_path, data):
    reference = tmp_path / "reference.csv"
    assert _run(data, reference) == 0
    out = tmp_path / "out.csv"
    out.write_text("earlier results\n")
    inputs = {p: p.read_bytes() for p in data.iterdir()}

    real = workfolder.save_text

    def disk_full_at_chunk_1(text, path):
        if Path(path).name.startswith("0000001."):
            def saver(_, f):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return save_atomic(text, path, saver=saver)
        return real(text, path)

    monkeypatch.setattr(workfolder, "save_text", disk_full_at_chunk_1)
    capsys.readouterr()
    code = _run(data, out)
    line = assert_error(code, capsys.readouterr().err, "0000001.results.csv: cannot write (No space left on device)",
                        "--resume to continue")
    parts = tmp_path / "out.csv.parts"
    assert str(parts) in line
    assert sorted(p.name for p in parts.iterdir() if not p.name.startswith(".")) == [
        "0000000.json", "0000000.results.csv", "0000000.skipped.csv", "0000000.test.csv", "manifest.json"]
    assert out.read_text() == "earlier results\n"
    assert {p: p.read_bytes() for p in data.iterdir()} == inputs

    monkeypatch.setattr(workfolder, "save_text", real)
    assert _run(data, out, "--resume") == 0, capsys.readouterr().err
    assert out.read_bytes() == reference.read_bytes()
    assert not parts.exists()
    assert {p: p.read_bytes() for p in data.iterdir()} == inputs


def test_final_file_over_the_file_size_limit_then_resume(tmp_path):
    """RLIMIT_FSIZE in a subprocess: the manifest and the shards fit, the gathered file does not (EFBIG)."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("*.md", "*.json"))
    reference = tmp_path / "reference.csv"
    cmd = [sys.executable, "-m", "cgcnn.predict", str(MODEL), str(data), "-b", "4", "--chunk-size", "8", "-j", "0",
           "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([*cmd, "--out", str(reference)], check=True, env=env, capture_output=True, timeout=600)
    size = reference.stat().st_size
    assert size > 2000  # the manifest is about 700 bytes, a shard about 500
    out = tmp_path / "out.csv"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size - 1, resource.RLIM_INFINITY))

    proc = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit)
    line = assert_error(proc.returncode, proc.stderr, "out.csv: cannot write (File too large)", "--resume")
    assert "out.csv.parts" in line and not out.exists()
    proc = subprocess.run([*cmd, "--out", str(out), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "out.csv.parts").exists()
