"""CIF values pymatgen reads silently wrong, and CIFs in another encoding (issue 13, classes 1 and 6):
one line naming the file and what is wrong, through the command line, every file left as it was."""

from __future__ import annotations

import pytest
from test_safety_outputs import assert_error, snapshot

from cgcnn import InputError, predict
from cgcnn.cli import run_main
from cgcnn.data import read_structure

NACL = """data_NaCl
_symmetry_space_group_name_H-M 'F m -3 m'
_symmetry_Int_Tables_number 225
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha {alpha}
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Na1 Na 0 0 0 1
Cl1 Cl 0.5 0.5 0.5 {occupancy}
"""


def nacl(alpha="90", occupancy="1") -> str:
    return NACL.format(alpha=alpha, occupancy=occupancy)


def test_the_reference_reads(tmp_path):
    (tmp_path / "NaCl.cif").write_text(nacl())
    assert read_structure(tmp_path / "NaCl.cif").composition.reduced_formula == "NaCl"
    (tmp_path / "crlf.cif").write_bytes(nacl().replace("\n", "\r\n").encode())
    assert len(read_structure(tmp_path / "crlf.cif")) == 8


BAD = {
    "angle 200": (nacl(alpha="200"), ["cell angle alpha = 200 deg", "outside 0 ... 180"]),
    "angle -90": (nacl(alpha="-90"), ["cell angle alpha = -90 deg"]),
    "negative occupancy": (nacl(occupancy="-1"), ["site Cl1 has occupancy -1"]),
    "zero occupancy": (nacl(occupancy="0"), ["site Cl1 has occupancy 0", "empty site"]),
    "occupancy above 1": (nacl(occupancy="1.5"), ["site Cl1 has occupancy 1.5"]),
    "UTF-16": (nacl().encode("utf-16"), ["UTF-16", "byte-order mark", "save it as UTF-8"]),
    "UTF-16 without BOM": (nacl().encode("utf-16-le"), ["NUL bytes", "UTF-16"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_cif_refused(tmp_path, case):
    text, words = BAD[case]
    path = tmp_path / "bad.cif"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError) as exc:
        read_structure(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for word in words:
        assert word in message


@pytest.mark.parametrize("case", ["negative occupancy", "UTF-16"])
def test_bad_cif_through_predict(capsys, tmp_path, cif_folder, small_model, case):
    text, words = BAD[case]
    (cif_folder / "bad.cif").write_bytes(text if isinstance(text, bytes) else text.encode())
    (cif_folder / "id_prop.csv").write_text("Si,2.17\nbad,1.0\n")
    out = tmp_path / "p.csv"
    out.write_text("earlier\n")
    before = snapshot(tmp_path)
    code = run_main(predict.main, [str(small_model), str(cif_folder), "-q", "-j", "0", "--out", str(out)])
    assert_error(code, capsys.readouterr().err, "bad.cif", *words)
    assert snapshot(tmp_path) == before
