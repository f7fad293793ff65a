"""cgcnn.refine: κ_L from phonons (python -m cgcnn.refine).

The first tests need only the core install (the bookkeeping of a run, the one-line error without the
refine extra).  The others need the extra (phono3py, ase; sevenn for the last) and skip cleanly without
it, as in CI, which installs only the core: they use ASE's EMT potential of Cu, small supercells and
meshes, so that they run in seconds; the SevenNet test runs Si on a tiny setting.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from cgcnn import InputError
from cgcnn.cli import run_main
from cgcnn.crystals import CrystalText
from cgcnn.refine import (
    COLUMNS,
    BTESettings,
    BTEValue,
    choose_supercell,
    format_row,
    imaginary_modes,
    read_crystals,
    refine,
    require,
    shard_folder,
)
from cgcnn.refine.__main__ import main
from cgcnn.refine.run import _open_work, _write_table

SAMPLE = "data/sample"


def _cif(structure: Structure, cif_id: str) -> CrystalText:
    return CrystalText(cif_id, f"{cif_id}.cif", str(CifWriter(structure)).encode())


def _fcc_cu() -> Structure:
    return Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _sc_cu() -> Structure:  # simple cubic Cu: unstable (imaginary modes) in EMT, as in nature
    return Structure(Lattice.cubic(2.3), ["Cu"], [[0, 0, 0]])


# ---------------------------------------------------------------- core install (no extra needed)


def test_missing_extra_is_one_line(monkeypatch, capsys, tmp_path):
    with pytest.raises(InputError, match=r"pip install \.\[refine\]"):
        require("cgcnn_no_such_package")
    monkeypatch.setitem(sys.modules, "phono3py", None)  # an import of it now raises ImportError
    assert run_main(main, [f"{SAMPLE}/Si.cif", "-o", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: phono3py is not installed: cgcnn.refine needs the refine extra (pip install .[refine])"]
    assert not (tmp_path / "r.csv").exists()


def test_supercell_from_cell_size():
    a = 5.431  # Si, fcc primitive cell: face heights a/sqrt(3) = 3.14 Å
    fcc = a / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    assert choose_supercell(fcc, 6.0) == (2, 2, 2)
    assert choose_supercell(fcc, 6.3) == (3, 3, 3)
    hexagonal = Lattice.hexagonal(3.11, 4.98).matrix  # AlN: heights 2.69, 2.69, 4.98 Å
    assert choose_supercell(hexagonal, 6.0) == (3, 3, 2)


def test_imaginary_modes_rule():
    freqs = np.abs(np.random.default_rng(0).normal(5, 1, (8, 6)))
    freqs[0, :3] = [-0.005, 0.0, 0.004]  # acoustic noise at Γ: tolerated
    assert imaginary_modes(freqs, tol=0.01) is None
    bad = freqs.copy()
    bad[3, 2] = -0.4
    assert imaginary_modes(bad, tol=0.01).startswith("dynamically unstable at 0 K: imaginary mode of -0.400 THz")
    bad = freqs.copy()
    bad[0, 1] = -0.05  # beyond the tolerance, at Γ
    assert "unstable" in imaginary_modes(bad, tol=0.01)
    assert imaginary_modes(np.full((2, 3), np.nan), tol=0.01) == "non-finite harmonic frequencies"


def test_read_crystals_order_and_unknown_ids():
    crystals = read_crystals(SAMPLE, ["PbTe", "Si", "NaCl"])
    assert [c.cif_id for c in crystals] == ["PbTe", "Si", "NaCl"]  # the list's order
    assert crystals[0].data.startswith(b"#") or b"_cell_length_a" in crystals[0].data
    assert [c.cif_id for c in read_crystals(f"{SAMPLE}/Si.cif")] == ["Si"]
    assert len(read_crystals(SAMPLE)) == 62
    with pytest.raises(InputError, match="no crystal named Xx"):
        read_crystals(SAMPLE, ["Si", "Xx"])


def test_rows_shards_and_resume_checks(tmp_path):
    settings = BTESettings(potential="7net-l3i5")
    crystals = read_crystals(SAMPLE, ["Si", "NaCl"])
    results = tmp_path / "refined.csv"
    folder = shard_folder(results)
    from cgcnn.refine.run import _manifest

    manifest = _manifest(settings, crystals)
    assert _open_work(folder, manifest, resume=False) == {}
    saved = json.loads((folder / "manifest.json").read_text())
    assert saved["settings"]["cutoff"] == 4.0 and saved["settings"]["mesh"] == [11, 11, 11]
    assert saved["settings"]["temperature"] == 300.0 and saved["settings"]["isotopes"] is True
    with pytest.raises(InputError, match="give --resume"):
        _open_work(folder, manifest, resume=False)
    with pytest.raises(InputError, match="other settings"):
        _open_work(folder, _manifest(BTESettings(mesh=(9, 9, 9)), crystals), resume=True)
    with pytest.raises(InputError, match="another input"):
        _open_work(folder, _manifest(settings, crystals[:1]), resume=True)
    with pytest.raises(InputError, match="another --threads"):
        _open_work(folder, _manifest(settings, crystals, threads=2), resume=True)
    row = format_row("Si", BTEValue(80.0, True, "", (2, 2, 2), 12.34), settings)
    (folder / "0000000.json").write_text(json.dumps(row))
    rows = _open_work(folder, manifest, resume=True)
    assert list(rows) == [0] and rows[0]["log10_kappa_bte"] == pytest.approx(math.log10(80.0))
    rows[1] = format_row("NaCl", "NaCl.cif: cannot read", settings)
    _write_table(rows, results)
    table = pd.read_csv(results)
    assert tuple(table.columns) == COLUMNS
    assert table["cif_id"].tolist() == ["Si", "NaCl"]
    assert table.loc[0, "supercell"] == "2x2x2" and table.loc[0, "mesh"] == "11x11x11"
    assert np.isnan(table.loc[1, "kappa_bte"]) and table.loc[1, "reason"] == "error: NaCl.cif: cannot read"
    unstable = format_row("X", BTEValue(None, True, "dynamically unstable at 0 K: ...", (2, 2, 2), 1.0), settings)
    assert math.isnan(unstable["kappa_bte"]) and unstable["reason"].startswith("dynamically unstable")
    with pytest.raises(InputError, match="nothing to resume"):
        _open_work(tmp_path / "other.parts", manifest, resume=True)


# ---------------------------------------------------------------- the refine extra (phono3py, ase)


def _emt_settings(**kw) -> BTESettings:
    base = dict(potential="EMT (ase)", supercell=(2, 2, 2), cutoff=None, mesh=(6, 6, 6), fmax=1e-3)
    return BTESettings(**{**base, **kw})


def test_bte_kappa_fcc_cu_emt_reproducible():
    pytest.importorskip("phono3py")
    pytest.importorskip("ase")
    from ase.calculators.emt import EMT

    from cgcnn.refine import bte_kappa

    first = bte_kappa(_fcc_cu(), _emt_settings(), calc=EMT())
    assert first.kappa is not None and math.isfinite(first.kappa) and first.kappa > 0, first
    assert first.reason == "" and first.converged and first.supercell == (2, 2, 2)
    assert first.details["atoms"] == 1 and first.details["fc3_cells"] > 0
    assert first.details["volume"] == pytest.approx(11.57, abs=0.05)  # EMT's Cu: a = 3.59 Å
    again = bte_kappa(_fcc_cu(), _emt_settings(), calc=EMT())
    assert again.kappa == first.kappa  # the same inputs give the same number
    hotter = bte_kappa(_fcc_cu(), _emt_settings(temperature=600.0), calc=EMT())
    assert hotter.kappa < first.kappa  # more phonon-phonon scattering at 600 K


def test_unstable_crystal_is_refused_with_a_reason():
    pytest.importorskip("phono3py")
    pytest.importorskip("ase")
    from ase.calculators.emt import EMT

    from cgcnn.refine import bte_kappa

    value = bte_kappa(_sc_cu(), _emt_settings(mesh=(4, 4, 4)), calc=EMT())
    assert value.kappa is None
    assert value.reason.startswith("dynamically unstable at 0 K: imaginary mode of -")
    assert "fc3_cells" not in value.details  # the anharmonic part is not computed


def test_refine_resumes_only_what_is_missing(tmp_path, capsys):
    pytest.importorskip("phono3py")
    pytest.importorskip("ase")
    from ase.calculators.emt import EMT

    class Counting(EMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            Counting.calls += 1
            super().calculate(*args, **kwargs)

    crystals = [_cif(_fcc_cu(), "Cu"), CrystalText("Broken", "Broken.cif", b"data_x\n_cell_length_a 1\n"),
                _cif(_sc_cu(), "CuSC")]
    results = tmp_path / "refined.csv"
    with pytest.raises(InputError, match="Broken.cif"):
        refine(crystals, results, _emt_settings(mesh=(4, 4, 4)), calc=Counting(), quiet=True)
    first = pd.read_csv(results)
    assert first["cif_id"].tolist() == ["Cu"] and first.loc[0, "kappa_bte"] > 0
    assert shard_folder(results).is_dir()
    with pytest.raises(InputError, match="other settings"):
        refine(crystals, results, _emt_settings(mesh=(5, 5, 5)), calc=EMT(), resume=True, quiet=True)
    Counting.calls = 0
    summary = refine(crystals, results, _emt_settings(mesh=(4, 4, 4)), calc=Counting(), resume=True,
                     on_error="skip")
    table = pd.read_csv(results)
    assert table["cif_id"].tolist() == ["Cu", "Broken", "CuSC"]
    assert table.loc[0, "kappa_bte"] == first.loc[0, "kappa_bte"] and table.loc[0, "seconds"] == first.loc[0, "seconds"]
    assert table.loc[1, "reason"].startswith("error: Broken.cif")
    assert table.loc[2, "reason"].startswith("dynamically unstable")
    assert table["kappa_bte"].isna().tolist() == [False, True, True]
    assert (summary.crystals, summary.with_value, summary.without_value) == (3, 1, 2)
    assert 0 < Counting.calls < 200  # sc Cu's relaxation and fc2 only; Cu was not computed again
    assert not shard_folder(results).exists()
    assert "[3/3] CuSC" in capsys.readouterr().err


def test_sevenn_si_tiny_setting(tmp_path):
    pytest.importorskip("phono3py")
    pytest.importorskip("sevenn")
    out = tmp_path / "refined.csv"
    assert main([f"{SAMPLE}/Si.cif", "-o", str(out), "--potential", "7net-0", "--mesh", "3", "--cutoff", "2.5",
                 "--fmax", "1e-2", "--max-steps", "5", "-q"]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["cif_id"] == "Si" and row["supercell"] == "2x2x2" and row["potential"] == "7net-0"
    assert 10 < row["kappa_bte"] < 1000 and row["log10_kappa_bte"] == pytest.approx(math.log10(row["kappa_bte"]))


def test_flagged_crystals_of_a_transfer_results_csv(tmp_path, capsys):
    from cgcnn.refine.__main__ import _read_flagged

    results = tmp_path / "results.csv"
    results.write_text("cif_id,prediction,in_domain\nSi,2.1,True\nCaCO3,0.5,False\nBi2Te3,0.2,False\n")
    assert _read_flagged(str(results)) == ["CaCO3", "Bi2Te3"]
    results.write_text("cif_id,prediction,in_domain\nSi,2.1,True\n")
    assert run_main(main, [SAMPLE, "--flagged", str(results), "-o", str(tmp_path / "r.csv")]) == 2
    assert capsys.readouterr().err == f"error: {results}: no crystal is flagged out of domain; nothing to refine\n"
    results.write_text("cif_id,prediction\nSi,2.1\n")
    with pytest.raises(InputError, match="in_domain"):
        _read_flagged(str(results))


@pytest.mark.parametrize("args, message", [
    (["--mesh", "0"], "argument --mesh: '0': give N or NxNxN"), (["--cutoff", "-1"], "argument --cutoff: '-1'"),
    (["--supercell", "2x2"], "argument --supercell: '2x2'"), (["--fmax", "0"], "fmax must be positive"),
    (["--min-height", "-3"], "min-height"),
])
def test_bad_settings_are_refused(args, message, capsys, tmp_path):
    try:
        code = run_main(main, [f"{SAMPLE}/Si.cif", "-o", str(tmp_path / "r.csv"), *args])
    except SystemExit as exc:  # argparse: usage line, then the error
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "r.csv").exists()
