"""Crystal-graph building speed: this project's ``build_graph`` against upstream CGCNN.

    python benchmarks/graph_speed.py [FOLDER] [--limit N]

Every ``*.cif`` of FOLDER (default: the shared AFLOW-AGL set, ``../shared/data/
aflow_agl_300K/cif`` next to the repository) is first parsed two ways, timed
separately: ``cgcnn.data.read_structure`` (gemmi-based fast path of ``cgcnn.crystals.cif``,
pymatgen as fallback, plus the geometry checks) and pymatgen's own
``Structure.from_file``; it counts the structures the fast path took and those
whose parsed Structure differs from pymatgen's.  Then its graph is built two ways:

- ``cgcnn.data.build_graph`` (pymatgen's vectorised ``get_neighbor_list`` and a
  stable sort per centre);
- upstream CGCNN's method, written out here as in its ``data.py``
  ``CIFData.__getitem__``: ``get_all_neighbors(radius, include_index=True)``,
  ``sorted(nbrs, key=lambda x: x[1])``, the first ``max_num_nbr`` kept, padding
  with index 0 and distance ``radius + 1``.

Prints structures per second for each, the ratio, and how many crystals' graphs
differ (neighbour indices, or distances by more than 1e-8 Å).

Reference: T. Xie, J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cgcnn.crystals.cif_fast import parse_cif_fast  # noqa: E402
from cgcnn.data import GraphParams, build_graph, read_structure  # noqa: E402

DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "aflow_agl_300K" / "cif"


def upstream_graph(structure, radius: float = 8.0, max_num_nbr: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour indices and distances, shape (N, M) each, exactly as upstream CGCNN builds them."""
    all_nbrs = structure.get_all_neighbors(radius, include_index=True)
    all_nbrs = [sorted(nbrs, key=lambda x: x[1]) for nbrs in all_nbrs]
    nbr_fea_idx, nbr_fea = [], []
    for nbr in all_nbrs:
        if len(nbr) < max_num_nbr:
            nbr_fea_idx.append(list(map(lambda x: x[2], nbr)) + [0] * (max_num_nbr - len(nbr)))
            nbr_fea.append(list(map(lambda x: x[1], nbr)) + [radius + 1.0] * (max_num_nbr - len(nbr)))
        else:
            nbr_fea_idx.append(list(map(lambda x: x[2], nbr[:max_num_nbr])))
            nbr_fea.append(list(map(lambda x: x[1], nbr[:max_num_nbr])))
    return np.array(nbr_fea_idx), np.array(nbr_fea)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER), help="folder of CIF files")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N files (sorted by name)")
    args = parser.parse_args(argv)

    folder = Path(args.folder)
    paths = sorted(folder.glob("*.cif"))[: args.limit]
    if not paths:
        print(f"error: no .cif files in {folder}", file=sys.stderr)
        return 2
    params = GraphParams()

    from pymatgen.core import Structure

    with warnings.catch_warnings():  # imports and first-call set-up, not timed
        warnings.simplefilter("ignore")
        read_structure(paths[0])
        Structure.from_file(str(paths[0]))
    t0 = time.perf_counter()
    structures = [read_structure(p) for p in paths]
    t_parse = time.perf_counter() - t0
    n_sites = sum(len(s) for s in structures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        reference = [Structure.from_file(str(p)) for p in paths]
        t_pymatgen = time.perf_counter() - t0
    n_fast = sum(parse_cif_fast(p.read_text()) is not None for p in paths)
    parsed_differ = [p.stem for p, a, b in zip(paths, structures, reference)
                     if not (np.array_equal(a.lattice.matrix, b.lattice.matrix) and len(a) == len(b)
                             and [x.species for x in a] == [x.species for x in b]
                             and np.array_equal(a.frac_coords, b.frac_coords))]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # padding warnings: both methods pad alike
        t0 = time.perf_counter()
        ours = [build_graph(s, params) for s in structures]
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = [upstream_graph(s, params.radius, params.max_num_nbr) for s in structures]
        t_theirs = time.perf_counter() - t0

    differ, max_dd = [], 0.0
    for path, g, (idx, dist) in zip(paths, ours, theirs):
        dd = float(np.abs(g.nbr_dist - dist).max())
        max_dd = max(max_dd, dd)
        if g.nbr_fea_idx.shape != idx.shape or not np.array_equal(g.nbr_fea_idx, idx) or dd > 1e-8:
            differ.append(path.stem)

    n = len(structures)
    print(f"{n} structures, {n_sites} sites, from {folder}")
    print(f"parse, cgcnn.data.read_structure:     {t_parse:8.2f} s  {n / t_parse:9.1f} structures/s "
          f"({n_fast} of {n} by the fast path)")
    print(f"parse, pymatgen Structure.from_file:  {t_pymatgen:8.2f} s  {n / t_pymatgen:9.1f} structures/s "
          f"(parsing excluded below)")
    print(f"parsed structures differing from pymatgen's: {len(parsed_differ)}"
          f"{' e.g. ' + ', '.join(parsed_differ[:5]) if parsed_differ else ''}")
    print(f"cgcnn.data.build_graph:               {t_ours:8.2f} s  {n / t_ours:9.1f} structures/s")
    print(f"upstream get_all_neighbors + sorted:  {t_theirs:8.2f} s  {n / t_theirs:9.1f} structures/s")
    print(f"speed-up: {t_theirs / t_ours:.1f}x")
    print(f"crystals whose graphs differ (indices, or distances > 1e-8 Å): {len(differ)}"
          f"{' e.g. ' + ', '.join(differ[:5]) if differ else ''}; max distance difference {max_dd:.2e} Å")
    return 0


if __name__ == "__main__":
    sys.exit(main())
