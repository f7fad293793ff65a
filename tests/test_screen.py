"""Screening with ``--train 0`` (cgcnn.screening.run): streaming, skipped crystals, resumption, archives, Dask.

Twelve crystals of data/sample, batches of 2 and chunks of 4 (three shards); the last layer is a
ridge fit on them with the bundled source and property models (``--descriptors slack``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

TOOL = REPO / "transfer_learning_kappa.py"
MODEL = REPO / "models" / "source.pth.tar"
SAMPLE = REPO / "data" / "sample"
IDS = ["C", "Si", "GaAs", "NaCl", "MgO", "AlN", "KCl", "LiF", "GaN", "InP", "CdTe", "PbTe"]
FAST = ("-b", "2", "--chunk-size", "4", "-j", "1")

pytestmark = pytest.mark.skipif(not (SAMPLE.is_dir() and (REPO / "models" / "bulk_modulus.pth.tar").is_file()),
                                reason="needs data/sample and the bundled models")


# Dask made to talk as on a busy machine, whatever the load of this one: every event loop reports
# itself unresponsive (tick limit 1 ms; under load Dask logs this), and preloads of the user's Dask
# configuration make each worker process warn, print and write to stderr, and the scheduler (in the
# tool's process, on Dask's thread) warn and log a warning, as Dask does when its cores are busy
# ("Creating scratch directories is taking a surprisingly long time", restarts, heartbeats).
WORKER_NOISE = ("import sys, warnings\nwarnings.warn('noise: a worker warns')\nprint('noise: a worker prints')\n"
                "print('noise: a worker writes to stderr', file=sys.stderr)\n")
SCHEDULER_NOISE = ("import logging, warnings\nwarnings.warn('noise: the scheduler warns')\n"
                   "logging.getLogger('distributed.scheduler').warning('noise: the scheduler logs')\n")
NOISY_DASK = {"DASK_DISTRIBUTED__ADMIN__TICK__LIMIT": "1ms",
              "DASK_DISTRIBUTED__WORKER__PRELOAD": repr([WORKER_NOISE]),
              "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": repr([SCHEDULER_NOISE])}


def run(*args, cwd: Path, check: bool = True, quiet: bool = True, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TOOL), *map(str, args)] + (["-q"] if quiet else [])
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def targets() -> dict[str, str]:
    rows = dict(line.split(",", 1) for line in (SAMPLE / "id_prop.csv").read_text().split())
    return {i: rows[i] for i in IDS}


def folder_of(path: Path, ids=IDS, with_targets: bool = True) -> Path:
    path.mkdir(parents=True)
    for i in ids:
        shutil.copy(SAMPLE / f"{i}.cif", path / f"{i}.cif")
    if with_targets:
        t = targets()
        (path / "id_prop.csv").write_text("".join(f"{i},{t[i]}\n" for i in ids))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A folder with last_layer.sav (ridge on the twelve crystals, slack descriptors)."""
    work = tmp_path_factory.mktemp("fit")
    data = folder_of(work / "data")
    run("--train", 1, MODEL, data, "--last-layer-type", "ridge", "--cv-folds", 3, cwd=work)
    return work


def member_models() -> tuple[list[Path], list[Path]]:
    """The source and property models --train 1 fits the bundled route on (its ensemble members)."""
    from cgcnn.transfer import PROPERTY_MODEL_FILES, default_property_models, member_folders

    folders = member_folders(MODEL)
    return ([MODEL] + [f / MODEL.name for f in folders],
            default_property_models(MODEL) + [f / name for f in folders for name in PROPERTY_MODEL_FILES])


