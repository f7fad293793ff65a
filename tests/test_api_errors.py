"""Every error class of the command line, through the Python API (cgcnn.api.KappaModel): the same one-line
cgcnn.InputError, naming the crystal, the file or the option, raised by the same checks.

Classes, with the command-line tests they mirror: models (test_bad_input: missing, classification; test_safety_nan),
data folders and id_prop.csv (test_bad_input, test_safety_data), crystals (test_bad_input, test_safety_cif,
test_cif_faults: a CIF that does not parse, partial occupancy, overlapping atoms, unknown elements, too many sites,
an element the atom table lacks), targets (test_hostile_targets, test_safety_data), last_layer.sav
(test_bad_input, test_safety_layerfile), a model and a last layer that do not match (test_hostile_messages),
atom tables (test_safety_atom_table, test_safety_nan), archives (test_hostile_archives), outputs
(test_safety_inputs_outputs, test_safety_outputs) and option values (test_hostile_options, test_safety_options).
Small random models (tests/conftest.py) and ridge last layers keep each test short.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile

import pytest
import torch
from pymatgen.core import Lattice, Structure

from cgcnn import InputError, KappaModel
from conftest import TARGETS, crystals, make_checkpoint, one_hot_table, write_folder

FAST = dict(last_layer_type="ridge", descriptors="structure", members="none", cv_folds=0)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A small source model, its atom table as a file, and a last layer fit on four crystals, saved."""
    root = tmp_path_factory.mktemp("api_errors")
    source = make_checkpoint(root / "small.pth.tar")
    table = root / "atom_init.json"
    table.write_text(json.dumps(one_hot_table()))
    structures = list(crystals().values())
    model = KappaModel.fit(structures, list(TARGETS.values()), source=source, atom_init=table,
                           ids=list(crystals()), **FAST)
    model.save(root / "last_layer.sav")
    return {"root": root, "source": source, "table": table, "model": model, "layer": root / "last_layer.sav"}


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, (word, text)
    return text


# ------------------------------------------------------------------------------------------------------
# models


def test_missing_source_model(kit, tmp_path):
    missing = tmp_path / "nope.pth.tar"
    with pytest.raises(InputError) as exc:
        KappaModel.fit(list(crystals().values()), list(TARGETS.values()), source=missing, atom_init=kit["table"],
                       **FAST)
    _one_line(exc, "nope.pth.tar")
    with pytest.raises(InputError) as exc:
        KappaModel.load(kit["layer"], source=missing)
    _one_line(exc, "nope.pth.tar")


def test_classification_model_where_regression_is_needed(kit, tmp_path):
    model = make_checkpoint(tmp_path / "classes.pth.tar", classification=True)
    with pytest.raises(InputError) as exc:
        KappaModel.load(kit["layer"], source=model)
    _one_line(exc, "classes.pth.tar", "classification")


@pytest.mark.parametrize("where", ["weights", "atom table"])
def test_checkpoint_with_nan_is_refused(kit, tmp_path, where):
    path = make_checkpoint(tmp_path / "nan.pth.tar")
    ckpt = torch.load(path, weights_only=False)
    if where == "weights":
        name = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
        ckpt["state_dict"][name].view(-1)[0] = float("nan")
    else:
        table = one_hot_table()
        table["14"][0] = float("nan")
        ckpt["atom_init"] = table
    torch.save(ckpt, path)
    with pytest.raises(InputError) as exc:
        KappaModel.fit(list(crystals().values()), list(TARGETS.values()), source=path, **FAST)
    _one_line(exc, "nan.pth.tar")


# ------------------------------------------------------------------------------------------------------
# data folders and id_prop.csv


def test_data_folder_missing_or_without_crystals(kit, tmp_path):
    with pytest.raises(InputError) as exc:
        KappaModel.fit(tmp_path / "missing", source=kit["source"], atom_init=kit["table"], **FAST)
    _one_line(exc, "missing", "not found")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as exc:
        kit["model"].predict(tmp_path / "empty")
    _one_line(exc, "empty", "no id_prop.csv and no structure files")


@pytest.mark.parametrize("rows, words", [
    ("Si,2.1\nSi,2.2\n", ["id_prop.csv, line 2", "duplicate cif_id 'Si'"]),
    ("Si,2.1\nNaCl,0,85\n", ["id_prop.csv, line 2", "decimal comma"]),
    ("Si,2.1\n../NaCl,0.8\n", ["id_prop.csv, line 2", "is a path"]),
    ("Si,2.1\nKCl,0.8\n", ["id_prop.csv, line 2", "KCl.cif not found"]),
])
def test_id_prop_faults(kit, tmp_path, rows, words):
    folder = write_folder(tmp_path / "data", crystals(), TARGETS)
    (folder / "id_prop.csv").write_text(rows)
    with pytest.raises(InputError) as exc:
        KappaModel.fit(folder, source=kit["source"], atom_init=kit["table"], **FAST)
    _one_line(exc, *words)


