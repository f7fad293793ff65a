"""The crystal graph of upstream CGCNN: its parameters, neighbour lists and Gaussian edge features.

Graph (Xie & Grossman, PRL 120, 145301 (2018), Eq. 1 and Supplementary):
every site's neighbours within ``radius`` under periodic boundaries, sorted by
distance with a *stable* sort, the nearest ``max_num_nbr`` kept; a site with fewer
is padded with index 0 and distance ``radius + 1``.  Edge features are the
Gaussian expansion ``exp(-(d - mu_k)^2 / step^2)``, ``mu_k = arange(dmin,
radius + step, step)``.

A :class:`Graph` is the compact form (atomic numbers, neighbour distances and indices);
the Gaussian expansion is applied when a dataset item is read (:mod:`cgcnn.data.dataset`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from cgcnn import InputError

if TYPE_CHECKING:  # pymatgen is imported only when a CIF is parsed (cached graphs need none)
    from pymatgen.core import Structure

__all__ = ["GraphParams", "GaussianDistance", "Graph", "MAX_NEIGHBOURS", "check_neighbour_count", "build_graph"]


@dataclass(frozen=True)
class GraphParams:
    """Parameters of the crystal graph (upstream defaults).

    Parameters
    ----------
    radius : float
        Neighbour cut-off radius in Å (8).
    max_num_nbr : int
        Neighbours kept per site, M (12).
    dmin : float
        First Gaussian centre in Å (0).
    step : float
        Spacing and width of the Gaussians in Å (0.2).
    """

    radius: float = 8.0
    max_num_nbr: int = 12
    dmin: float = 0.0
    step: float = 0.2

    @property
    def nbr_fea_len(self) -> int:
        """Number of Gaussian edge features (41 for the defaults)."""
        return len(GaussianDistance(self.dmin, self.radius, self.step).filter)

    def as_dict(self) -> dict:
        """The parameters as a plain dict (stored in checkpoints)."""
        return {k: (float(v) if isinstance(v, float) else int(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> GraphParams:
        """The parameters a loaded checkpoint records under ``graph``; upstream's defaults for
        those it does not record (upstream checkpoints record none)."""
        graph = ckpt.get("graph") or {}
        return cls(**{k: graph[k] for k in ("radius", "max_num_nbr", "dmin", "step") if k in graph})


class GaussianDistance:
    """Expand distances in a basis of Gaussians (upstream ``GaussianDistance``).

    ``exp(-(d - mu_k)^2 / var^2)`` with ``mu_k = np.arange(dmin, dmax + step, step)``
    and ``var = step`` unless given.

    Raises
    ------
    ValueError
        If ``dmin >= dmax`` or ``dmax - dmin <= step``.
    """

    def __init__(self, dmin: float, dmax: float, step: float, var: float | None = None):
        if not (dmin < dmax and dmax - dmin > step):
            raise ValueError(f"bad Gaussian basis: dmin {dmin}, dmax {dmax}, step {step}")
        self.filter = np.arange(dmin, dmax + step, step)
        self.var = step if var is None else var

    def expand(self, distances: np.ndarray) -> np.ndarray:
        """Distances of any shape ``(...)`` in Å to features of shape ``(..., K)``."""
        return np.exp(-((distances[..., np.newaxis] - self.filter) ** 2) / self.var**2)


MAX_NEIGHBOURS = 1000
"""Most neighbours per site, on average, within the graph's radius (:func:`check_neighbour_count`).

