"""κ_L of one crystal from anharmonic lattice dynamics with a machine-learning interatomic potential.

The protocol of the Matbench Discovery κ_L task (B. Póta, P. Ahlawat, G. Csányi and M. Simoncelli,
"Thermal conductivity predictions with foundation atomistic models", arXiv:2408.00755, 2024), with the
potential in place of DFT:

1. relax the primitive cell with the same potential (ASE ``FIRE`` on a ``FrechetCellFilter``, with
   ``FixSymmetry``; stop at a largest force of ``fmax`` eV/Å or after ``max_steps``);
2. second-order force constants (fc2) from single finite displacements (phonopy/phono3py); the harmonic
   frequencies on the q-mesh are checked for imaginary modes: a crystal with one is dynamically unstable
   at 0 K in this potential and gets no BTE value (a ``reason`` instead);
3. third-order force constants (fc3) from pairs of displacements, pairs farther apart than a cut-off
   left out (A. Togo, L. Chaput and I. Tanaka, Phys. Rev. B 91, 094306 (2015));
4. the phonon Boltzmann transport equation at ``temperature`` in the relaxation-time approximation
   (``rta``) or solved directly (``lbte``, Chaput, PRL 110, 265506 (2013)), with isotope scattering at
   natural abundance (S. Tamura, PRB 27, 858 (1983)); κ_L is the mean of the diagonal, κ = (κ_xx + κ_yy +
   κ_zz)/3 in W m⁻¹ K⁻¹.

The heavy packages (ase, phonopy, phono3py, sevenn) are imported inside the functions that need them;
:func:`require` turns a missing one into an :class:`~cgcnn.InputError` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from cgcnn import InputError

__all__ = ["POTENTIALS", "BTESettings", "BTEValue", "bte_kappa", "choose_supercell", "imaginary_modes",
           "load_potential", "relax", "require", "thread_limits"]

#: The pre-trained SevenNet potentials shipped inside the ``sevenn`` wheel (no download at run time).
POTENTIALS = ("7net-l3i5", "7net-0")


def require(module: str):
    """Import one of the refine extra's packages, or raise :class:`InputError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise InputError(f"{top} is not installed: cgcnn.refine needs the refine extra "
                         "(pip install .[refine])") from None


