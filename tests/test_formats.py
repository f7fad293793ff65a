"""Structure files besides CIF in data folders and archives (cgcnn.crystals.names, .frames, .archive, .folder):
POSCAR/CONTCAR/*.vasp, pymatgen JSON and multi-frame extxyz give the crystals, graphs and predictions of their
CIFs; a bad one is one line naming it, as a bad CIF is."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgcnn import InputError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SAMPLE = REPO / "data" / "sample"
SOURCE = REPO / "models" / "source.pth.tar"
LAYER_V2 = DATA / "last_layer_v2.sav"  # 12 crystals of data/sample, three members, gp (see test_layout.py)
IDS = ["C", "Si", "SiC", "BAs", "GaP", "GaAs"]  # crystals the last layer was fit on


def _structure(cif_id: str):
    from pymatgen.core import Structure

    return Structure.from_file(SAMPLE / f"{cif_id}.cif")


def _mixed(folder: Path) -> list[str]:
    """C as a CIF, Si as Si.vasp, SiC as POSCAR_SiC, BAs as BAs.json, GaP and GaAs as frames of one extxyz
    file (their ids in the frames' info); returns the cif_id of each crystal, in IDS's order."""
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Poscar

    folder.mkdir()
    shutil.copy(SAMPLE / "C.cif", folder)
    Poscar(_structure("Si")).write_file(folder / "Si.vasp")
    Poscar(_structure("SiC")).write_file(folder / "POSCAR_SiC")
    (folder / "BAs.json").write_text(_structure("BAs").to_json())
    frames = []
    for cif_id in ("GaP", "GaAs"):
        atoms = AseAtomsAdaptor.get_atoms(_structure(cif_id))
        atoms.info["cif_id"] = cif_id
        frames.append(atoms)
    write(folder / "more.extxyz", frames, format="extxyz")
    return ["C", "Si", "POSCAR_SiC", "BAs", "GaP", "GaAs"]


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "transfer_learning_kappa.py"), *map(str, args), "-q", "-j", "0"],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


def test_names_give_formats_and_ids():
    from cgcnn.crystals import structure_format, structure_id

    assert [structure_format(n) for n in ("a.cif", "a.CIF", "POSCAR", "CONTCAR_1", "a.vasp", "mp-1.json",
                                          "atom_init.json", "id_prop.json", "all.extxyz", "t.xyz", "id_prop.csv",
                                          "._a.cif")] == \
        ["cif", "cif", "poscar", "poscar", "poscar", "json", None, None, "extxyz", "extxyz", None, None]
    assert [structure_id(n) for n in ("NaCl.cif", "NaCl.vasp", "POSCAR_NaCl", "mp-1.json", "all.extxyz")] == \
        ["NaCl", "NaCl", "POSCAR_NaCl", "mp-1", None]


def test_a_folder_of_other_formats_lists_and_reads_as_its_cifs(tmp_path):
    """open_input and read_id_prop list every format; the training dataset (--train 1, evaluate) builds the
    graphs of the CIFs from them."""
    from cgcnn.crystals import data_folder_inputs, open_input, read_id_prop
    from cgcnn.data import CIFData

    ids = _mixed(tmp_path / "mix")
    assert read_id_prop(tmp_path / "mix") == (["BAs", "C", "POSCAR_SiC", "Si", "GaP", "GaAs"], None)
    inputs = {p.name for p in data_folder_inputs(tmp_path / "mix")["CIF"]}
    assert inputs == {"C.cif", "Si.vasp", "POSCAR_SiC", "BAs.json", "more.extxyz"}  # never an output
    chunk = next(open_input(tmp_path / "mix").chunks(10))[1]
    assert [(c.cif_id, c.fmt) for c in chunk] == [("BAs", "json"), ("C", "cif"), ("POSCAR_SiC", "poscar"),
                                                  ("Si", "poscar"), ("GaP", "extxyz"), ("GaAs", "extxyz")]
    assert chunk[4].source.endswith("more.extxyz:GaP") and chunk[4].structure is not None

    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for cif_id in IDS:
        shutil.copy(SAMPLE / f"{cif_id}.cif", cifs)
    for folder, names in ((cifs, IDS), (tmp_path / "mix", ids)):
        (folder / "id_prop.csv").write_text("".join(f"{n},1.0\n" for n in names))
    want, got = CIFData(cifs, atom_init=SAMPLE / "atom_init.json"), CIFData(tmp_path / "mix",
                                                                             atom_init=SAMPLE / "atom_init.json")
    for k in range(len(IDS)):
        a, b = want.graph(k), got.graph(k)
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(np.sort(a.nbr_dist, axis=None), np.sort(b.nbr_dist, axis=None), atol=1e-5)


def test_other_formats_predict_as_their_cifs_in_a_folder_and_archives(tmp_path):
    """--train 0 on a folder and on .tar.gz and .zip archives of POSCAR, JSON and extxyz files gives the
    predictions, bounds and domain flags of the same crystals' CIFs (to 1e-6: a POSCAR keeps 16 digits)."""
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for cif_id in IDS:
        shutil.copy(SAMPLE / f"{cif_id}.cif", cifs)
    (cifs / "id_prop.csv").write_text("".join(f"{i}\n" for i in IDS))
    ids = _mixed(tmp_path / "mix")
    (tmp_path / "mix" / "id_prop.csv").write_text("".join(f"{i}\n" for i in ids))
    with tarfile.open(tmp_path / "mix.tar.gz", "w:gz") as tf:  # in IDS's order; SiC as run/POSCAR: id "SiC"
        for name, arcname in (("C.cif", "C.cif"), ("Si.vasp", "Si.vasp"), ("POSCAR_SiC", "SiC/POSCAR"),
                              ("BAs.json", "BAs.json"), ("more.extxyz", "more.extxyz")):
            tf.add(tmp_path / "mix" / name, arcname=arcname)
    with zipfile.ZipFile(tmp_path / "mix.zip", "w") as zf:
        for name in ("C.cif", "Si.vasp", "POSCAR_SiC", "BAs.json", "more.extxyz"):
            zf.write(tmp_path / "mix" / name, arcname=name)
    tables = {}
    for name, given in (("cifs", cifs), ("mix", tmp_path / "mix"), ("tar", tmp_path / "mix.tar.gz"),
                        ("zip", tmp_path / "mix.zip")):
        proc = _cli("--train", 0, SOURCE, given, "--last-layer", LAYER_V2, "--results", tmp_path / f"{name}.csv",
                    "--test-results", tmp_path / f"t_{name}.csv", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        tables[name] = pd.read_csv(tmp_path / f"{name}.csv", dtype={"cif_id": str})
    want = tables["cifs"]
    assert list(want.cif_id) == IDS
    assert list(tables["mix"].cif_id) == ids and list(tables["tar"].cif_id) == IDS
    assert list(tables["zip"].cif_id) == ["C", "Si", "POSCAR_SiC", "BAs", "GaP", "GaAs"]
    for name in ("mix", "tar", "zip"):
        got = tables[name]
        assert got["in_domain"].tolist() == want["in_domain"].tolist()
        for column in ("prediction", "prediction_low", "prediction_high", "kappa", "domain_distance"):
            np.testing.assert_allclose(got[column], want[column], rtol=1e-6, atol=1e-9, err_msg=f"{name} {column}")


def test_a_bad_poscar_is_one_line_naming_it_as_a_bad_cif(tmp_path):
    """A POSCAR that does not parse, in a folder: skipped with its one-line reason (--on-error skip), else
    the run stops in one line naming it (exit 2), nothing written."""
    folder = tmp_path / "data"
    folder.mkdir()
    for cif_id in IDS[:3]:
        shutil.copy(SAMPLE / f"{cif_id}.cif", folder)
    (folder / "Bad.vasp").write_text("not a POSCAR\n1.0\n")
    proc = _cli("--train", 0, SOURCE, folder, "--last-layer", LAYER_V2, "--on-error", "skip", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped.cif_id) == ["Bad"] and "Bad.vasp: not a readable POSCAR" in skipped.reason[0]
    assert "\n" not in skipped.reason[0]
    assert list(pd.read_csv(tmp_path / "results.csv").cif_id) == ["C", "Si", "SiC"]
    out = tmp_path / "stop"
    out.mkdir()
    proc = _cli("--train", 0, SOURCE, folder, "--last-layer", LAYER_V2, cwd=out)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Bad.vasp: not a readable POSCAR" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == []


def test_faults_of_frames_and_files_name_them(tmp_path):
    """A frame without a lattice, overlapping atoms in a JSON, an extxyz file that does not parse, two
    files of one cif_id: one line each, naming the file (and frame)."""
    from ase import Atoms
    from ase.io import write
    from pymatgen.core import Lattice, Structure

    from cgcnn.crystals import open_input, read_crystal, read_id_prop

    folder = tmp_path / "data"
    folder.mkdir()
    good = Atoms("Si2", scaled_positions=[[0, 0, 0], [0.25, 0.25, 0.25]], cell=np.eye(3) * 5.43, pbc=True)
    write(folder / "frames.extxyz", [good, Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]])], format="extxyz")
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    (folder / "close.json").write_text(overlapping.to_json())
    (folder / "junk.xyz").write_text("3\nnot extxyz\nH 0 0\n")
    assert read_id_prop(folder)[0] == ["close", "frames:0", "frames:1", "junk"]
    crystals = next(open_input(folder).chunks(10))[1]
    assert crystals[1].error is None and crystals[1].structure is not None
    assert crystals[2].error.endswith("frames.extxyz:1: ASE Atoms without a lattice (three cell vectors, periodic "
                                      "in x, y and z); CGCNN needs a crystal")
    assert "junk.xyz: not a readable extended XYZ file" in crystals[3].error
    with pytest.raises(InputError, match=r"close\.json: overlapping atoms"):
        read_crystal(folder, "close")
    with pytest.raises(InputError, match=r"frames\.extxyz:1: ASE Atoms without a lattice"):
        read_crystal(folder, "frames:1")
    (folder / "close.cif").write_text((SAMPLE / "C.cif").read_text())
    with pytest.raises(InputError, match="both close.cif and close.json; keep one"):
        read_id_prop(folder)


