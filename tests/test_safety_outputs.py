"""Outputs of a run (issue 13, class 2): replaced together or not at all, never over an input
or over each other (:class:`cgcnn.outputs.files.OutputSet`, used by cgcnn.train and cgcnn.predict)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest

import cgcnn.model.fit
from cgcnn import InputError, predict, train
from cgcnn.cli import run_main
from cgcnn.outputs import OutputSet, check_outputs


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under ``folders`` (hidden ones included) by path, with its bytes."""
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_error(code: int, err: str, *words) -> str:
    """Exit 2, one line ``error: ...`` holding every word of ``words``, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for word in words:
        assert str(word) in lines[0], err
    return lines[0]


@pytest.fixture
def old(tmp_path) -> dict[str, Path]:
    """Three earlier outputs with known contents."""
    files = {name: tmp_path / name for name in ("a.csv", "b.sav", "c.txt")}
    for name, path in files.items():
        path.write_bytes(f"old {name}\n".encode())
    return files


# --------------------------------------------------------------------------------------------------
# the mechanism


def test_set_replaces_all_at_the_end(old, tmp_path):
    with OutputSet(list(old.values())) as outs:
        outs.write_csv(old["a.csv"], pd.DataFrame({"x": [1.5]}))
        outs.write_bytes(old["b.sav"], b"new b")
        outs.write_bytes(old["b.sav"], b"newer b")  # rewritten (per epoch): the last one counts
        assert old["a.csv"].read_bytes() == b"old a.csv\n"  # nothing replaced before the end
        assert outs.current(old["c.txt"]) == old["c.txt"]
        assert outs.current(old["b.sav"]).read_bytes() == b"newer b"
    assert old["a.csv"].read_text() == "x\n1.5\n"
    assert old["b.sav"].read_bytes() == b"newer b"
    assert old["c.txt"].read_bytes() == b"old c.txt\n"  # not written: left as it was
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("fault", [RuntimeError, KeyboardInterrupt, SystemExit, "SIGTERM", InputError])
def test_fault_mid_set_keeps_every_old_file_and_no_temp_file(old, tmp_path, fault):
    before = snapshot(tmp_path)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit if fault == "SIGTERM" else fault):
        with OutputSet(old) as outs:
            outs.write_bytes(old["a.csv"], b"new a")
            outs.write_bytes(old["b.sav"], b"new b")
            if fault == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise fault("stop")
    assert snapshot(tmp_path) == before
    assert signal.getsignal(signal.SIGTERM) is handler  # the previous handler is back


def test_failed_write_keeps_every_old_file(old, tmp_path):
    before = snapshot(tmp_path)

    def full_disk(obj, f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="b.sav: cannot write .No space left"):
        with OutputSet(old) as outs:
            outs.write_bytes(old["a.csv"], b"new a")
            outs.save(old["b.sav"], None, saver=full_disk)
    assert snapshot(tmp_path) == before


def test_outputs_written_through_symlinks(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    with OutputSet([link]) as outs:
        outs.write_text(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"


@pytest.mark.parametrize("kind", ["same path", "another spelling", "symlink", "hard link"])
def test_output_that_is_an_input_is_refused(tmp_path, kind):
    model = tmp_path / "model.pth.tar"
    model.write_bytes(b"weights")
    out = {"same path": model, "another spelling": tmp_path / "." / "x" / ".." / "model.pth.tar",
           "symlink": tmp_path / "link.pth.tar", "hard link": tmp_path / "hard.pth.tar"}[kind]
    (tmp_path / "x").mkdir()
    if kind == "symlink":
        out.symlink_to(model)
    elif kind == "hard link":
        os.link(model, out)
    with pytest.raises(InputError, match="the same file as the input model"):
        OutputSet({"--results": out}, inputs={"model": model})
    assert model.read_bytes() == b"weights"


def test_two_outputs_on_one_file_are_refused(tmp_path):
    (tmp_path / "a.csv").write_text("a\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "a.csv")
    with pytest.raises(InputError, match="outputs --results .* and --test-results are the same file"):
        check_outputs({"--results": tmp_path / "a.csv", "--test-results": tmp_path / "link.csv"})
    assert (tmp_path / "a.csv").read_text() == "a\n"


def test_writing_outside_the_set_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="not one of"):
        with OutputSet([tmp_path / "a"]) as outs:
            outs.write_bytes(tmp_path / "b", b"")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------
# the tools


@pytest.mark.parametrize("target", ["model", "id_prop.csv", "atom_init.json", "symlink to the model"])
def test_predict_out_naming_an_input(capsys, tmp_path, cif_folder, small_model, target):
    out = {"model": small_model, "id_prop.csv": cif_folder / "id_prop.csv",
           "atom_init.json": cif_folder / "atom_init.json", "symlink to the model": tmp_path / "pred.csv"}[target]
    if target == "symlink to the model":
        out.symlink_to(small_model)
    before = snapshot(tmp_path)
    code = run_main(predict.main, [str(small_model), str(cif_folder), "-q", "--out", str(out)])
    assert_error(code, capsys.readouterr().err, out.name, "same file as the input")
    assert snapshot(tmp_path) == before


TRAIN = ["--epochs", "2", "-b", "2", "--atom-fea-len", "8", "--h-fea-len", "4", "--n-conv", "1"]


def test_train_output_naming_the_pretrained_model(capsys, tmp_path, cif_folder):
    out = tmp_path / "out"
    out.mkdir()
    assert run_main(train.main, [str(cif_folder), *TRAIN, "--out-dir", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = run_main(train.main, [str(cif_folder), *TRAIN, "--out-dir", str(out),
                                 "--pretrained", str(out / "model_best.pth.tar")])
    assert_error(code, capsys.readouterr().err, "model_best.pth.tar", "--pretrained")
    assert snapshot(tmp_path) == before


def test_train_resume_from_its_own_checkpoint_is_allowed(capsys, tmp_path, cif_folder):
    out = tmp_path / "out"
    out.mkdir()
    assert run_main(train.main, [str(cif_folder), *TRAIN, "--out-dir", str(out)]) == 0
    code = run_main(train.main, [str(cif_folder), *TRAIN[2:], "--epochs", "3", "--out-dir", str(out),
                                 "--resume", str(out / "checkpoint.pth.tar")])
    assert code == 0, capsys.readouterr().err
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("fault", [KeyboardInterrupt, "bad CIF"])
def test_train_stopped_mid_run_changes_no_output(capsys, tmp_path, cif_folder, monkeypatch, fault):
    """Interrupted in its second epoch (after the first epoch's checkpoints were staged), or failing
    on a bad CIF, cgcnn.train leaves all three earlier outputs byte for byte and no temporary file."""
    out = tmp_path / "out"
    out.mkdir()
    assert run_main(train.main, [str(cif_folder), *TRAIN, "--out-dir", str(out), "--test-size", "1"]) == 0
    assert {p.name for p in out.iterdir()} == set(train.OUTPUTS)
    before = snapshot(tmp_path)
    if fault == "bad CIF":
        (cif_folder / "zz.cif").write_text("data_x\nnot a crystal\n")
        (cif_folder / "id_prop.csv").write_text((cif_folder / "id_prop.csv").read_text() + "zz,1.0\n")
        before = snapshot(tmp_path)
    calls = []
    real_run_epoch = cgcnn.model.fit.run_epoch

    def run_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3 and fault is KeyboardInterrupt:  # train and validate of epoch 1 done
            raise KeyboardInterrupt
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(cgcnn.model.fit, "run_epoch", run_epoch)
    code = run_main(train.main, [str(cif_folder), *TRAIN, "--out-dir", str(out), "--seed", "1", "--val-size", "0",
                                 "--test-size", "0", "--train-ratio", "1"])
    err = capsys.readouterr().err
    if fault is KeyboardInterrupt:
        assert code == 130 and "Traceback" not in err
    else:
        assert_error(code, err, "zz.cif")
    assert snapshot(tmp_path) == before
