"""The graph cache trusts no entry (issue 24, class 6).

An entry's checksum only finds damage: an entry rewritten with its own new checksum (here
with the project's own writer) must still not be used when its atomic numbers are not
those of its CIF, or its array is not a graph (shape, dtype, atomic numbers, neighbour
indices, distances).  Each tampered entry must give the right graph (rebuilt, with a
warning naming the CIF) and the entry repaired; through the command line, the same
predictions as without a cache, exit 0, no traceback.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest
import torch

import cgcnn.data.dataset
import cgcnn.data.graphcache
from cgcnn import predict
from cgcnn.cli import run_main
from cgcnn.crystals import site_numbers
from cgcnn.data import CACHE_SUFFIX, CIFData, Graph, GraphParams, check_graph_array, write_cached_graph
from cgcnn.data.graphcache import _CACHE_MAGIC


def rewrite(file, key, arr: np.ndarray) -> None:
    """Write ``arr`` as the payload of ``file`` with a valid header and checksum (a forged entry)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    payload = buf.getvalue()
    file.write_bytes(_CACHE_MAGIC + key.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n"
                     + payload)


def items_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0]))


def tamper(graph: Graph, kind: str):
    """A graph (or a raw array) altered as ``kind`` says."""
    numbers, dist, idx = graph.numbers.copy(), graph.nbr_dist.copy(), graph.nbr_fea_idx.copy()
    if kind == "other element":
        numbers[:] = 6
    elif kind == "one site changed":
        numbers[0] = numbers[-1]
    elif kind == "reversed":
        numbers = numbers[::-1].copy()
    elif kind == "atomic number 0":
        numbers[0] = 0
    elif kind == "atomic number 200":
        numbers[0] = 200
    elif kind == "index out of range":
        idx[0, 0] = len(numbers)
    elif kind == "negative index":
        idx[0, 0] = -1
    elif kind == "NaN distance":
        dist[0, 0] = np.nan
    elif kind == "zero distance":
        dist[0, 0] = 0.0
    elif kind == "distance too long":
        dist[0, -1] = 100.0
    elif kind == "unsorted distances":
        dist[0] = dist[0][::-1].copy()
    arr = Graph(numbers, dist, idx).to_array()
    if kind == "fractional atomic number":
        arr[0, 0] += 0.5
    elif kind == "wrong shape":
        arr = arr[:, :-2]
    elif kind == "float32":
        arr = arr.astype(np.float32)
    elif kind == "no sites":
        arr = arr[:0]
    return arr


KINDS = ["other element", "one site changed", "reversed", "atomic number 0", "atomic number 200",
         "fractional atomic number", "index out of range", "negative index", "NaN distance", "zero distance",
         "distance too long", "unsorted distances", "wrong shape", "float32", "no sites"]


@pytest.mark.parametrize("kind", KINDS)
def test_forged_entry_is_rebuilt(cif_folder, tmp_path, kind):
    cache = tmp_path / "cache"
    first = CIFData(cif_folder, cache_dir=cache)
    expected = [first[i] for i in range(len(first))]
    row = 1  # NaCl: two elements, 4 + 4 sites
    key = first._disk_key(first.cif_path(row))
    entry = cache / f"{key}{CACHE_SUFFIX}"
    good = entry.read_bytes()
    rewrite(entry, key, tamper(first.graph(row), kind))
    with pytest.warns(UserWarning, match="NaCl.cif: cached graph .* damaged or altered"):
        second = CIFData(cif_folder, cache_dir=cache)
        got = second[row]
    assert items_equal(got, expected[row])
    assert entry.read_bytes() == good  # repaired
    for i in range(len(second)):
        assert items_equal(second[i], expected[i])


def test_forged_entry_written_by_the_project_writer(cif_folder, tmp_path):
    """Wrong atomic numbers that pass every check of the file itself: only the CIF shows them."""
    cache = tmp_path / "cache"
    first = CIFData(cif_folder, cache_dir=cache)
    want = first[1]
    graph = first.graph(1)
    key = first._disk_key(first.cif_path(1))
    forged = Graph(np.where(graph.numbers == 11, 17, 11), graph.nbr_dist, graph.nbr_fea_idx)  # Na <-> Cl
    write_cached_graph(cache / f"{key}{CACHE_SUFFIX}", key, forged)
    assert check_graph_array(forged.to_array(), GraphParams()) is None
    with pytest.warns(UserWarning, match="not those of the CIF"):
        got = CIFData(cif_folder, cache_dir=cache)[1]
    assert items_equal(got, want)