def test_fit_on_a_folder_of_other_formats_is_the_fit_on_their_cifs(tmp_path):
    """--train 1's route (KappaModel.fit on a data folder: CIFData) reads POSCARs, JSON and extxyz frames named
    in id_prop.csv as their CIFs: the same last-layer inputs and fit (small random model, ridge)."""
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Poscar

    from cgcnn import KappaModel
    from conftest import TARGETS, crystals, make_checkpoint, one_hot_table, write_folder

    source = make_checkpoint(tmp_path / "small.pth.tar")
    table = one_hot_table()
    cifs = write_folder(tmp_path / "cifs", crystals(), TARGETS, atom_init=table)
    mix = write_folder(tmp_path / "mix", {}, atom_init=table)
    s = crystals()
    Poscar(s["NaCl"]).write_file(mix / "NaCl.vasp")
    Poscar(s["Si"]).write_file(mix / "POSCAR_Si")
    (mix / "MgO.json").write_text(s["MgO"].to_json())
    atoms = AseAtomsAdaptor.get_atoms(s["GaAs"])
    write(mix / "frames.extxyz", [atoms], format="extxyz")  # no id of its own: frames:0
    ids = {"NaCl": "NaCl", "Si": "POSCAR_Si", "MgO": "MgO", "GaAs": "frames:0"}
    (mix / "id_prop.csv").write_text("".join(f"{ids[k]},{TARGETS[k]}\n" for k in crystals()))
    options = dict(source=source, last_layer_type="ridge", descriptors="structure", members="none", cv_folds=0)
    want, got = KappaModel.fit(cifs, **options), KappaModel.fit(mix, **options)
    assert got.train_mae == pytest.approx(want.train_mae, rel=1e-5, abs=1e-9)
    a, b = want.featurize(cifs), got.featurize(mix)
    assert list(b.index) == [ids[k] for k in crystals()]
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-5, atol=1e-6)
