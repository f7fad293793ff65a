"""Reading CIF files: a fast path through gemmi, pymatgen's ``CifParser`` otherwise.

:func:`read_cif` returns the ``Structure`` that ``Structure.from_file`` (pymatgen's
``CifParser(...).parse_structures(primitive=False)[0]``) returns, site for site and
bit for bit, about ten times faster for the common CIF (the fast path,
:mod:`cgcnn.crystals.cif_fast`): one data block, explicit symmetry operations, fully occupied
sites of plain element symbols.  Whatever the fast path is not sure to read the same
way goes to pymatgen.

Beyond pymatgen, :func:`read_cif` refuses what pymatgen reads silently wrong:

- several data blocks holding atoms (pymatgen takes the first);
- a space group given only by a symbol or Hall symbol pymatgen does not know
  (pymatgen keeps the asymmetric unit as if the group were P1): the symmetry
  operations then come from gemmi's tables, or the file is refused;
- no symmetry at all (no operations, symbol or number): refused, as P1 is a guess;
- a cell angle outside 0 ... 180 degrees (pymatgen takes 200 as 160) and a site
  occupancy of 0 or less, or above 1 (pymatgen drops such sites silently);
- a crystal whose atoms listed and symmetry operations make more sites than the limit
  (:data:`cgcnn.crystals.MAX_SITES`), or more than 192 distinct operations, refused from the
  counts before any symmetry image is made (:mod:`cgcnn.crystals.cif_bounds`); repeated
  operations are applied once.

References
----------
S. P. Ong et al., Comput. Mater. Sci. 68, 314 (2013) (pymatgen);
M. Wojdyr, J. Open Source Softw. 7, 4200 (2022) (gemmi).
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cgcnn import InputError
from cgcnn.crystals.cif_bounds import MAX_SITES, bounded_parser, check_cif_cost
from cgcnn.crystals.cif_fast import cif_number, gemmi_doc, parse_cif_fast

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "MIN_DISTANCE", "read_cif", "check_geometry", "parse_cif_pymatgen", "parse_cif_fast", "count_structure_blocks",
]

_HM_TAGS = (
    "_symmetry_space_group_name_H-M",
    "_symmetry_space_group_name_H_M",
    "_symmetry_space_group_name_H-M_",
    "_symmetry_space_group_name_H_M_",
    "_space_group_name_H-M_alt",
    "_space_group_name_H-M_alt_",
    "_symmetry_space_group_name_h-m",
    "_symmetry_space_group_name_h-m_",
)
_HALL_TAGS = (
    "_space_group_name_Hall",
    "_space_group_name_Hall_",
    "_symmetry_space_group_name_hall",
    "_symmetry_space_group_name_hall_",
    "_symmetry_space_group_name_Hall",
)
_NUMBER_TAGS = (
    "_space_group_IT_number",
    "_space_group_IT_number_",
    "_symmetry_Int_Tables_number",
    "_symmetry_Int_Tables_number_",
)
_NO_P1 = "Defaulting to P1"
_ADDED_OPS = "# symmetry operations added by cgcnn.crystals.cif from the space group symbol"

MIN_DISTANCE = 0.5
"""Shortest distance between atoms, in Å, that :func:`check_geometry` accepts.

