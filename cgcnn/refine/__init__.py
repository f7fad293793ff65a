"""Refine: κ_L from anharmonic lattice dynamics for a shortlist of crystals, the step after the transfer
for crystals it cannot vouch for (structure types absent from its training data).

A universal machine-learning interatomic potential (SevenNet, weights shipped inside the ``sevenn``
wheel) stands in for DFT; phonopy/phono3py give the 2nd- and 3rd-order force constants by finite
displacements and κ_L from the phonon Boltzmann transport equation, as the Matbench Discovery κ task
(Póta et al., arXiv:2408.00755, 2024).  Needs the refine extra (``pip install .[refine]``); the heavy
packages are imported only inside the functions that use them.

- :mod:`~cgcnn.refine.phonons`: one crystal (:func:`bte_kappa`, :class:`BTESettings`, :class:`BTEValue`,
  :func:`choose_supercell`, :func:`imaginary_modes`, :func:`require`);
- :mod:`~cgcnn.refine.rows`: one crystal's row of ``refined.csv`` (:data:`COLUMNS`, :func:`crystal_row`,
  :func:`format_row`);
- :mod:`~cgcnn.refine.run`: a run over many crystals, one shard per crystal, resumable (:func:`refine`,
  :func:`read_crystals`, :func:`shard_folder`), and which crystals (:func:`read_ids`, :func:`read_flagged`: those a
  transfer run flags out of its applicability domain);
- :mod:`~cgcnn.refine.cluster`: the crystals as tasks on a ``dask.distributed`` cluster (``--dask``);
- ``python -m cgcnn.refine`` (console script ``cgcnn-refine``): the command.

Layer: beside :mod:`cgcnn.screening` and :mod:`cgcnn.evaluation`; imports only :mod:`cgcnn.crystals`
and :mod:`cgcnn.outputs` of the project.
"""

from cgcnn.refine.phonons import (
    POTENTIALS,
    BTESettings,
    BTEValue,
    bte_kappa,
    choose_supercell,
    imaginary_modes,
    require,
)
from cgcnn.refine.rows import COLUMNS, crystal_row, format_row
from cgcnn.refine.run import ON_ERROR, RefineSummary, read_crystals, read_flagged, read_ids, refine, shard_folder

__all__ = ["COLUMNS", "ON_ERROR", "POTENTIALS", "BTESettings", "BTEValue", "RefineSummary",
           "bte_kappa", "choose_supercell", "crystal_row", "format_row", "imaginary_modes", "read_crystals",
           "read_flagged", "read_ids", "refine",
           "require", "shard_folder"]
