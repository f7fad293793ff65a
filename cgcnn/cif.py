"""Reading CIF files: a fast path through gemmi, pymatgen's ``CifParser`` otherwise.

:func:`read_cif` returns the ``Structure`` that ``Structure.from_file`` (pymatgen's
``CifParser(...).parse_structures(primitive=False)[0]``) returns, site for site and
bit for bit, about ten times faster for the common CIF: one data block, explicit
symmetry operations, fully occupied sites of plain element symbols.

The fast path tokenises with gemmi (``gemmi.cif.read_string``) and then follows
pymatgen's own rules (``pymatgen/io/cif.py``, ``CifParser._sanitize_data``,
``get_symops``, ``_get_structure``, ``_unique_coords``): numbers read as ``str2float``
reads them; fractional coordinates within 1e-4 (relative) of 1/3 or 2/3 snapped
to them; each symmetry operation parsed by ``SymmOp.from_xyz_str`` and applied as
``SymmOp.operate`` does; images wrapped into [0, 1) and kept unless within 1e-4
(fractional, periodic) of an image kept before; sites sorted by electronegativity,
then symbol (stably), as ``get_sorted_structure`` does.  Whatever the fast path is
not sure to read the same way (several blocks, no explicit operations, partial or
missing occupancies, oxidation states, magnetic CIFs, unusual symbols or
characters, sites related by symmetry, ...) goes to pymatgen.

Beyond pymatgen, :func:`read_cif` refuses what pymatgen reads silently wrong:

- several data blocks holding atoms (pymatgen takes the first);
- a space group given only by a symbol or Hall symbol pymatgen does not know
  (pymatgen keeps the asymmetric unit as if the group were P1): the symmetry
  operations then come from gemmi's tables, or the file is refused;
- no symmetry at all (no operations, symbol or number): refused, as P1 is a guess;
- a cell angle outside 0 ... 180 degrees (pymatgen takes 200 as 160) and a site
  occupancy of 0 or less, or above 1 (pymatgen drops such sites silently).

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

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "MIN_DISTANCE", "read_cif", "check_geometry", "parse_cif_pymatgen", "parse_cif_fast", "count_structure_blocks",
]

_SYMOP_TAGS = (
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv_pos_as_xyz_",
    "_space_group_symop_operation_xyz",
    "_space_group_symop_operation_xyz_",
)
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
_MAGCIF = re.compile("_space_group_magn|_atom_site_moment|_space_group_symop_magn")  # CifParser is_magcif
_HASH_AFTER_TEXT = re.compile(r"^[ \t]*[^#\s].*#", re.M)
_SPECIAL_SYMBOLS = re.compile("Hw|Ow|Wat|wat|OH|OH2|NO3")  # CifParser._parse_symbol's special cases
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:\(\d+\))?")
_PLAIN_NUMBERS = re.compile(r"(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)? )*")  # space-separated, no '(2)'
_SITE_TOL = 1e-4  # CifParser site_tolerance
_FRAC_TOL = 1e-4  # CifParser frac_tolerance
_NO_P1 = "Defaulting to P1"
_ADDED_OPS = "# symmetry operations added by cgcnn.cif from the space group symbol"

MIN_DISTANCE = 0.5
"""Shortest distance between atoms, in Å, that :func:`check_geometry` accepts.

