"""Tests for cgcnn.crystals and cgcnn.data: structures, graphs, data folders, atom features, batching, caches."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

import cgcnn.data
import cgcnn.data.dataset
from cgcnn import InputError
from cgcnn.data import (
    CIFData,
    GaussianDistance,
    GraphParams,
    build_graph,
    collate_pool,
    load_atom_init,
    read_id_prop,
    read_structure,
)
from conftest import TARGETS, crystals, one_hot_table, write_folder


def upstream_graph(structure: Structure, radius: float = 8.0, max_num_nbr: int = 12):
    """Neighbour indices and distances as upstream CGCNN ``CIFData.__getitem__`` builds them."""
    all_nbrs = structure.get_all_neighbors(radius, include_index=True)
    all_nbrs = [sorted(nbrs, key=lambda x: x[1]) for nbrs in all_nbrs]
    idx, dist = [], []
    for nbr in all_nbrs:
        if len(nbr) < max_num_nbr:
            idx.append([x[2] for x in nbr] + [0] * (max_num_nbr - len(nbr)))
            dist.append([x[1] for x in nbr] + [radius + 1.0] * (max_num_nbr - len(nbr)))
        else:
            idx.append([x[2] for x in nbr[:max_num_nbr]])
            dist.append([x[1] for x in nbr[:max_num_nbr]])
    return np.array(idx), np.array(dist)


def distorted() -> Structure:
    """A triclinic cell with three species: few exact ties, unlike the cubic crystals."""
    lattice = Lattice.from_parameters(5.1, 5.6, 6.0, 85.0, 95.0, 100.0)
    return Structure(
        lattice, ["Na", "Cl", "K", "Cl"],
        [[0.0, 0.0, 0.0], [0.52, 0.48, 0.51], [0.26, 0.71, 0.13], [0.77, 0.24, 0.69]],
    )


# --- graphs -----------------------------------------------------------------


def test_graph_shapes(cif_folder):
    data = CIFData(cif_folder)
    assert len(data) == 4
    (atom_fea, nbr_fea, nbr_fea_idx), target, cif_id = data[0]
    n = len(crystals()["Si"])
    assert cif_id == "Si"
    assert atom_fea.shape == (n, 92) and atom_fea.dtype == torch.float32
    assert nbr_fea.shape == (n, 12, 41) and nbr_fea.dtype == torch.float32
    assert nbr_fea_idx.shape == (n, 12) and nbr_fea_idx.dtype == torch.int64
    assert target.shape == (1,) and target.item() == pytest.approx(TARGETS["Si"])


def test_tiny_radius_pads_and_warns_naming_the_crystal():
    nacl = crystals()["NaCl"]  # 6 nearest neighbours at 2.82 Å, the next at 3.99 Å
    params = GraphParams(radius=3.0)
    with pytest.warns(UserWarning, match="my_rocksalt"):
        graph = build_graph(nacl, params, name="my_rocksalt")
    assert graph.nbr_fea_idx.shape == (len(nacl), 12)
    np.testing.assert_allclose(graph.nbr_dist[:, :6], 2.82, atol=1e-6)
    assert (graph.nbr_fea_idx[:, 6:] == 0).all()
    assert (graph.nbr_dist[:, 6:] == 4.0).all()
    idx, dist = upstream_graph(nacl, radius=3.0)
    np.testing.assert_array_equal(graph.nbr_fea_idx, idx)
    np.testing.assert_array_equal(graph.nbr_dist, dist)


def test_no_warning_with_enough_neighbours():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_graph(crystals()["NaCl"], name="NaCl")


@pytest.mark.parametrize("name", ["NaCl", "Si", "GaAs", "distorted"])
def test_tie_order_equals_upstream(name):
    structure = distorted() if name == "distorted" else crystals()[name]
    graph = build_graph(structure)
    idx, dist = upstream_graph(structure)
    np.testing.assert_array_equal(graph.nbr_fea_idx, idx)
    np.testing.assert_allclose(graph.nbr_dist, dist, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(graph.numbers, [site.specie.Z for site in structure])


def test_gaussian_basis_has_41_features():
    gdf = GaussianDistance(dmin=0.0, dmax=8.0, step=0.2)
    assert len(gdf.filter) == 41
    assert GraphParams().nbr_fea_len == 41
    assert GraphParams(radius=9.0).nbr_fea_len == 46
    d = np.array([[0.0, 2.0], [8.0, 9.0]])
    fea = gdf.expand(d)
    assert fea.shape == (2, 2, 41)
    assert fea[0, 1, 10] == pytest.approx(1.0)  # mu_10 = 2.0 Å
    assert fea[0, 1, 11] == pytest.approx(np.exp(-1.0))
    np.testing.assert_allclose(fea, np.exp(-((d[..., None] - np.arange(0, 8.2, 0.2)) ** 2) / 0.04))


# --- id_prop.csv ------------------------------------------------------------


@pytest.fixture
def two_cifs(tmp_path):
    all_ = crystals()
    return write_folder(tmp_path / "f", {"b_NaCl": all_["NaCl"], "a_Si": all_["Si"]}, id_prop=False)


def test_read_id_prop_plain(two_cifs):
    (two_cifs / "id_prop.csv").write_text("b_NaCl,1.5\na_Si,2.5\n")
    ids, targets = read_id_prop(two_cifs)
    assert ids == ["b_NaCl", "a_Si"]
    np.testing.assert_array_equal(targets, [1.5, 2.5])


@pytest.mark.parametrize(
    "text",
    [
        "cif_id,kappa\nb_NaCl,1.5\na_Si,2.5\n",  # header row
        "\nb_NaCl,1.5\n\n\na_Si,2.5\n\n",  # blank lines
        "b_NaCl,1.5\r\na_Si,2.5\r\n",  # Windows line endings
        " b_NaCl , 1.5 \na_Si,2.5",  # spaces, no final newline
    ],
    ids=["header", "blank-lines", "crlf", "spaces"],
)
def test_read_id_prop_tolerates(two_cifs, text):
    (two_cifs / "id_prop.csv").write_bytes(text.encode())
    ids, targets = read_id_prop(two_cifs)
    assert ids == ["b_NaCl", "a_Si"]
    np.testing.assert_array_equal(targets, [1.5, 2.5])


def test_read_id_prop_ids_only(two_cifs):
    (two_cifs / "id_prop.csv").write_text("b_NaCl\na_Si\n")
    ids, targets = read_id_prop(two_cifs)
    assert ids == ["b_NaCl", "a_Si"] and targets is None


def test_read_id_prop_without_file_sorts_cifs(two_cifs):
    ids, targets = read_id_prop(two_cifs)
    assert ids == ["a_Si", "b_NaCl"] and targets is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("b_NaCl,1.5\na_Si,2.5\nb_NaCl,3.0\n", "duplicate cif_id 'b_NaCl'"),
        ("b_NaCl,nan\na_Si,2.5\n", "not finite"),
        ("b_NaCl,1.5\na_Si,inf\n", "not finite"),
        ("b_NaCl,1.5\na_Si,high\n", "not a number"),
        ("b_NaCl,1.5\nc_missing,2.5\n", "c_missing.cif not found"),
    ],
    ids=["duplicate", "nan", "inf", "non-numeric", "missing-cif"],
)
def test_read_id_prop_refuses(two_cifs, text, message):
    (two_cifs / "id_prop.csv").write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_id_prop(two_cifs)
    assert "id_prop.csv" in str(err.value)


def test_read_id_prop_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_id_prop(tmp_path / "nowhere")


# --- CIF files --------------------------------------------------------------


def test_read_structure_roundtrip(tmp_path):
    path = tmp_path / "NaCl.cif"
    CifWriter(crystals()["NaCl"]).write_file(str(path))
    assert read_structure(path).composition.reduced_formula == "NaCl"


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty file"), (b"this is not a crystal\n\x00\x01 garbage", "holds NUL bytes"),
     (b"this is not a crystal\n\x01 garbage", "cannot parse")],
    ids=["empty", "binary", "garbage"],
)
def test_read_structure_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "bad_one.cif"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_structure(path)
    assert "bad_one.cif" in str(err.value)


def test_read_structure_refuses_partial_occupancy(tmp_path):
    disordered = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.8), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    path = tmp_path / "NaKCl2.cif"
    CifWriter(disordered).write_file(str(path))
    with pytest.raises(InputError, match="partial occupanc") as err:
        read_structure(path)
    assert "NaKCl2.cif" in str(err.value)


# --- atom features ----------------------------------------------------------


def test_element_missing_from_atom_init(tmp_path):
    table = one_hot_table()
    del table["17"]  # Cl
    folder = write_folder(tmp_path / "f", {"NaCl": crystals()["NaCl"]}, atom_init=table)
    data = CIFData(folder)
    with pytest.raises(InputError, match=r"element\(s\) Cl not in") as err:
        data[0]
    assert "NaCl.cif" in str(err.value)


def test_atom_init_unequal_lengths(tmp_path):
    table = one_hot_table()
    table["11"] = table["11"][:50]
    folder = write_folder(tmp_path / "f", {"NaCl": crystals()["NaCl"]}, atom_init=table)
    with pytest.raises(InputError, match="differ in length"):
        load_atom_init(folder / "atom_init.json")
    with pytest.raises(InputError, match="atom_init.json"):
        CIFData(folder)


def test_atom_init_as_table(tmp_path):
    """CIFData takes the table itself (e.g. a checkpoint's) and writes nothing to the folder."""
    table = one_hot_table()
    folder = write_folder(tmp_path / "f", {"NaCl": crystals()["NaCl"]})
    before = sorted(p.name for p in folder.iterdir())
    data = CIFData(folder, atom_init=table)
    (atom_fea, _, _), _, _ = data[0]
    assert atom_fea.shape == (8, 92)
    assert sorted(p.name for p in folder.iterdir()) == before


# --- batches and caches -----------------------------------------------------


def test_collate_pool_offsets(cif_folder):
    data = CIFData(cif_folder)
    items = [data[i] for i in range(3)]
    (atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx), target, ids = collate_pool(items)
    sizes = [item[0][0].shape[0] for item in items]
    assert atom_fea.shape == (sum(sizes), 92)
    assert nbr_fea.shape == (sum(sizes), 12, 41)
    assert target.shape == (3, 1)
    assert ids == ["Si", "NaCl", "GaAs"]
    start = 0
    for (fea, _, idx), atoms, n in zip([item[0] for item in items], crystal_atom_idx, sizes):
        assert torch.equal(atoms, torch.arange(start, start + n))
        assert torch.equal(nbr_fea_idx[start : start + n], idx + start)
        assert torch.equal(atom_fea[start : start + n], fea)
        start += n


def test_disk_cache_identical_and_used(cif_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    plain = CIFData(cif_folder)
    first = CIFData(cif_folder, cache_dir=cache)
    expected = [plain[i] for i in range(len(plain))]
    for i, (want, got) in enumerate(zip(expected, (first[i] for i in range(len(first))))):
        for a, b in zip(want[0], got[0]):
            assert torch.equal(a, b), i
    assert len(list(cache.glob("*.graph"))) == len(plain)

    def fail(*args, **kwargs):
        raise AssertionError("graph rebuilt although cached on disk")

    monkeypatch.setattr(cgcnn.data.dataset, "build_graph", fail)  # the names CIFData.graph calls
    monkeypatch.setattr(cgcnn.data.dataset, "read_structure", fail)
    second = CIFData(cif_folder, cache_dir=cache)
    for i in range(len(second)):
        for a, b in zip(expected[i][0], second[i][0]):
            assert torch.equal(a, b), i


def test_disk_cache_keyed_by_graph_params(cif_folder, tmp_path):
    cache = tmp_path / "cache"
    CIFData(cif_folder, cache_dir=cache)[0]
    with pytest.warns(UserWarning):
        CIFData(cif_folder, params=GraphParams(radius=3.0), cache_dir=cache)[0]
    assert len(list(cache.glob("*.graph"))) == 2


def test_atom_init_json_written_by_fixture_is_92_long(cif_folder):
    table = json.loads((cif_folder / "atom_init.json").read_text())
    assert {len(v) for v in table.values()} == {92}


# --- the on-disk graph cache: entries are verified, the folder checked ------------------------------


def _cached_entries(cache):
    return sorted(cache.glob("*" + cgcnn.data.CACHE_SUFFIX))


def _items_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0]))


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped byte", "other crystal", "not ours"])
def test_disk_cache_bad_entry_is_rebuilt(cif_folder, tmp_path, damage):
    cache = tmp_path / "cache"
    first = CIFData(cif_folder, cache_dir=cache)
    expected = [first[i] for i in range(len(first))]
    entries = {p.name: p.read_bytes() for p in _cached_entries(cache)}
    key_si = first._disk_key(first.cif_path(0))
    target = cache / f"{key_si}{cgcnn.data.CACHE_SUFFIX}"
    if damage == "empty":
        target.write_bytes(b"")
    elif damage == "truncated":
        target.write_bytes(entries[target.name][:-50])
    elif damage == "flipped byte":
        data = bytearray(entries[target.name])
        data[-8] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "other crystal":  # NaCl's entry (a valid file) under Si's name
        key_nacl = first._disk_key(first.cif_path(1))
        target.write_bytes(entries[f"{key_nacl}{cgcnn.data.CACHE_SUFFIX}"])
    else:  # a plain .npy graph array (the old layout), of the right shape
        import io

        buf = io.BytesIO()
        np.save(buf, np.zeros((8, 25)))
        target.write_bytes(buf.getvalue())
    second = CIFData(cif_folder, cache_dir=cache)
    assert _items_equal(second[0], expected[0])  # rebuilt, not the bad entry
    assert target.read_bytes() == entries[target.name]  # and the entry is repaired
    for i in range(1, len(second)):
        assert _items_equal(second[i], expected[i])