# ------------------------------------------------------------------------------------------------------
# crystals


def test_a_cif_that_does_not_parse(kit, tmp_path):
    bad = tmp_path / "KCl.cif"
    bad.write_text("data_x\n_cell_length_a 4\nnonsense\n")
    with pytest.raises(InputError) as exc:
        kit["model"].predict([bad])
    _one_line(exc, "KCl.cif")
    folder = write_folder(tmp_path / "data", crystals(), id_prop=False)
    (folder / "Xx.cif").write_text((folder / "Si.cif").read_text().replace("Si", "Xx"))
    with pytest.raises(InputError) as exc:
        kit["model"].predict(folder)  # a folder, as --train 0 reads it
    _one_line(exc, "Xx.cif")


def _partial():
    return Structure(Lattice.cubic(5.6), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _overlapping():
    return Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])


def _dummy():
    return Structure(Lattice.cubic(4.0), ["Na", "X0+"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _polonium():  # Z = 84: not in the small atom table below
    return Structure(Lattice.cubic(3.35), ["Po"], [[0, 0, 0]])


@pytest.mark.parametrize("make, words", [
    (_partial, ["crystal mine", "partial occupancies"]),
    (_overlapping, ["crystal mine", "overlapping atoms"]),
    (_dummy, ["crystal mine", "not a chemical element"]),
])
def test_crystals_the_checks_refuse(kit, make, words):
    structure = make()
    structure.properties["material_id"] = "mine"  # the crystal's own id names it
    with pytest.raises(InputError) as exc:
        kit["model"].predict([structure])
    _one_line(exc, *words)


def test_too_many_sites(kit, monkeypatch):
    import cgcnn.crystals.checks

    monkeypatch.setattr(cgcnn.crystals.checks, "MAX_SITES", 4)
    with pytest.raises(InputError) as exc:
        kit["model"].predict([crystals()["NaCl"]], ids=["big"])
    _one_line(exc, "crystal big", "8 sites, more than the limit of 4")


def test_element_missing_from_the_atom_table(kit, tmp_path):
    table = {k: v for k, v in one_hot_table().items() if int(k) != 84}
    small = tmp_path / "atom_init.json"
    small.write_text(json.dumps(table))
    model = KappaModel.fit(list(crystals().values()), list(TARGETS.values()), source=kit["source"], atom_init=small,
                           **FAST)
    with pytest.raises(InputError) as exc:
        model.predict([_polonium()], ids=["Po"])
    _one_line(exc, "Po", "not in", "atom_init.json")


def test_a_bad_poscar_file(kit, tmp_path):
    (tmp_path / "Bad.vasp").write_text("not a POSCAR\n1.0\n")
    with pytest.raises(InputError) as exc:
        kit["model"].predict([tmp_path / "Bad.vasp"])
    _one_line(exc, "Bad.vasp: not a readable POSCAR")


# ------------------------------------------------------------------------------------------------------
# targets


def test_kappa_given_for_log10_kappa(kit, tmp_path):
    structures = list(crystals().values())
    with pytest.raises(InputError) as exc:
        KappaModel.fit(structures, [150.0, 7.0, 45.0, 60.0], source=kit["source"], atom_init=kit["table"], **FAST)
    _one_line(exc, "log10_kappa", "look like κ_L")
    folder = write_folder(tmp_path / "data", crystals(), {k: 10 ** v for k, v in TARGETS.items()})
    with pytest.raises(InputError) as exc:
        KappaModel.fit(folder, source=kit["source"], atom_init=kit["table"], **FAST)
    _one_line(exc, "id_prop.csv", "look like κ_L")
    with pytest.raises(InputError) as exc:  # --train 0 refuses such targets too
        kit["model"].predict(folder)
    _one_line(exc, "id_prop.csv", "look like κ_L")


def test_target_outside_every_possible_kappa_names_the_crystal(kit):
    with pytest.raises(InputError) as exc:
        KappaModel.fit(list(crystals().values()), [2.0, 0.9, -7.0, 1.8], ids=list(crystals()), source=kit["source"],
                       atom_init=kit["table"], **FAST)
    _one_line(exc, "log10_kappa", "target -7 (MgO) lies outside")


def test_too_few_crystals_for_an_interval(kit):
    structures = list(crystals().values())
    with pytest.raises(InputError) as exc:
        KappaModel.fit(structures, list(TARGETS.values()), source=kit["source"], atom_init=kit["table"],
                       interval=0.95, **{**FAST, "cv_folds": 2})
    _one_line(exc, "log10_kappa")


# ------------------------------------------------------------------------------------------------------
# last_layer.sav, and a model that does not match it


def test_last_layer_missing_or_not_one(kit, tmp_path):
    with pytest.raises(InputError) as exc:
        KappaModel.load(tmp_path / "none.sav", source=kit["source"])
    _one_line(exc, "none.sav")
    (tmp_path / "junk.sav").write_bytes(b"not a last layer")
    with pytest.raises(InputError) as exc:
        KappaModel.load(tmp_path / "junk.sav", source=kit["source"])
    _one_line(exc, "junk.sav")


class _Payload:
    def __reduce__(self):
        import os

        return os.system, ("echo owned",)


def test_malicious_last_layer_is_refused_unrun(kit, tmp_path):
    path = tmp_path / "evil.sav"
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(InputError) as exc:
        KappaModel.load(path, source=kit["source"])
    _one_line(exc, "evil.sav")


def test_another_source_model_than_the_layer_was_fit_with(kit, tmp_path):
    other = make_checkpoint(tmp_path / "small.pth.tar", seed=7)  # same name, other weights
    model = KappaModel.load(kit["layer"], source=other, atom_init=kit["table"])
    with pytest.raises(InputError) as exc:
        model.predict([crystals()["Si"]])
    _one_line(exc, "last_layer.sav", "other source model")


# ------------------------------------------------------------------------------------------------------
# atom tables, archives, outputs, options


@pytest.mark.parametrize("text, word", [
    ('{"1": [1.0, 2.0], "8": [1.0]}', "atom_init.json"),
    ('{"1": [NaN], "8": [1.0]}', "NaN"),
    ("[1, 2, 3]", "atom_init.json"),
])
def test_atom_table_faults(kit, tmp_path, text, word):
    bad = tmp_path / "atom_init.json"
    bad.write_text(text)
    model = KappaModel.load(kit["layer"], source=kit["source"], atom_init=bad)
    with pytest.raises(InputError) as exc:
        model.predict([crystals()["Si"]])
    _one_line(exc, word)


def test_no_atom_table_at_all(kit):
    model = KappaModel.load(kit["layer"], source=kit["source"])  # the small checkpoint stores none
    with pytest.raises(InputError) as exc:
        model.predict([crystals()["Si"]])
    _one_line(exc, "small.pth.tar", "stores no atom feature table; give atom_init=")


def test_archive_link_outside_is_refused(kit, tmp_path):
    archive = tmp_path / "db.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("Si.cif")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tf.addfile(info)
        data = (write_folder(tmp_path / "f", {"NaCl": crystals()["NaCl"]}) / "NaCl.cif").read_bytes()
        member = tarfile.TarInfo("NaCl.cif")
        member.size = len(data)
        tf.addfile(member, io.BytesIO(data))
    model = KappaModel.load(kit["layer"], source=kit["source"], atom_init=kit["table"])
    with pytest.raises(InputError) as exc:
        model.predict(archive)
    _one_line(exc, "db.tar:Si.cif", "outside the archive")


def test_save_never_overwrites_an_input(kit, tmp_path):
    before = kit["source"].read_bytes()
    with pytest.raises(InputError) as exc:
        kit["model"].save(kit["source"])
    _one_line(exc, "small.pth.tar", "same file as the input")
    assert kit["source"].read_bytes() == before
    with pytest.raises(InputError) as exc:
        kit["model"].save(kit["table"])
    _one_line(exc, "atom_init.json", "same file as the input")
    with pytest.raises(InputError) as exc:
        kit["model"].save(tmp_path / "no" / "such" / "folder" / "layer.sav")
    _one_line(exc, "layer.sav")


@pytest.mark.parametrize("options, words", [
    ({"seed": -1}, ["seed must not be negative"]),
    ({"cv_folds": 1}, ["cv_folds 1 cannot cross-validate"]),
    ({"cv_folds": -2}, ["cv_folds must not be negative"]),
    ({"interval": 1.2}, ["interval must lie in [0.5, 1)"]),
    ({"batch_size": 0}, ["batch_size must be at least 1"]),
    ({"workers": -1}, ["workers must not be negative"]),
    ({"original": True, "last_layer_type": "gp"}, ["--original means"]),
])
def test_bad_option_values_of_fit(kit, options, words):
    with pytest.raises(InputError) as exc:
        KappaModel.fit(list(crystals().values()), list(TARGETS.values()), source=kit["source"],
                       atom_init=kit["table"], **{**FAST, **options})
    _one_line(exc, *words)


def test_bad_option_values_of_load_and_predict(kit):
    with pytest.raises(InputError) as exc:
        KappaModel.load(kit["layer"], source=kit["source"], batch_size=0)
    _one_line(exc, "batch_size must be at least 1, not 0")
    with pytest.raises(InputError) as exc:
        kit["model"].predict([crystals()["Si"]], interval=float("nan"))
    _one_line(exc, "interval must lie in [0.5, 1), not nan")