The shortest bond in a solid is about 0.74 Å (H2); real inorganic crystals have
none under about 0.9 Å.  Closer atoms mean a mistake: duplicated sites, or a cell
given in nm instead of Å (rock salt then has its atoms 0.28 Å apart)."""


def read_cif(path: str | Path, text: str | None = None) -> Structure:
    """Read the one crystal of a CIF file.

    Parameters
    ----------
    path : path
        The CIF file (named in error messages).
    text : str, optional
        Its content, if already read (decoded as UTF-8, bad bytes replaced).

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
        occupancy of 0 or less or above 1.
    """
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
    doc = _gemmi_doc(text)
    if doc is not None:
        n_blocks = count_structure_blocks(doc)
        if n_blocks > 1:
            raise InputError(f"{path}: {n_blocks} data blocks with atomic sites; one crystal per CIF file is read "
                             "(split the file)")
        _check_cell(path, doc)
        _check_occupancies(path, doc)
        try:
            structure = parse_cif_fast(text, doc)
        except Exception:  # anything unforeseen: pymatgen decides
            structure = None
        if structure is not None:
            return structure
    return parse_cif_pymatgen(path, text, doc)


def count_structure_blocks(doc) -> int:
    """Number of data blocks of a gemmi ``Document`` that list atomic sites."""
    return sum(1 for block in doc if block.find_values("_atom_site_fract_x") or
               block.find_values("_atom_site_Cartn_x") or block.find_values("_atom_site_label"))


def _gemmi_doc(text: str):
    """The gemmi CIF document of ``text``, or None if gemmi cannot tokenise it (or is
    not installed: everything then goes to pymatgen)."""
    try:
        import gemmi
    except ImportError:
        return None
    try:
        return gemmi.cif.read_string(text)
    except Exception:  # gemmi is stricter than pymatgen (duplicate tags, bad loops): pymatgen decides
        return None


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
        number = _number(value.strip("'\"")) if value is not None else None
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
            number = _number(value.strip("'\""))
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


def parse_cif_pymatgen(path: str | Path, text: str, doc=None) -> Structure:
    """Read a CIF with pymatgen's ``CifParser`` (what ``Structure.from_file`` does).

    Where pymatgen falls back to P1 because it cannot read the space group, the
    symmetry operations are taken from gemmi's tables (Hall or Hermann-Mauguin
    symbol) and the file is read again with them listed; without any symmetry, or
    with a symbol gemmi does not know either, it is refused.

    Raises
    ------
    InputError
        As :func:`read_cif`.
    """
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parser = CifParser.from_str(text)
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            raise InputError(f"{path}: cannot parse crystal structure ({_first_line(exc)})") from None
        blocks = [b for b in parser._cif.data.values() if "_atom_site_label" in b.data]
        if len(blocks) > 1:
            raise InputError(f"{path}: {len(blocks)} data blocks with atomic sites; one crystal per CIF file is "
                             "read (split the file)")
        try:
            structure = parser.parse_structures(primitive=False)[0]
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
        return read_cif(path, "".join(parts))
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


# --- fast path ----------------------------------------------------------------------------------


_symop_cache: dict[tuple[str, ...], np.ndarray | None] = {}
_symbol_cache: dict[str, object] = {}
_electroneg_cache: dict[object, float] = {}
_composition_cache: dict[object, object] = {}


def _affine(ops: tuple[str, ...]) -> np.ndarray | None:
    """Affine matrices, shape (K, 4, 4), of pymatgen's ``SymmOp.from_xyz_str`` for each op
    (None if one does not parse); cached, as files repeat the same few lists."""
    if ops not in _symop_cache:
        from pymatgen.core.operations import SymmOp

        try:
            _symop_cache[ops] = np.array([SymmOp.from_xyz_str(s).affine_matrix for s in ops], dtype=np.float64)
        except ValueError:
            _symop_cache[ops] = None
    return _symop_cache[ops]


def _operate(affine: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Images of ``coords`` (n, 3) under each op, shape (n, K, 3), bit for bit as
    ``SymmOp.operate`` (``np.dot(affine_matrix, [x, y, z, 1])[:3]``) computes them."""
    if _MATMUL_IS_DOT:
        points = np.concatenate([coords, np.ones((len(coords), 1))], axis=1)
        return np.matmul(affine[None], points[:, None, :, None])[..., :3, 0]
    return np.array([[np.dot(a, np.append(c, 1.0))[:3] for a in affine] for c in coords]).reshape(
        len(coords), len(affine), 3)


def _probe_matmul() -> bool:
    """Whether the batched product here equals numpy's ``dot`` bit for bit (it depends on the
    summation order of the BLAS in use; the slow per-op ``dot`` is used if not)."""
    rng = np.random.default_rng(0)
    rot = rng.integers(-1, 2, size=(64, 3, 3)).astype(np.float64)
    affine = np.zeros((64, 4, 4))
    affine[:, :3, :3] = rot
    affine[:, :3, 3] = rng.integers(0, 12, size=(64, 3)) / 12
    affine[:, 3, 3] = 1.0
    coords = rng.random((32, 3)) * 2 - 0.5
    points = np.concatenate([coords, np.ones((32, 1))], axis=1)
    fast = np.matmul(affine[None], points[:, None, :, None])[..., :3, 0]
    slow = np.array([[np.dot(a, p)[:3] for a in affine] for p in points])
    return bool(np.array_equal(fast, slow))