@pytest.mark.parametrize("cut", [0, 10, 60, 200])
def test_truncated_entry_is_rebuilt(cif_folder, tmp_path, cut):
    cache = tmp_path / "cache"
    first = CIFData(cif_folder, cache_dir=cache)
    want = first[0]
    entry = cache / f"{first._disk_key(first.cif_path(0))}{CACHE_SUFFIX}"
    entry.write_bytes(entry.read_bytes()[:cut])
    with pytest.warns(UserWarning, match="Si.cif"):
        assert items_equal(CIFData(cif_folder, cache_dir=cache)[0], want)


def test_entry_checked_against_the_structure_when_the_cif_expansion_cannot_tell(cif_folder, tmp_path, monkeypatch):
    """Where gemmi's expansion gives no answer, the structure read from the CIF decides (and is reused)."""
    cache = tmp_path / "cache"
    first = CIFData(cif_folder, cache_dir=cache)
    want = [first[i] for i in range(len(first))]
    monkeypatch.setattr(cgcnn.data.graphcache, "site_numbers", lambda text: None)
    plain = CIFData(cif_folder, cache_dir=cache)
    assert all(items_equal(plain[i], want[i]) for i in range(len(plain)))  # good entries used, no warning
    key = first._disk_key(first.cif_path(1))
    graph = first.graph(1)
    write_cached_graph(cache / f"{key}{CACHE_SUFFIX}", key, Graph(graph.numbers[::-1].copy(), graph.nbr_dist,
                                                                   graph.nbr_fea_idx))
    with pytest.warns(UserWarning, match="not those of the CIF"):
        assert items_equal(CIFData(cif_folder, cache_dir=cache)[1], want[1])


def test_site_numbers_match_the_structures(cif_folder):
    """The cheap reading of a CIF gives the atomic numbers of the structure read from it, site for site."""
    data = CIFData(cif_folder)
    for i in range(len(data)):
        numbers = site_numbers(data.cif_path(i).read_text())
        assert np.array_equal(numbers, data.graph(i).numbers), data.ids[i]


def test_predict_with_a_forged_cache_gives_the_same_predictions(capsys, tmp_path, cif_folder, small_model):
    """python -m cgcnn.predict (the screening path, cgcnn.screening.chunk) rebuilds forged entries."""
    cache = tmp_path / "cache"
    clean, cached = tmp_path / "clean.csv", tmp_path / "cached.csv"
    args = [str(small_model), str(cif_folder), "-q", "-j", "0"]
    assert run_main(predict.main, [*args, "--out", str(clean)]) == 0
    assert run_main(predict.main, [*args, "--out", str(cached), "--cache-dir", str(cache)]) == 0
    data = CIFData(cif_folder)
    for row, kind in [(0, "other element"), (1, "reversed"), (2, "NaN distance"), (3, "index out of range")]:
        key = data._disk_key(data.cif_path(row))
        rewrite(cache / f"{key}{CACHE_SUFFIX}", key, tamper(data.graph(row), kind))
    capsys.readouterr()
    with pytest.warns(UserWarning) as caught:
        assert run_main(predict.main, [*args, "--out", str(cached), "--cache-dir", str(cache)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    altered = [str(w.message) for w in caught if "damaged or altered" in str(w.message)]
    assert len(altered) == 4, altered
    pd.testing.assert_frame_equal(pd.read_csv(clean), pd.read_csv(cached))


def test_a_wrong_cheap_reading_does_not_condemn_a_sound_entry(cif_folder, tmp_path, monkeypatch):
    """Where gemmi's expansion disagrees with the structure, the structure decides: no warning, entry used."""
    import warnings

    cache = tmp_path / "cache"
    first = CIFData(cif_folder, cache_dir=cache)
    want = [first[i] for i in range(len(first))]
    monkeypatch.setattr(cgcnn.data.graphcache, "site_numbers", lambda text: np.array([1], dtype=np.int64))
    monkeypatch.setattr(cgcnn.data.dataset, "build_graph", lambda *a, **k: pytest.fail("rebuilt a sound entry"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = CIFData(cif_folder, cache_dir=cache)
        assert all(items_equal(again[i], want[i]) for i in range(len(again)))
