"""Physical descriptors of a crystal for the last layer: the inputs of Slack's formula.

To first order the lattice thermal conductivity follows Slack's formula
(G. A. Slack, J. Phys. Chem. Solids 34, 321 (1973); D. T. Morelli, G. A. Slack,
in *High Thermal Conductivity Materials*, Springer (2006), ch. 2):

    κ_S = A(γ) · M̄ · θ_a³ · δ · n^(1/3) / (γ² · T),   θ_a = θ_D · n^(-1/3),

with M̄ the mean atomic mass, δ³ the volume per atom, n the number of atoms in the
primitive cell, θ_D the Debye temperature and γ the Grüneisen parameter. AFLOW-AGL
(C. Toher et al., Phys. Rev. B 90, 174107 (2014)) evaluates it with θ_D and γ from
a quasi-harmonic Debye model, and gives A(γ) in SI form (its Eq. 7):

    κ(θ_a) = 0.849·3·4^(1/3) / (20π³·(1 − 0.514/γ + 0.228/γ²)) · (k_B θ_a/ħ)² · k_B M̄ δ / (ħ γ²),
    κ(T) = κ(θ_a) · θ_a / T.

:func:`structure_descriptors` gives the inputs a structure fixes by itself;
:func:`slack_descriptors` adds those that need elastic properties, from source
models trained on AFLOW AEL-AGL bulk and shear moduli and Debye temperature (the
lower-order-property transfer of S. Ju et al., Phys. Rev. Materials (2021),
arXiv:1909.11234): sound velocities, a Debye temperature from them, the Poisson
ratio, the Grüneisen parameter from it (Belomestnykh & Tesleva, Tech. Phys. 49,
1098 (2004), as AFLOW-AGL does) and log10 κ_S.

All outputs are decimal logarithms where a quantity spans decades, so that a
linear last layer on them is a power law, the form of Slack's formula.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "STRUCTURE_DESCRIPTORS",
    "SLACK_DESCRIPTORS",
    "structure_descriptors",
    "debye_from_moduli",
    "gruneisen_from_poisson",
    "slack_kappa",
    "slack_descriptors",
    "structure_type",
    "structure_facts",
    "symmetry_dataset",
]

#: Names and units of the columns of :func:`structure_descriptors`.
STRUCTURE_DESCRIPTORS = (
    "log10 mean atomic mass / amu",
    "log10 volume per atom / Å^3",
    "log10 density / g cm^-3",
    "log10 atoms in primitive cell",
    "number of elements",
)

#: Names and units of the columns of :func:`slack_descriptors`.
SLACK_DESCRIPTORS = (
    "log10 theta_D (model) / K",
    "log10 bulk modulus (model) / GPa",
    "log10 shear modulus (model) / GPa",
    "log10 theta_D from sound velocities / K",
    "Poisson ratio",
    "log10 Slack kappa / W m-1 K-1",
)

_KB = 1.380649e-23  # J/K
_HBAR = 1.054571817e-34  # J s
_AMU = 1.66053906660e-27  # kg
_T = 300.0  # K


def symmetry_dataset(structure, symprec: float = 0.01, angle_tolerance: float = 5.0):
    """spglib's symmetry dataset of an ordered structure's cell, or None when spglib gives up.

    The cell as pymatgen's ``SpacegroupAnalyzer`` gives it to spglib (lattice, fractional
    coordinates, one type per distinct species in order of appearance; spglib's symmetry
    search ignores magnetic moments), with the same tolerances (symprec in Å, angle
    tolerance in degrees); one spglib call (A. Togo, K. Shinohara, I. Tanaka, Sci. Technol.
    Adv. Mater. Meth. 4, 2384822 (2024)).

    Parameters
    ----------
    structure : pymatgen ``Structure``
        Ordered.
    symprec, angle_tolerance : float

    Returns
    -------
    spglib ``SpglibDataset`` or None
    """
    import spglib

    types: dict = {}
    numbers = [types.setdefault(species, len(types) + 1) for species in structure.species]
    cell = (structure.lattice.matrix, structure.frac_coords, numbers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib's notes on its own error handling
        try:
            return spglib.get_symmetry_dataset(cell, symprec=symprec, angle_tolerance=angle_tolerance)
        except Exception:  # spglib >= 2.8 raises where earlier versions returned None
            return None


def _primitive_sites(dataset, n_sites: int) -> int:
    """Atoms in the primitive cell: the cell's atoms over its pure translations (the operations of
    ``dataset`` with the identity rotation); the cell itself without a dataset."""
    if dataset is None:
        return n_sites
    pure = int(np.all(np.asarray(dataset.rotations) == np.eye(3, dtype=int), axis=(1, 2)).sum())
    return n_sites // max(pure, 1)


def _type_label(dataset, n_sites: int) -> str:
    if dataset is None:
        return f"P1-{n_sites}"
    letters = "".join(sorted(set(dataset.wyckoffs)))
    return f"{dataset.number}-{_primitive_sites(dataset, n_sites)}-{letters}"


def structure_type(structure, symprec: float = 0.01) -> str:
    """A structure-type label: space group number, atoms in the primitive cell and occupied
    Wyckoff letters, e.g. ``225-2-ab`` (rock salt), ``216-2-ac`` (zincblende), ``186-4-b``
    (wurtzite), ``225-3-ac`` (fluorite and antifluorite).

    Crystals of one structure prototype share the label (it is the space-group and Wyckoff
    part of an AFLOW prototype label: D. Hicks et al., Comput. Mater. Sci. 161, S1 (2019)),
    so grouping by it keeps a prototype on one side of a split.  All three parts come from
    one spglib symmetry dataset (:func:`symmetry_dataset`); ``P1-<sites>`` when spglib fails.

    Parameters
    ----------
    structure : pymatgen ``Structure``
    symprec : float
        spglib's distance tolerance, Å.
    """
    return _type_label(symmetry_dataset(structure, symprec), len(structure))


def structure_facts(structure, with_type: bool = False) -> tuple[np.ndarray, str | None]:
    """What the last layer and the evaluation take from one crystal's structure, computed together
    (a :class:`cgcnn.data.CIFData` ``structure_info``, so that each CIF is parsed once per run), from at most
    one spglib symmetry dataset.

    Returns
    -------
    descriptors : ndarray of shape (5,), float64
        The row of :func:`structure_descriptors`.
    structure_type : str or None
        :func:`structure_type` when ``with_type``, else None.
    """
    dataset = symmetry_dataset(structure) if with_type else None
    return _descriptor_row(structure, dataset), (_type_label(dataset, len(structure)) if with_type else None)


def structure_descriptors(structures: Sequence) -> np.ndarray:
    """The structure's own inputs of Slack's formula, one row per crystal.

    Parameters
    ----------
    structures : sequence of pymatgen ``Structure``
        Ordered crystals.

    Returns
    -------
    ndarray of shape (n, 5), float64
        Columns :data:`STRUCTURE_DESCRIPTORS`: log10 of the mean atomic mass M̄
        (amu), of the volume per atom δ³ (Å³), of the density (g cm⁻³), of the number
        of atoms n in the primitive cell (spglib, symprec 0.01 Å: :func:`symmetry_dataset`; the cell
        itself without asking spglib where the counts of the species have no common divisor: a pure
        translation maps each species onto itself in orbits of one size, which divides every count),
        and the number of elements.  Slack 1973; Morelli & Slack 2006.
    """
    rows = [_descriptor_row(s) for s in structures]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(STRUCTURE_DESCRIPTORS))


_UNITS: list = []


def _unit_factors() -> tuple[float, float]:
    """pymatgen's amu → g factor and (Å → cm)³, as ``Structure.density`` uses them."""
    if not _UNITS:
        from pymatgen.core.units import Length, Mass

        _UNITS.extend([float(Mass(1.0, "amu").to("g")), float(Length(1, "ang").to("cm")) ** 3])
    return _UNITS[0], _UNITS[1]