def screen_run(fitted: Path, cwd: Path, data, *extra, check=True, quiet=True, env=None):
    return run("--train", 0, MODEL, data, "--last-layer", fitted / "last_layer.sav", *FAST, *extra, cwd=cwd,
               check=check, quiet=quiet, env=env)


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def test_streaming_equals_one_pass(fitted, tmp_path):
    """Chunked results, byte for byte, are those of compute_features + predict on the whole folder."""
    from cgcnn.model import SourceModel
    from cgcnn.outputs import save_csv
    from cgcnn.transfer import LastLayer, compute_features, load_property_models

    out = workdir(tmp_path, "stream")
    proc = screen_run(fitted, out, fitted / "data", quiet=False)
    assert "crystals/s" in proc.stderr and "left" in proc.stderr
    assert not (out / "results.csv.parts").exists()

    layer = LastLayer.load(fitted / "last_layer.sav")
    sources, prop_paths = member_models()
    sources = [SourceModel.load(p, device="cpu") for p in sources]
    props = load_property_models(prop_paths, device="cpu")
    feats = compute_features(sources, fitted / "data", batch_size=2, workers=0, progress=False,
                             descriptors="slack", property_models=props)
    pred = layer.predict(feats.X)
    frame = pd.DataFrame({
        "cif_id": feats.ids, "target": feats.targets, "prediction": pred.prediction, "kappa": 10.0 ** pred.prediction,
        "prediction_low": pred.low, "prediction_high": pred.high, "kappa_low": 10.0 ** pred.low,
        "kappa_high": 10.0 ** pred.high, "in_domain": pred.in_domain, "domain_distance": pred.distance})
    save_csv(frame, tmp_path / "reference.csv")
    assert (out / "results.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()
    assert np.isfinite(pred.low).all()
    test = pd.read_csv(out / "test_results.csv")
    assert list(test.cif_id) == IDS


def test_broken_cifs_skipped(fitted, tmp_path):
    data = folder_of(tmp_path / "data")
    (data / "GaAs.cif").write_text("")  # empty
    (data / "KCl.cif").write_text("data_x\n_cell_length_a 4\nnonsense\n")  # no structure
    text = (data / "CdTe.cif").read_text()
    (data / "CdTe.cif").write_text(text.replace("Cd", "Xx"))  # no such element
    out = workdir(tmp_path, "skip")
    proc = screen_run(fitted, out, data, "--on-error", "skip")
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped.columns) == ["cif_id", "reason"]
    assert list(skipped.cif_id) == ["GaAs", "KCl", "CdTe"]
    assert all("\n" not in r and r for r in skipped.reason)
    results = pd.read_csv(out / "results.csv")
    assert list(results.cif_id) == [i for i in IDS if i not in ("GaAs", "KCl", "CdTe")]
    assert list(pd.read_csv(out / "test_results.csv").cif_id) == list(results.cif_id)
    assert "skipped 3 of 12" in proc.stdout

    # without --on-error skip: one line, exit 2, nothing written
    out = workdir(tmp_path, "stop")
    proc = screen_run(fitted, out, data, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "GaAs.cif" in proc.stderr
    assert sorted(os.listdir(out)) == []


def test_resume_after_crash_and_sigkill(fitted, tmp_path):
    full = workdir(tmp_path, "full")
    screen_run(fitted, full, fitted / "data")
    data = fitted / "data"

    # a crash after two shards (the third chunk raises): shards kept, resume finishes
    crash = workdir(tmp_path, "crash")
    argv = [str(TOOL), "--train", "0", str(MODEL), str(data), "--last-layer", str(fitted / "last_layer.sav"),
            *FAST, "-q"]
    code = ("import sys, runpy, cgcnn.screening.run as s\n"
            "orig = s.Screener.finish\n"
            "def finish(self, index, crystals, prepared):\n"
            "    if index == 2: raise RuntimeError('simulated crash')\n"
            "    return orig(self, index, crystals, prepared)\n"
            "s.Screener.finish = finish\n"
            f"sys.argv = {argv!r}\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=crash, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and "simulated crash" in proc.stderr
    parts = crash / "results.csv.parts"
    assert sorted(p.name for p in parts.glob("*.json")) == ["0000000.json", "0000001.json", "manifest.json"]
    assert not (crash / "results.csv").exists()
    refused = screen_run(fitted, crash, data, check=False)  # without --resume: refused, shards kept
    assert refused.returncode == 2 and "--resume" in refused.stderr and parts.exists()
    proc = screen_run(fitted, crash, data, "--resume", quiet=False)
    assert "resuming: 2 of 3 chunks" in proc.stderr
    assert (crash / "results.csv").read_bytes() == (full / "results.csv").read_bytes()
    assert (crash / "test_results.csv").read_bytes() == (full / "test_results.csv").read_bytes()
    assert not parts.exists()

    # SIGKILL after the first shard; its graph-building process goes too.  The run waits after its
    # first shard until it is killed: killed when this test sees the shard, it could have finished
    # (pool gone) on a busy machine where the test's polling runs late
    psutil = pytest.importorskip("psutil")
    killed = workdir(tmp_path, "killed")
    parts = killed / "results.csv.parts"
    argv = [str(TOOL), "--train", "0", str(MODEL), str(data), "--last-layer", str(fitted / "last_layer.sav"),
            "-b", "2", "--chunk-size", "2", "-j", "1", "-q"]
    code = ("import sys, runpy, threading, cgcnn.screening.run as s\n"
            "write = s._Work.write\n"
            "def write_and_wait(self, shard, *args):\n"
            "    write(self, shard, *args)\n"
            "    threading.Event().wait()\n"
            "s._Work.write = write_and_wait\n"
            f"sys.argv = {argv!r}\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=killed, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not (parts / "0000000.json").exists() and child.poll() is None:
            time.sleep(0.05)
        pool = psutil.Process(child.pid).children()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert pool
    _, alive = psutil.wait_procs(pool, timeout=10)
    assert not alive
    assert not (killed / "results.csv").exists()
    assert sorted(p.name for p in parts.glob("0*.json")) == ["0000000.json"]
    run("--train", 0, MODEL, data, "--last-layer", fitted / "last_layer.sav", "-b", "2", "--chunk-size", "2",
        "-j", "1", "--resume", cwd=killed)
    assert (killed / "results.csv").read_bytes() == (full / "results.csv").read_bytes()


def test_resume_refuses_another_run(fitted, tmp_path):
    out = workdir(tmp_path, "other")
    parts = out / "results.csv.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"format": "cgcnn-kappa screen 1", "source model": ["0"]}')
    proc = screen_run(fitted, out, fitted / "data", "--resume", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "another source model" in proc.stderr
    assert parts.exists()  # another run's shards are left alone


def test_archives_equal_folder(fitted, tmp_path):
    data = folder_of(tmp_path / "plain", sorted(IDS), with_targets=False)  # no id_prop.csv: sorted names
    ref = workdir(tmp_path, "ref")
    screen_run(fitted, ref, data)
    with tarfile.open(tmp_path / "db.tar.gz", "w:gz") as tf:
        for i in sorted(IDS):
            tf.add(data / f"{i}.cif", arcname=f"db/{i}.cif")
    with zipfile.ZipFile(tmp_path / "db.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("db/", "")
        for i in sorted(IDS):
            zf.write(data / f"{i}.cif", f"db/{i}.cif")
    for archive in ("db.tar.gz", "db.zip"):
        out = workdir(tmp_path, archive.replace(".", "_"))
        screen_run(fitted, out, tmp_path / archive)
        assert (out / "results.csv").read_bytes() == (ref / "results.csv").read_bytes(), archive


def test_dask_local_same_results(fitted, tmp_path):
    """--dask local: the results, stdout and the tool's own warnings of a run without it; everything Dask
    says (made to talk here, NOISY_DASK) in results.csv.dask.log, none of it on the terminal; a bad CIF
    read by a worker is the same one line on stderr, exit 2, nothing written."""
    pytest.importorskip("dask.distributed")
    from pymatgen.core import Lattice, Structure

    data = folder_of(tmp_path / "data")
    Structure(Lattice.cubic(20.0), ["Na"], [[0, 0, 0]]).to(filename=str(data / "lonely.cif"))  # no neighbour
    with open(data / "id_prop.csv", "a") as f:
        f.write("lonely,0.5\n")
    ref = workdir(tmp_path, "ref")
    expected = screen_run(fitted, ref, data)
    warned = [line for line in expected.stderr.splitlines() if line.startswith("warning: ")]
    assert warned and all("lonely" in line for line in warned), expected.stderr

    out = workdir(tmp_path, "dask")
    proc = screen_run(fitted, out, data, "--dask", "local", quiet=False, env=NOISY_DASK)
    assert (out / "results.csv").read_bytes() == (ref / "results.csv").read_bytes()
    assert (out / "test_results.csv").read_bytes() == (ref / "test_results.csv").read_bytes()
    assert proc.stdout == expected.stdout
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("warning: ")] == warned
    ours = ("warning: ", "starting a Dask LocalCluster of ", "screened ", "source model predictions -> ")
    assert all(line.startswith(ours) for line in lines), proc.stderr
    assert sorted(os.listdir(out)) == ["results.csv", "results.csv.dask.log", "test_results.csv"]
    log = (out / "results.csv.dask.log").read_text()
    assert " - cgcnn - INFO - --dask local: " in log.splitlines()[0]  # which run, when
    for said in ("noise: a worker warns", "noise: a worker prints", "noise: a worker writes to stderr",
                 "noise: the scheduler warns", "noise: the scheduler logs", "Event loop was unresponsive"):
        assert said in log, said
    assert "lonely" not in log  # the tool's own warning went to the terminal only

    broken = folder_of(tmp_path / "broken")
    (broken / "LiF.cif").write_text("not a CIF\n")
    out = workdir(tmp_path, "dask_broken")
    proc = screen_run(fitted, out, broken, "--dask", "local", check=False, env=NOISY_DASK)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "LiF.cif" in proc.stderr
    assert proc.stdout == ""
    assert os.listdir(out) == []


def test_same_bytes_with_any_workers_or_dask(fitted, tmp_path):
    """-j 0, -j 2 and --dask local give the same results.csv bytes on data/sample (62 crystals, batches of 8,
    chunks of 16): every batch's networks run with the same torch threads wherever it is made."""
    pytest.importorskip("dask.distributed")
    got = {}
    for name, extra in {"j0": ("-j", "0"), "j2": ("-j", "2"), "dask": ("--dask", "local")}.items():
        out = workdir(tmp_path, name)
        run("--train", 0, MODEL, SAMPLE, "--last-layer", fitted / "last_layer.sav", "-b", 8, "--chunk-size", 16,
            *extra, cwd=out)
        got[name] = (out / "results.csv").read_bytes(), (out / "test_results.csv").read_bytes()
    assert got["j0"][0].count(b"\n") == 63
    assert got["j0"] == got["j2"] == got["dask"]


def test_dask_worker_removes_its_model_copies(fitted, tmp_path, monkeypatch):
    """A Dask worker writes the models it is sent to a temporary folder, loads them and removes the
    folder (also when a model fails to load); the models it loaded screen as the client's do."""
    import tempfile

    from cgcnn import InputError
    from cgcnn.crystals import open_input
    from cgcnn.model import SourceModel
    from cgcnn.screening import Screener, ScreenSettings, atom_tables
    from cgcnn.screening.cluster import _dask_spec, _screener_from_spec
    from cgcnn.transfer import LastLayer, load_property_models

    layer_path = fitted / "last_layer.sav"
    paths, prop_paths = member_models()
    sources = [SourceModel.load(p, require_regression=True, device="cpu") for p in paths]
    props = load_property_models(prop_paths, device="cpu")
    data = open_input(fitted / "data")
    tables, table_sources = atom_tables(sources + list(props.values()), data)
    settings = ScreenSettings(batch_size=2, chunk_size=4, workers=0, progress=False)
    screener = Screener(sources, props, "slack", LastLayer.load(layer_path), tables, table_sources, settings)
    spec = _dask_spec(screener, layer_path, False, "cpu")

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    worker = _screener_from_spec(spec)
    assert os.listdir(temp) == []
    index, crystals = next(data.chunks(4))
    want, got = (s.finish(index, crystals, s.batches(crystals)) for s in (screener, worker))
    assert (got.results, got.test, got.stats) == (want.results, want.test, want.stats)

    broken = {**spec, "files": {**spec["files"], spec["layer"]: b"not a last layer"}}
    with pytest.raises(InputError):
        _screener_from_spec(broken)
    assert os.listdir(temp) == []


def test_chunk_size_must_be_a_multiple(fitted, tmp_path):
    proc = run("--train", 0, MODEL, fitted / "data", "--last-layer", fitted / "last_layer.sav", "-b", "3",
               "--chunk-size", "4", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "multiple of --batch-size" in proc.stderr


def test_predict_command_streams(tmp_path):
    """python -m cgcnn.predict: the same file as cgcnn.predict.predict() on the folder; a zip; skip."""
    from cgcnn.outputs import save_csv
    from cgcnn.predict import predict

    data = folder_of(tmp_path / "data")
    save_csv(predict(MODEL, data, batch_size=2, workers=0, progress=False, device="cpu"), tmp_path / "reference.csv",
             float_format=None)

    def run_predict(cifpath, *extra, check=True):
        cmd = [sys.executable, "-m", "cgcnn.predict", MODEL, cifpath, "-b", "2", "--chunk-size", "4", "-j", "1",
               "-q", *extra]
        proc = subprocess.run(list(map(str, cmd)), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert not check or proc.returncode == 0, proc.stderr
        return proc

    run_predict(data, "--out", "streamed.csv")
    assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()

    with zipfile.ZipFile(tmp_path / "db.zip", "w") as zf:
        for i in IDS:
            zf.write(data / f"{i}.cif", f"{i}.cif")
    run_predict(tmp_path / "db.zip", "--out", "zipped.csv")
    zipped = pd.read_csv(tmp_path / "zipped.csv")
    reference = pd.read_csv(tmp_path / "reference.csv")
    assert list(zipped.cif_id) == IDS and zipped.target.isna().all()
    assert list(zipped.prediction) == list(reference.prediction)

    (data / "MgO.cif").write_text("not a CIF\n")
    proc = run_predict(data, "--out", "skipping.csv", "--on-error", "skip")
    assert list(pd.read_csv(tmp_path / "skipped.csv").cif_id) == ["MgO"]
    assert "MgO" not in set(pd.read_csv(tmp_path / "skipping.csv").cif_id)
    assert "skipped 1 of 12" in proc.stdout