Estimated from the density, N / V x 4/3 pi r^3: about 380 within 8 Å in diamond, the
densest common solid; a cell given in nm (1000 times denser) would need about 1000 times
the memory of the real crystal's graph.
"""


def check_neighbour_count(structure: Structure, radius: float, source: str | os.PathLike,
                          limit: int | None = None) -> None:
    """Refuse a crystal too dense for its neighbour list within ``radius`` (Å) to fit in memory.

    Raises
    ------
    InputError
        If N / V * 4/3 * pi * radius^3 (neighbours per site, V in Å^3) exceeds ``limit``
        (default :data:`MAX_NEIGHBOURS`), or the cell has no volume.
    """
    limit = MAX_NEIGHBOURS if limit is None else limit
    volume = float(structure.lattice.volume)
    n = len(structure)
    if not volume > 0:
        raise InputError(f"{source}: zero-volume cell")
    per_site = n / volume * 4 / 3 * math.pi * radius**3
    if per_site > limit:
        raise InputError(f"{source}: {n} atoms in {volume:.4g} Å^3 give about {per_site:.0f} neighbours per site "
                         f"within {radius} Å, more than the limit of {limit} (cgcnn.data.MAX_NEIGHBOURS); "
                         "are the cell lengths in Å?")


@dataclass
class Graph:
    """A crystal graph in compact form (before the Gaussian expansion).

    Attributes
    ----------
    numbers : ndarray of shape (N,)
        Atomic numbers of the N sites.
    nbr_dist : ndarray of shape (N, M)
        Distances in Å to the M nearest neighbours (radius + 1 where padded).
    nbr_fea_idx : ndarray of shape (N, M)
        Site indices of those neighbours (0 where padded).
    """

    numbers: np.ndarray
    nbr_dist: np.ndarray
    nbr_fea_idx: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.numbers.nbytes + self.nbr_dist.nbytes + self.nbr_fea_idx.nbytes

    def to_array(self) -> np.ndarray:
        """One float64 array of shape (N, 1 + 2M): atomic number, M distances, M indices
        (integers below 2**53 are exact in float64); one file read per cached graph."""
        return np.hstack([self.numbers[:, None], self.nbr_dist, self.nbr_fea_idx]).astype(np.float64)

    @classmethod
    def from_array(cls, arr: np.ndarray) -> Graph:
        """Inverse of :meth:`to_array`.  Raises ``ValueError`` for an array of another shape."""
        if arr.ndim != 2 or arr.shape[1] % 2 != 1 or arr.shape[1] < 3:
            raise ValueError(f"not a cached graph: array of shape {arr.shape}")
        m = (arr.shape[1] - 1) // 2
        return cls(arr[:, 0].astype(np.int64), np.ascontiguousarray(arr[:, 1:1 + m]),
                   arr[:, 1 + m:].astype(np.int64))


def build_graph(structure: Structure, params: GraphParams = GraphParams(), name: str = "") -> Graph:
    """Neighbour lists of a crystal, as upstream CGCNN builds them.

    Neighbours come from pymatgen's vectorised ``Structure.get_neighbor_list``; per
    centre a stable sort by distance keeps the first ``max_num_nbr``, which reproduces
    upstream's ``get_all_neighbors`` + ``sorted`` including the order among ties.

    Warns (``UserWarning``, naming ``name``) when a site has fewer than ``max_num_nbr``
    neighbours within the radius; such rows are padded with index 0, distance radius + 1.

    Raises
    ------
    InputError
        If the crystal is too dense for its neighbour list to be built
        (:func:`check_neighbour_count`), naming ``name``.
    """
    check_neighbour_count(structure, params.radius, name or structure.composition.reduced_formula)
    n = len(structure)
    m = params.max_num_nbr
    centers, points, _, dists = structure.get_neighbor_list(r=params.radius)
    order = np.lexsort((dists, centers))  # stable: ties keep get_neighbor_list order
    centers, points, dists = centers[order], points[order], dists[order]
    counts = np.bincount(centers, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(centers)) - starts[centers]
    keep = rank < m
    nbr_idx = np.zeros((n, m), dtype=np.int64)
    nbr_dist = np.full((n, m), params.radius + 1.0, dtype=np.float64)
    nbr_idx[centers[keep], rank[keep]] = points[keep]
    nbr_dist[centers[keep], rank[keep]] = dists[keep]
    if (counts < m).any():
        warnings.warn(
            f"{name or structure.composition.reduced_formula}: {int((counts < m).sum())} site(s) have fewer than "
            f"{m} neighbours within {params.radius} Å; padded as upstream CGCNN (consider a larger radius)",
            stacklevel=2,
        )
    numbers = np.array([site.specie.Z for site in structure], dtype=np.int64)
    return Graph(numbers, nbr_dist, nbr_idx)