def _descriptor_row(structure, dataset=None) -> list[float]:
    """One row of :func:`structure_descriptors`, with pymatgen's arithmetic (the same sums in the same
    order: ``Structure.density``, ``Composition.weight``) without its unit objects; ``dataset``: the
    structure's :func:`symmetry_dataset` where already computed."""
    species = structure.species
    n_sites = len(species)
    masses: dict = {}
    counts: dict = {}
    total = 0.0
    for sp in species:
        mass = masses.get(sp)
        if mass is None:
            mass = masses[sp] = float(sp.atomic_mass)
        total += mass
        counts[sp] = counts.get(sp, 0) + 1
    weight = 0.0
    for sp, amount in counts.items():  # Composition.weight: species in order of appearance, float amounts
        weight += float(amount) * masses[sp]
    amu_g, cm3 = _unit_factors()
    volume = structure.volume
    density = (weight * amu_g) / (volume * cm3)
    n_primitive = n_sites
    if math.gcd(*counts.values()) > 1:  # else no pure translation but the lattice's (docstring above)
        n_primitive = _primitive_sites(symmetry_dataset(structure) if dataset is None else dataset, n_sites)
    return [math.log10(total / n_sites), math.log10(volume / n_sites), math.log10(density),
            math.log10(n_primitive), float(len(counts))]