_MATMUL_IS_DOT = _probe_matmul()


def _number(value: str) -> float | None:
    """A CIF number as pymatgen's ``str2float`` reads it, or None unless plainly numeric."""
    if _NUMBER.fullmatch(value) is None:
        return None
    return float(value.split("(", 1)[0])


def _numbers(values: list[str]) -> list[float] | None:
    """:func:`_number` of each value, or None if one is not plainly numeric (one regex per column)."""
    if _PLAIN_NUMBERS.fullmatch(" ".join(values) + " ") is not None:
        return list(map(float, values))
    numbers = [_number(v) for v in values]
    return None if any(x is None for x in numbers) else numbers


def _composition(el):
    """``Composition({el: 1})``, one per element (immutable, so sites may share it)."""
    if el not in _composition_cache:
        from pymatgen.core import Composition

        _composition_cache[el] = Composition({el: 1})
    return _composition_cache[el]


def _element(symbol: str):
    """The element pymatgen's ``CifParser._parse_symbol`` + ``get_el_sp`` make of a site symbol,
    or None where its rules are not the plain ones (special names, dummy species)."""
    if symbol not in _symbol_cache:
        from pymatgen.core import Element

        el = None
        if symbol and symbol == symbol.strip() and _SPECIAL_SYMBOLS.match(symbol) is None \
                and symbol[:3] not in ("Wat", "wat", "O-H"):
            if Element.is_valid_symbol(symbol[:2].title()):
                el = Element(symbol[:2].title())
            elif Element.is_valid_symbol(symbol[0].upper()):
                el = Element(symbol[0].upper())
        if el is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = el.X
            if not math.isfinite(x):  # no electronegativity: pymatgen's sort order is not a plain key
                el = None
            else:
                _electroneg_cache[el] = x
        _symbol_cache[symbol] = el
    return _symbol_cache[symbol]


def _block_data(block) -> dict | None:
    """A gemmi block as pymatgen's ``CifBlock.data``: tag to value (str) or column (list of str),
    unquoted; None if a value is a multi-line text field (pymatgen joins its lines)."""
    import gemmi

    data: dict = {}
    for item in block:
        if item.pair is not None:
            tag, value = item.pair
            if value.startswith(";"):
                if tag.startswith(("_atom_site", "_cell", "_symmetry", "_space_group", "_atom_type")):
                    return None
                continue
            data[tag] = gemmi.cif.as_string(value)
        elif item.loop is not None:
            loop = item.loop
            width = loop.width()
            values = list(loop.values)
            if any(v.startswith(";") for v in values):
                return None
            for k, tag in enumerate(loop.tags):
                data[tag] = [gemmi.cif.as_string(v).strip() for v in values[k::width]]
    return data