The shortest bond in a solid is about 0.74 Å (H2); real inorganic crystals have
none under about 0.9 Å.  Closer atoms mean a mistake: duplicated sites, or a cell
given in nm instead of Å (rock salt then has its atoms 0.28 Å apart)."""


def read_cif(path: str | Path, text: str | None = None, max_sites: int | None = None) -> Structure:
    """Read the one crystal of a CIF file.

    Parameters
    ----------
    path : path
        The CIF file (named in error messages).
    text : str, optional
        Its content, if already read (decoded as UTF-8, bad bytes replaced).
    max_sites : int, optional
        Largest number of sites (default :data:`cgcnn.crystals.MAX_SITES`): a crystal that
        would have more is refused before its symmetry images are made.

    Returns
    -------
    Structure
        As pymatgen's ``CifParser.parse_structures(primitive=False)[0]`` gives it:
        the cell as written, every symmetry image, sites sorted by electronegativity.

    Raises
    ------
    InputError
        If the file cannot be read or parsed, is UTF-16/UTF-32 text or holds NUL bytes,
        holds several data blocks with atoms, gives no symmetry, or a space group that
        neither pymatgen nor gemmi knows, a cell angle outside 0 ... 180 degrees or an
        occupancy of 0 or less or above 1, more than 192 distinct symmetry operations, or
        atoms and operations that make more than ``max_sites`` sites.
    """
    limit = MAX_SITES if max_sites is None else max_sites
    path = Path(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if "\x00" in text:  # UTF-16/32 decoded as UTF-8, or a binary file
        what = ("is UTF-16 or UTF-32 text (it starts with a byte-order mark)" if text[:2] == "\ufffd\ufffd"
                else "holds NUL bytes (UTF-16 text without a byte-order mark, or not text)")
        raise InputError(f"{path}: {what}; save it as UTF-8")
    doc = gemmi_doc(text)
    if doc is not None:
        n_blocks = count_structure_blocks(doc)
        if n_blocks > 1:
            raise InputError(f"{path}: {n_blocks} data blocks with atomic sites; one crystal per CIF file is read "
                             "(split the file)")
        _check_cell(path, doc)
        _check_occupancies(path, doc)
        check_cif_cost(path, doc, limit)
        try:
            structure = parse_cif_fast(text, doc)
        except Exception:  # anything unforeseen: pymatgen decides
            structure = None
        if structure is not None:
            return structure
    return parse_cif_pymatgen(path, text, doc, max_sites=limit)


def count_structure_blocks(doc) -> int:
    """Number of data blocks of a gemmi ``Document`` that list atomic sites."""
    return sum(1 for block in doc if block.find_values("_atom_site_fract_x") or
               block.find_values("_atom_site_Cartn_x") or block.find_values("_atom_site_label"))


# --- geometry ----------------------------------------------------------------------------------


def _cell_text(lengths, angles) -> str:
    a, b, c = (f"{x:.4g}" for x in lengths)
    al, be, ga = (f"{x:.4g}" for x in angles)
    return f"a, b, c = {a}, {b}, {c} Å; alpha, beta, gamma = {al}, {be}, {ga} deg"


def _check_cell(path: Path, doc) -> None:
    """Refuse, from the CIF's six cell parameters and before any parsing, a zero-volume cell
    or a cell length under :data:`MIN_DISTANCE` (each atom then overlaps its own image)."""
    block = doc[0] if len(doc) == 1 else None
    if block is None:
        return
    cell = []
    for tag in ("_cell_length_a", "_cell_length_b", "_cell_length_c",
                "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"):
        value = block.find_value(tag)
        number = cif_number(value.strip("'\"")) if value is not None else None
        if number is None:
            return  # pymatgen decides
        cell.append(number)
    for name, angle in zip(("alpha", "beta", "gamma"), cell[3:]):
        if not 0 <= angle <= 180:  # 0 and 180 give a zero-volume cell, said below
            raise InputError(f"{path}: cell angle {name} = {angle:g} deg lies outside 0 ... 180 "
                             f"({_cell_text(cell[:3], cell[3:])})")
    lengths, angles = cell[:3], np.radians(cell[3:])
    cos = np.cos(angles)
    factor = 1 - (cos**2).sum() + 2 * cos.prod()  # (V / abc)^2
    if min(lengths) <= 0 or not factor > 1e-12:
        raise InputError(f"{path}: zero-volume cell ({_cell_text(lengths, cell[3:])})")
    if min(lengths) < MIN_DISTANCE:
        raise InputError(f"{path}: overlapping atoms: each atom is {min(lengths):.3g} Å from its own periodic image "
                         f"(cell length below {MIN_DISTANCE} Å; are the cell lengths in Å?)")


def _check_occupancies(path: Path, doc) -> None:
    """Refuse a site occupancy of 0 or less, or above 1 (pymatgen drops such a site silently,
    or reads one above 1 as overlapping atoms)."""
    for block in doc:
        labels = list(block.find_loop("_atom_site_label"))
        occupancies = list(block.find_loop("_atom_site_occupancy"))
        for k, value in enumerate(occupancies):
            number = cif_number(value.strip("'\""))
            if number is not None and not 0 < number <= 1 + 1e-3:
                label = labels[k] if k < len(labels) else f"site {k + 1}"
                empty = " (an empty site: remove it)" if number == 0 else ""
                raise InputError(f"{path}: site {label} has occupancy {value}{empty}; occupancies lie within "
                                 "0 ... 1, above 0")


def check_geometry(structure: Structure, source: str | Path) -> None:
    """Refuse a cell of zero volume or atoms closer than :data:`MIN_DISTANCE`.

    The closest pair is searched within ``min(MIN_DISTANCE, d)``, where ``d =
    (sqrt(2) V / N)^(1/3)`` bounds the shortest distance of N atoms in volume V
    (densest sphere packing), so that the search stays small even for a cell a
    thousand times too small.

    Parameters
    ----------
    structure : Structure
    source : str or path
        Named in the message.

    Raises
    ------
    InputError
        ``zero-volume cell`` or ``overlapping atoms``, naming the two sites and their
        distance in Å.
    """
    from pymatgen.optimization.neighbors import find_points_in_spheres

    lattice = structure.lattice
    matrix = np.ascontiguousarray(lattice.matrix, dtype=float)
    volume = abs(float(np.linalg.det(matrix))) if np.isfinite(matrix).all() else 0.0
    lengths = np.linalg.norm(matrix, axis=1)
    if not volume > 1e-6 * lengths.prod() or not volume > 0:
        raise InputError(f"{source}: zero-volume cell ({_cell_text(lattice.abc, lattice.angles)})")
    n = len(structure)
    if n == 0:
        return
    bound = (math.sqrt(2) * volume / n) ** (1 / 3)
    radius = min(MIN_DISTANCE, bound * (1 + 1e-6))
    cart = np.ascontiguousarray(structure.cart_coords, dtype=float)
    centers, points, _, dists = find_points_in_spheres(
        cart, cart, r=radius, pbc=np.array([1, 1, 1], dtype=np.int64), lattice=matrix, tol=1e-8)
    real = ~((centers == points) & (dists <= 1e-8))
    if not real.any():
        return
    k = int(np.argmin(np.where(real, dists, np.inf)))
    i, j, d = int(centers[k]), int(points[k]), float(dists[k])
    if d >= MIN_DISTANCE:
        return

    def name(idx: int) -> str:
        site = structure[idx]
        label = getattr(site, "label", None)
        return f"site {idx + 1} ({label or site.species_string})"

    other = "its own periodic image" if i == j else name(j)
    raise InputError(f"{source}: overlapping atoms: {name(i)} and {other} are {d:.3g} Å apart "
                     f"(closer than {MIN_DISTANCE} Å; are the cell lengths in Å?)")


# --- pymatgen -----------------------------------------------------------------------------------


def parse_cif_pymatgen(path: str | Path, text: str, doc=None, max_sites: int | None = None) -> Structure:
    """Read a CIF with pymatgen's ``CifParser`` (what ``Structure.from_file`` does).

    Where pymatgen falls back to P1 because it cannot read the space group, the
    symmetry operations are taken from gemmi's tables (Hall or Hermann-Mauguin
    symbol) and the file is read again with them listed; without any symmetry, or
    with a symbol gemmi does not know either, it is refused.  Repeated symmetry operations are
    applied once, and a crystal that would have more than ``max_sites`` sites (default
    :data:`cgcnn.crystals.MAX_SITES`) is refused before its images are made
    (:func:`cgcnn.crystals.cif_bounds.bounded_parser`).

    Raises
    ------
    InputError
        As :func:`read_cif`.
    """
    from pymatgen.core import Structure

    limit = MAX_SITES if max_sites is None else max_sites
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parser = bounded_parser(text, path, limit)
        except InputError:
            raise
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            raise InputError(f"{path}: cannot parse crystal structure ({_first_line(exc)})") from None
        blocks = [b for b in parser._cif.data.values() if "_atom_site_label" in b.data]
        if len(blocks) > 1:
            raise InputError(f"{path}: {len(blocks)} data blocks with atomic sites; one crystal per CIF file is "
                             "read (split the file)")
        try:
            structure = parser.parse_structures(primitive=False)[0]
        except InputError:
            raise
        except Exception as exc:
            reasons = [w.splitlines()[-1] for w in parser.warnings if w.startswith("No structure parsed")]
            msg = reasons[0] if reasons else _first_line(exc)
            occupancy = re.match(r"Occupancy (\S+) exceeded tolerance", msg)
            if occupancy:
                raise InputError(f"{path}: overlapping atoms: sites at the same position (0 Å apart, or made so by "
                                 f"the symmetry operations) add up to an occupancy of {occupancy[1]}") from None
            raise InputError(f"{path}: cannot parse crystal structure ({msg})") from None
        if blocks:  # did pymatgen find the structure block's symmetry, or default to P1?
            seen = len(parser.warnings)
            parser.get_symops(blocks[0])
            guessed_p1 = any(_NO_P1 in w for w in parser.warnings[seen:])
        else:
            guessed_p1 = False
    if guessed_p1:
        if _ADDED_OPS in text:
            raise InputError(f"{path}: cannot read the symmetry operations of its space group")
        ops = _ops_from_symbols(path, blocks[0].data)
        loop = f"\n{_ADDED_OPS}\nloop_\n_symmetry_equiv_pos_as_xyz\n" + "\n".join(f"'{op}'" for op in ops) + "\n"
        parts = re.split(r"(^\s*data_)", text, flags=re.M)
        for k in range(2, len(parts), 2):  # the chunk after each 'data_'
            if "_atom_site_label" in parts[k]:
                parts[k] = parts[k].rstrip("\n") + "\n" + loop
                break
        return read_cif(path, "".join(parts), max_sites=limit)
    structure.__class__ = Structure
    return structure


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _ops_from_symbols(path: Path, data: dict) -> list[str]:
    """Symmetry operations ('x,y,z' strings) from a block's Hall or H-M symbol, via gemmi.

    Raises InputError if the block names no space group or one gemmi does not know."""
    try:
        import gemmi
    except ImportError:
        gemmi = None

    given = []
    for tag in _HALL_TAGS:
        value = data.get(tag)
        if isinstance(value, str) and value.strip() not in ("", "?", "."):
            given.append((tag, value.strip()))
            try:
                return [op.triplet() for op in gemmi.symops_from_hall(value.strip())]
            except Exception:  # not a Hall symbol (or no gemmi)
                pass
    for tag in _HM_TAGS:
        value = data.get(tag)
        if isinstance(value, str) and value.strip() not in ("", "?", "."):
            given.append((tag, value.strip()))
            sg = gemmi.find_spacegroup_by_name(value.strip()) if gemmi is not None else None
            if sg is not None:
                return [op.triplet() for op in sg.operations()]
    for tag in _NUMBER_TAGS:
        value = data.get(tag)
        if isinstance(value, str) and value.strip() not in ("", "?", "."):
            given.append((tag, value.strip()))
    if not given:
        raise InputError(f"{path}: no symmetry operations and no space group; list them in "
                         "_symmetry_equiv_pos_as_xyz (only 'x, y, z' for P1)")
    tag, value = given[0]
    raise InputError(f"{path}: space group {value!r} ({tag}) not recognised; list the symmetry operations in "
                     "_symmetry_equiv_pos_as_xyz")
