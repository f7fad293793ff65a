"""Shared fixtures: small crystals built in code, CGCNN data folders and small random checkpoints."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from cgcnn.model import CrystalGraphConvNet

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def crystals() -> dict[str, Structure]:
    """Four small cubic crystals (conventional cells, 8 sites each), fresh copies."""
    return {name: structure.copy() for name, structure in _crystals().items()}


@functools.cache
def _crystals() -> dict[str, Structure]:
    # Structure.from_spacegroup takes about 0.25 s per call (pymatgen's SpaceGroup set-up)
    return {
        "NaCl": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Si": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]),
        "MgO": Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "GaAs": Structure.from_spacegroup("F-43m", Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
    }


def one_hot_table(length: int = 92, zmax: int = 100) -> dict[str, list[float]]:
    """A simple atom feature table: one bit per element, wrapping after ``length``."""
    table = {}
    for z in range(1, zmax + 1):
        vec = [0.0] * length
        vec[(z - 1) % length] = 1.0
        table[str(z)] = vec
    return table


@pytest.fixture(scope="session")
def atom_init_table() -> dict[str, list[float]]:
    """The project's ``cgcnn/data/atom_init.json`` if present, else a 92-long one-hot table."""
    shipped = REPO / "cgcnn" / "data" / "atom_init.json"
    if shipped.is_file():
        return json.loads(shipped.read_text())
    return one_hot_table()


def write_folder(
    folder: Path,
    structures: dict[str, Structure],
    targets: dict[str, float] | None = None,
    atom_init: dict | None = None,
    id_prop: bool = True,
) -> Path:
    """Write a CGCNN data folder: ``<id>.cif`` files, ``id_prop.csv`` (in dict order,
    with targets when given) and ``atom_init.json`` (when given)."""
    folder.mkdir(parents=True, exist_ok=True)
    for cif_id, structure in structures.items():
        CifWriter(structure).write_file(str(folder / f"{cif_id}.cif"))
    if id_prop:
        rows = [f"{i},{targets[i]}" if targets is not None else i for i in structures]
        (folder / "id_prop.csv").write_text("\n".join(rows) + "\n")
    if atom_init is not None:
        (folder / "atom_init.json").write_text(json.dumps(atom_init))
    return folder


TARGETS = {"Si": 2.17, "NaCl": 0.85, "GaAs": 1.65, "MgO": 1.78}  # log10 κ_L, roughly


@pytest.fixture
def cif_folder(tmp_path, atom_init_table) -> Path:
    """A data folder of Si, NaCl, GaAs, MgO (in that, non-alphabetical, order) with targets."""
    all_ = crystals()
    ordered = {k: all_[k] for k in TARGETS}
    return write_folder(tmp_path / "data", ordered, TARGETS, atom_init_table)


def make_checkpoint(
    path: Path,
    seed: int = 0,
    classification: bool = False,
    legacy: bool = False,
    orig_atom_fea_len: int = 92,
    nbr_fea_len: int = 41,
    **extra,
) -> Path:
    """Save a small random CGCNN in the upstream checkpoint layout.

    The BatchNorm running statistics are randomised too, so that evaluation mode
    differs visibly from training mode.  ``extra`` items are added to the dict.
    """
    torch.manual_seed(seed)
    net = CrystalGraphConvNet(
        orig_atom_fea_len, nbr_fea_len, atom_fea_len=8, n_conv=1, h_fea_len=4, classification=classification
    )
    for name, buf in net.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.1 * torch.randn_like(buf))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand_like(buf))
    ckpt = {
        "epoch": 3,
        "state_dict": net.state_dict(),
        "best_mae_error": 0.25 if not classification else 0.5,
        "optimizer": torch.optim.SGD(net.parameters(), lr=0.01).state_dict(),
        "normalizer": {"mean": torch.tensor(1.5), "std": torch.tensor(0.5)},
        "args": {
            "task": "classification" if classification else "regression",
            "atom_fea_len": 8, "h_fea_len": 4, "n_conv": 1, "n_h": 1, "lr": 0.01, "batch_size": 256,
        },
    }
    ckpt.update(extra)
    if legacy:
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(ckpt, path)
    return path


@pytest.fixture
def small_model(tmp_path) -> Path:
    """A small random regression checkpoint (upstream layout, zip format)."""
    return make_checkpoint(tmp_path / "small.pth.tar")