def parse_cif_fast(text: str, doc=None) -> Structure | None:
    """The Structure pymatgen's ``CifParser`` would give, built from gemmi's parse, or None
    where this path is not sure to match it (the caller then asks pymatgen).

    Parameters
    ----------
    text : str
        The CIF file's content.
    doc : gemmi.cif.Document, optional
        ``gemmi.cif.read_string(text)``, if already parsed.

    Returns
    -------
    Structure or None
    """
    from pymatgen.core import Lattice, Structure

    if not text.isascii() or "_eof" in text or _MAGCIF.search(text) or _HASH_AFTER_TEXT.search(text):
        return None  # pymatgen drops non-ASCII characters and '#' comments inside quotes
    if doc is None:
        doc = _gemmi_doc(text)
    if doc is None or len(doc) != 1 or len(re.findall(r"^\s*data_", text, re.M)) != 1:
        return None
    data = _block_data(doc[0])
    if data is None or "_atom_type_oxidation_number" in data or "_atom_site_attached_hydrogens" in data:
        return None

    # lattice (CifParser.get_lattice_no_exception)
    cell = []
    for tag in ("_cell_length_a", "_cell_length_b", "_cell_length_c",
                "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"):
        value = data.get(tag)
        number = _number(value) if isinstance(value, str) else None
        if number is None:
            return None
        cell.append(number)
    lattice = Lattice.from_parameters(*cell)
    matrix = lattice.matrix
    volume = abs(float(np.linalg.det(matrix)))
    if not (np.isfinite(matrix).all() and volume > 0):
        return None
    spacing = volume / np.linalg.norm(np.cross(matrix[[1, 2, 0]], matrix[[2, 0, 1]]), axis=1)
    if spacing.min() < 0.02:
        return None  # pymatgen refuses a cell thinner than 0.01 Å, with its own message

    # symmetry operations (CifParser.get_symops: the first tag whose operations parse)
    affine = None
    for tag in _SYMOP_TAGS:
        value = data.get(tag)
        if value:
            ops = (value,) if isinstance(value, str) else tuple(value)
            affine = _affine(ops)
            if affine is not None:
                break
    if affine is None:
        return None

    # atom sites
    labels = data.get("_atom_site_label")
    columns = [data.get(f"_atom_site_fract_{c}") for c in "xyz"]
    symbols = data.get("_atom_site_type_symbol", labels)
    occupancies = data.get("_atom_site_occupancy")
    if not isinstance(labels, list) or not labels or not all(isinstance(c, list) for c in columns) \
            or not isinstance(symbols, list) or (occupancies is not None and not isinstance(occupancies, list)):
        return None
    n = len(labels)
    if any(len(c) != n for c in columns) or len(symbols) != n or (occupancies is not None and len(occupancies) != n):
        return None
    if occupancies is not None and any(_number(o) != 1.0 for o in occupancies):
        return None
    elements = [_element(s) for s in symbols]
    if any(el is None for el in elements) or any(" + " in s for s in symbols):
        return None
    coords = np.empty((n, 3))
    for k, column in enumerate(columns):
        numbers = _numbers(column)
        if numbers is None:
            return None
        coords[:, k] = numbers
    for frac in (1 / 3, 2 / 3):  # CifParser._sanitize_data: snap finite-precision thirds
        coords[np.abs(coords / frac - 1) <= _FRAC_TOL] = float(str(frac))

    # sites related by symmetry are merged by pymatgen (a disordered site): not here
    images = _operate(affine, coords)  # (n, K, 3), not wrapped
    if n > 1:
        earlier, image = _close_pairs(coords, images.reshape(-1, 3))  # raw site vs image of a later one
        if (earlier < image // len(affine)).any():
            return None

    # symmetry images per element, in site order then op order (CifParser._unique_coords)
    wrapped = images - np.floor(images)
    species_order = sorted(set(elements), key=lambda el: (_electroneg_cache[el], el.symbol))
    out_species, out_coords, out_labels = [], [], []
    for el in species_order:
        rows = [i for i in range(n) if elements[i] is el]
        cand = wrapped[rows].reshape(-1, 3)
        keep = _first_unique(cand)
        if keep is None:
            return None
        out_coords.append(cand[keep])
        out_species += [_composition(el)] * int(keep.sum())
        out_labels += [labels[i] for i in np.repeat(rows, len(affine))[keep]]
    return Structure(lattice, out_species, np.concatenate(out_coords), labels=out_labels)


def _close_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with ``a[i]`` within 1e-4 of ``b[j]`` in every fractional coordinate,
    periodically, computed as pymatgen's ``find_in_coord_list_pbc`` does (``a[i] - b[j]``, minus
    its rounding); ``b`` is taken in chunks so that memory stays bounded."""
    chunk = max(1, 1_000_000 // max(1, len(a)))
    found_i, found_j = [], []
    for start in range(0, len(b), chunk):
        diff = a[:, None, :] - b[None, start:start + chunk, :]
        diff -= np.round(diff)
        i, j = np.nonzero(np.all(np.abs(diff) < _SITE_TOL, axis=-1))
        found_i.append(i)
        found_j.append(j + start)
    return np.concatenate(found_i), np.concatenate(found_j)


def _first_unique(coords: np.ndarray) -> np.ndarray | None:
    """Mask of the coordinates (m, 3) kept by ``CifParser._unique_coords``: each unless
    within 1e-4 (fractional, periodic) of one kept before.  None if the closeness
    relation is not clean enough for the vectorised form to equal the sequential one."""
    i, j = _close_pairs(coords, coords)
    earlier = i < j
    i, j = i[earlier], j[earlier]
    keep = np.ones(len(coords), dtype=bool)
    keep[j] = False  # j has a close i < j
    # sequentially, j is dropped only if a *kept* i < j is close to it
    if not np.isin(j, j[keep[i]]).all():
        return None
    return keep
