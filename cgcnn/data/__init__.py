"""Crystal graphs (upstream CGCNN's ``cgcnn.data``): graph parameters, neighbour lists, atom features,
the dataset of a data folder and its batches, the graph cache, graphs built in parallel.

- :mod:`~cgcnn.data.graph`: :class:`GraphParams`, :class:`GaussianDistance`, :class:`Graph`,
  :func:`build_graph` (Xie & Grossman, PRL 120, 145301 (2018), Eq. 1 and Supplementary);
- :mod:`~cgcnn.data.atom_features`: the ``atom_init.json`` table (:func:`load_atom_init`,
  :func:`atom_init_digest`, the bundled :data:`PACKAGE_ATOM_INIT`);
- :mod:`~cgcnn.data.dataset`: a data folder as a dataset of graphs (:class:`CIFData`), its batches
  (:func:`collate_pool`), its graphs built in parallel (:func:`build_graphs`);
- :mod:`~cgcnn.data.pool`: the graph-building process pool that datasets and screening share;
- :mod:`~cgcnn.data.graphcache`: the on-disk graph cache (``--cache-dir``);
- :mod:`~cgcnn.data.datafolder`: data folders written (:func:`save_id_prop`, :func:`write_data_folder`).

The names of upstream's and the previous version's ``cgcnn.data`` module stay importable from here
(``CIFData``, ``collate_pool``, ``GaussianDistance``, ``read_structure``, ``read_id_prop``, ...).

Layer: above :mod:`cgcnn.crystals`.
"""

from cgcnn.crystals import LOG10_KAPPA_RANGE, MAX_SITES, check_log10_kappa, cif_file, read_id_prop, read_structure
from cgcnn.data.atom_features import (
    MAX_ATOM_FEATURES,
    MAX_ATOMIC_NUMBER,
    PACKAGE_ATOM_INIT,
    atom_init_digest,
    atom_table_array,
    atom_table_from_dict,
    load_atom_init,
    missing_elements,
)
from cgcnn.data.datafolder import save_id_prop, write_data_folder
from cgcnn.data.dataset import CIFData, build_graphs, collate_pool
from cgcnn.data.graph import MAX_NEIGHBOURS, GaussianDistance, Graph, GraphParams, build_graph, check_neighbour_count
from cgcnn.data.graphcache import (
    CACHE_SUFFIX,
    CifNumbers,
    check_graph_array,
    graph_cache_key,
    load_cached_graph,
    read_cached_graph,
    write_cached_graph,
)
from cgcnn.data.pool import run_tasks, single_threaded, start_pool

__all__ = ["CACHE_SUFFIX", "CIFData", "CifNumbers", "GaussianDistance", "Graph", "GraphParams", "LOG10_KAPPA_RANGE",
           "MAX_ATOMIC_NUMBER", "MAX_ATOM_FEATURES", "MAX_NEIGHBOURS", "MAX_SITES", "PACKAGE_ATOM_INIT",
           "atom_init_digest", "atom_table_array", "atom_table_from_dict", "build_graph", "build_graphs",
           "check_graph_array", "check_log10_kappa", "check_neighbour_count", "cif_file", "collate_pool",
           "graph_cache_key", "load_atom_init", "load_cached_graph", "missing_elements", "read_cached_graph",
           "read_id_prop", "read_structure", "run_tasks", "save_id_prop", "single_threaded", "start_pool",
           "write_cached_graph", "write_data_folder"]