def debye_from_moduli(bulk_gpa, shear_gpa, density_g_cm3, volume_per_atom_a3):
    """Debye temperature (K) from the elastic moduli through the mean sound velocity.

    v_t = √(G/ρ), v_l = √((B + 4G/3)/ρ), v_m = [(2/v_t³ + 1/v_l³)/3]^(-1/3),
    θ_D = (ħ/k_B)·(6π²/V_atom)^(1/3)·v_m (O. L. Anderson, J. Phys. Chem. Solids 24, 909 (1963)).

    Parameters are arrays of equal shape: B and G in GPa, ρ in g cm⁻³, V_atom in Å³.
    """
    rho = np.asarray(density_g_cm3, float) * 1e3
    b = np.asarray(bulk_gpa, float) * 1e9
    g = np.asarray(shear_gpa, float) * 1e9
    vt = np.sqrt(g / rho)
    vl = np.sqrt((b + 4.0 * g / 3.0) / rho)
    vm = ((2.0 / vt**3 + 1.0 / vl**3) / 3.0) ** (-1.0 / 3.0)
    n_per_m3 = 1.0 / (np.asarray(volume_per_atom_a3, float) * 1e-30)
    return _HBAR / _KB * (6.0 * math.pi**2 * n_per_m3) ** (1.0 / 3.0) * vm


def gruneisen_from_poisson(poisson):
    """Grüneisen parameter γ = 3(1 + ν) / (2(2 − 3ν)) from the Poisson ratio ν
    (Belomestnykh & Tesleva, Tech. Phys. 49, 1098 (2004); AFLOW-AGL, Toher et al. 2014)."""
    nu = np.asarray(poisson, float)
    return 1.5 * (1.0 + nu) / (2.0 - 3.0 * nu)


def slack_kappa(theta_d, gamma, mean_mass_amu, volume_per_atom_a3, n_primitive, temperature: float = _T):
    """Slack's κ_L (W m⁻¹ K⁻¹), in the SI form of AFLOW-AGL (Toher et al. 2014, Eq. 7).

    Parameters are arrays of equal shape: θ_D (K), γ, M̄ (amu), V_atom (Å³), n;
    ``temperature`` in K.
    """
    gamma = np.asarray(gamma, float)
    theta_a = np.asarray(theta_d, float) * np.asarray(n_primitive, float) ** (-1.0 / 3.0)
    a = 0.849 * 3.0 * 4.0 ** (1.0 / 3.0) / (20.0 * math.pi**3 * (1.0 - 0.514 / gamma + 0.228 / gamma**2))
    delta = np.asarray(volume_per_atom_a3, float) ** (1.0 / 3.0) * 1e-10
    mass = np.asarray(mean_mass_amu, float) * _AMU
    k_theta = a * (_KB * theta_a / _HBAR) ** 2 * _KB * mass * delta / (_HBAR * gamma**2)
    return k_theta * theta_a / temperature


def slack_descriptors(structure_desc: np.ndarray, log10_debye, log10_bulk, log10_shear) -> np.ndarray:
    """Descriptors from predicted elastic properties, and Slack's κ from them.

    Parameters
    ----------
    structure_desc : ndarray of shape (n, 5)
        :func:`structure_descriptors` of the crystals.
    log10_debye, log10_bulk, log10_shear : ndarray of shape (n,)
        Predicted log10 θ_D (K), log10 bulk modulus B (GPa) and log10 shear modulus
        G (GPa), e.g. by the bundled models trained on AFLOW AEL-AGL.

    Returns
    -------
    ndarray of shape (n, 6), float64
        Columns :data:`SLACK_DESCRIPTORS`: the three inputs, log10 θ_D from the sound
        velocities (:func:`debye_from_moduli`), the Poisson ratio
        ν = (3B − 2G)/(2(3B + G)) (clipped to [−0.5, 0.45]), and log10 κ_S
        (:func:`slack_kappa` at 300 K with the model's θ_D and γ from ν).
    """
    sd = np.asarray(structure_desc, float)
    mass, vol, dens, n_prim = 10 ** sd[:, 0], 10 ** sd[:, 1], 10 ** sd[:, 2], 10 ** sd[:, 3]
    b, g = 10 ** np.asarray(log10_bulk, float), 10 ** np.asarray(log10_shear, float)
    theta = 10 ** np.asarray(log10_debye, float)
    nu = np.clip((3 * b - 2 * g) / (2 * (3 * b + g)), -0.5, 0.45)
    gamma = gruneisen_from_poisson(nu)
    theta_v = debye_from_moduli(b, g, dens, vol)
    kappa = slack_kappa(theta, gamma, mass, vol, n_prim)
    return np.column_stack([np.asarray(log10_debye, float), np.asarray(log10_bulk, float),
                            np.asarray(log10_shear, float), np.log10(theta_v), nu, np.log10(kappa)])