def test_disk_cache_good_entry_is_used(cif_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    CIFData(cif_folder, cache_dir=cache)[1]
    monkeypatch.setattr(cgcnn.data.dataset, "read_structure", lambda *a, **k: pytest.fail("rebuilt a good entry"))
    CIFData(cif_folder, cache_dir=cache)[1]


def test_cache_dir_is_a_file(cif_folder, tmp_path):
    not_a_folder = tmp_path / "graphs.txt"
    not_a_folder.write_text("my notes\n")
    with pytest.raises(InputError, match="existing file, not a folder") as err:
        CIFData(cif_folder, cache_dir=not_a_folder)
    assert "graphs.txt" in str(err.value) and "\n" not in str(err.value)
    assert not_a_folder.read_text() == "my notes\n"


def test_cache_dir_below_a_file(cif_folder, tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="cannot write to the graph cache folder") as err:
        CIFData(cif_folder, cache_dir=tmp_path / "f" / "graphs")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_cache_dir_read_only(cif_folder, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write to the graph cache folder"):
            CIFData(cif_folder, cache_dir=ro)
    finally:
        ro.chmod(0o700)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, which no one can write to")
def test_cache_dir_in_a_read_only_place(cif_folder):
    with pytest.raises(InputError, match="cannot write to the graph cache folder") as err:
        CIFData(cif_folder, cache_dir="/proc/cgcnn-graphs")
    assert "\n" not in str(err.value)