@dataclass(frozen=True)
class BTESettings:
    """Every setting that changes κ_L (all recorded with the results).

    Attributes
    ----------
    potential : str
        The potential's name as recorded: a SevenNet model shipped with sevenn (:data:`POTENTIALS`), which
        :func:`load_potential` loads, or the name of a calculator given to :func:`bte_kappa`.
    min_height : float
        Å; each supercell multiple is the smallest n with n · (height of the primitive cell across that
        axis) ≥ ``min_height`` (:func:`choose_supercell`); 6 Å gives 2×2×2 for Si, NaCl and PbTe.
    supercell : tuple[int, int, int] or None
        A fixed diagonal supercell instead of the rule above.
    cutoff : float or None
        Å; fc3 displacement pairs farther apart are left out (None: all pairs).
    mesh : tuple[int, int, int]
        q-point sampling mesh of the BTE.
    temperature : float
        K.
    method : str
        ``rta`` or ``lbte``.
    isotopes : bool
        Isotope scattering at natural abundance.
    displacement : float
        Å, finite displacement amplitude (phono3py's default 0.03).
    fmax, max_steps : float, int
        Relaxation stop: largest force in eV/Å, or number of FIRE steps (Matbench: 1e-4, 300).
    symprec : float
        Å, symmetry tolerance of the primitive cell, FixSymmetry and phono3py.
    imag_tol : float
        THz; the three acoustic modes at Γ may be as low as −imag_tol (numerical noise), every other mode
        must be ≥ 0 (the rule of Matbench Discovery's κ task).
    """

    potential: str = "7net-l3i5"
    min_height: float = 6.0
    supercell: tuple[int, int, int] | None = None
    cutoff: float | None = 4.0
    mesh: tuple[int, int, int] = (11, 11, 11)
    temperature: float = 300.0
    method: str = "rta"
    isotopes: bool = True
    displacement: float = 0.03
    fmax: float = 1e-4
    max_steps: int = 300
    symprec: float = 1e-5
    imag_tol: float = 0.01

    def __post_init__(self):
        if self.method not in ("rta", "lbte"):
            raise InputError(f"unknown BTE method {self.method!r}; rta or lbte")
        if self.supercell is not None and (len(self.supercell) != 3 or min(self.supercell) < 1):
            raise InputError(f"supercell {self.supercell}: three whole numbers ≥ 1")
        if len(self.mesh) != 3 or min(self.mesh) < 1:
            raise InputError(f"mesh {self.mesh}: three whole numbers ≥ 1")
        if not self.temperature > 0 or (self.cutoff is not None and not self.cutoff > 0):
            raise InputError("temperature and cut-off must be positive")
        if not (self.min_height > 0 and self.displacement > 0 and self.fmax > 0 and self.max_steps >= 0):
            raise InputError("min-height, displacement and fmax must be positive, max-steps ≥ 0")

    def record(self) -> dict:
        """The settings as a JSON-friendly dict (for the work folder's manifest)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class BTEValue:
    """The outcome for one crystal: κ_L in W m⁻¹ K⁻¹ (None with a ``reason`` when there is none)."""

    kappa: float | None
    converged: bool
    reason: str
    supercell: tuple[int, int, int]
    seconds: float
    details: dict = field(default_factory=dict)


def choose_supercell(cell: np.ndarray, min_height: float) -> tuple[int, int, int]:
    """Diagonal supercell multiples of a cell: n_i = ceil(min_height / h_i), h_i = V / |a_j × a_k|.

    Parameters
    ----------
    cell : ndarray (3, 3)
        Lattice vectors as rows, Å.
    min_height : float
        Å, the smallest distance between opposite faces of the supercell.
    """
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    heights = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return tuple(max(1, math.ceil(min_height / h - 1e-6)) for h in heights)


@contextlib.contextmanager
def thread_limits(threads: int):
    """Run the enclosed code on ``threads`` threads: torch's intra-op pool and, through threadpoolctl, the
    BLAS and OpenMP libraries loaded (phono3py's, numpy's); the previous numbers are restored after."""
    from threadpoolctl import threadpool_limits

    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch = None
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def load_potential(name: str, device: str = "cpu"):
    """The SevenNet ASE calculator of a potential shipped in the ``sevenn`` wheel (works offline).

    Raises
    ------
    InputError
        A name not in :data:`POTENTIALS` (one that would be downloaded at run time), or sevenn missing.
    """
    if name not in POTENTIALS:
        raise InputError(f"unknown potential {name!r}; one of {', '.join(POTENTIALS)} (the weights shipped "
                         "inside the sevenn wheel; nothing is downloaded)")
    calculator = require("sevenn.calculator")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tensor product accelerator": a speed note, not a problem
        return calculator.SevenNetCalculator(name, device=device)


def relax(structure, calc, settings: BTESettings):
    """The primitive standard cell of a pymatgen ``Structure`` relaxed with ``calc`` (module docstring, 1).

    Returns
    -------
    (ase.Atoms, bool, int)
        The relaxed cell, whether the largest force fell below ``fmax``, FIRE steps taken.
    """
    require("ase")
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from threadpoolctl import threadpool_limits

    primitive = SpacegroupAnalyzer(structure, symprec=1e-3).get_primitive_standard_structure()
    atoms = AseAtomsAdaptor.get_atoms(primitive)
    atoms.calc = calc
    atoms.set_constraint(FixSymmetry(atoms, symprec=settings.symprec))
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    # the cell filter's 3x3 matrix exponentials: one BLAS thread (several spin, 4x slower on busy cores)
    with threadpool_limits(1, user_api="blas"):
        converged = bool(opt.run(fmax=settings.fmax, steps=settings.max_steps))
    atoms.set_constraint()
    atoms.calc = None
    return atoms, converged, int(opt.nsteps)


def _forces(cells, calc, n_atoms: int) -> np.ndarray:
    """Forces (n_cells, n_atoms, 3) in eV/Å on phonopy supercells; a None cell (a pair beyond the cut-off)
    gets zeros, as phono3py expects."""
    from ase import Atoms

    out = np.zeros((len(cells), n_atoms, 3))
    for i, cell in enumerate(cells):
        if cell is None:
            continue
        atoms = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        atoms.calc = calc
        out[i] = atoms.get_forces()
    return out


def imaginary_modes(frequencies: np.ndarray, tol: float) -> str | None:
    """Why a set of harmonic frequencies (THz, shape (n_q, n_bands), Γ first) is unstable, or None.

    Γ's three acoustic modes may dip to −``tol`` (numerical noise of the acoustic sum rule); any other
    negative frequency (phonopy's sign for imaginary) is an imaginary mode.
    """
    freqs = np.asarray(frequencies, dtype=float)
    if not np.all(np.isfinite(freqs)):
        return "non-finite harmonic frequencies"
    gamma = np.sort(freqs[0])
    worst = min(gamma[:3].min(initial=0.0) + tol, gamma[3:].min(initial=0.0), freqs[1:].min(initial=0.0))
    if worst < 0:
        low = float(min(gamma[:3].min(initial=0.0), gamma[3:].min(initial=0.0), freqs[1:].min(initial=0.0)))
        return f"dynamically unstable at 0 K: imaginary mode of {low:.3f} THz (negative = imaginary)"
    return None


def bte_kappa(structure, settings: BTESettings, calc=None, device: str = "cpu", log=None) -> BTEValue:
    """κ_L of one crystal by the protocol of the module docstring.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        The crystal as read (any cell; its primitive standard cell is used).
    settings : BTESettings
    calc : ASE calculator, optional
        The potential, reused across crystals (default: :func:`load_potential` of ``settings.potential``).
    device : str
        Where the potential runs (``cpu`` or ``cuda``); the BTE runs on the CPU cores.
    log : callable, optional
        Called with a short progress line at each stage.

    Returns
    -------
    BTEValue
        ``kappa`` None with ``reason`` when the crystal is dynamically unstable (:func:`imaginary_modes`):
        the BTE is not run for it.
    """
    require("phono3py")
    from phono3py import Phono3py
    from phonopy.structure.atoms import PhonopyAtoms

    say = log or (lambda _: None)
    start = time.perf_counter()
    calc = calc if calc is not None else load_potential(settings.potential, device)
    atoms, converged, steps = relax(structure, calc, settings)
    supercell = settings.supercell or choose_supercell(atoms.cell.array, settings.min_height)
    say(f"relaxed in {steps} steps (converged: {converged}); supercell {supercell}")
    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())
    ph3 = Phono3py(unit, supercell_matrix=np.diag(supercell), primitive_matrix="P",
                   phonon_supercell_matrix=np.diag(supercell), symprec=settings.symprec, log_level=0)
    ph3.mesh_numbers = list(settings.mesh)
    details = {"relax_steps": steps, "atoms": len(atoms), "volume": round(float(atoms.get_volume()), 4),
               "relax_s": round(time.perf_counter() - start, 1)}

    ph3.generate_fc2_displacements(distance=settings.displacement)
    cells = ph3.phonon_supercells_with_displacements
    ph3.phonon_forces = _forces(cells, calc, len(ph3.phonon_supercell))
    ph3.produce_fc2()
    ph3.symmetrize_fc2()
    details["fc2_cells"] = len(cells)
    ph3.init_phph_interaction()
    ph3.run_phonon_solver()
    freqs, _, grid = ph3.get_phonon_data()
    order = np.argsort(np.abs(grid).sum(axis=1), kind="stable")  # Γ (address 0 0 0) first
    reason = imaginary_modes(freqs[order], settings.imag_tol)
    if reason is not None:
        return BTEValue(None, converged, reason, supercell, time.perf_counter() - start, details)
    details["fc2_s"] = round(time.perf_counter() - start, 1)
    say(f"fc2 from {len(cells)} supercells: stable")

    ph3.generate_displacements(distance=settings.displacement, cutoff_pair_distance=settings.cutoff)
    cells = ph3.supercells_with_displacements
    details["fc3_cells"] = sum(c is not None for c in cells)
    say(f"fc3 from {details['fc3_cells']} supercells")
    ph3.forces = _forces(cells, calc, len(ph3.supercell))
    ph3.produce_fc3()
    ph3.symmetrize_fc3()
    details["fc3_s"] = round(time.perf_counter() - start, 1)
    ph3.init_phph_interaction()
    ph3.run_thermal_conductivity(temperatures=[settings.temperature], is_isotope=settings.isotopes,
                                 is_LBTE=settings.method == "lbte")
    kappa = np.asarray(ph3.thermal_conductivity.kappa)  # (n_sigma, n_temperatures, 6) W/m-K, xx yy zz yz xz xy
    value = float(np.mean(kappa[0, 0, :3]))
    details["bte_s"] = round(time.perf_counter() - start, 1)
    if not math.isfinite(value) or value <= 0:
        return BTEValue(None, converged, f"no finite positive κ from the BTE ({value})", supercell,
                        time.perf_counter() - start, details)
    return BTEValue(value, converged, "", supercell, time.perf_counter() - start, details)
