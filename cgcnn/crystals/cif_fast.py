"""The fast path of CIF reading: pymatgen's ``Structure``, site for site and bit for bit,
built from gemmi's tokens.

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
characters, sites related by symmetry, ...) gives None, and :func:`cgcnn.crystals.cif.read_cif`
then asks pymatgen.

References
----------
S. P. Ong et al., Comput. Mater. Sci. 68, 314 (2013) (pymatgen);
M. Wojdyr, J. Open Source Softw. 7, 4200 (2022) (gemmi).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np

from cgcnn.crystals.sites import close_pairs

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["parse_cif_fast", "gemmi_doc", "cif_number", "affine_ops", "distinct_ops", "site_numbers"]

_SYMOP_TAGS = (
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv_pos_as_xyz_",
    "_space_group_symop_operation_xyz",
    "_space_group_symop_operation_xyz_",
)
_MAGCIF = re.compile("_space_group_magn|_atom_site_moment|_space_group_symop_magn")  # CifParser is_magcif
_HASH_AFTER_TEXT = re.compile(r"^[ \t]*[^#\s].*#", re.M)
_SPECIAL_SYMBOLS = re.compile("Hw|Ow|Wat|wat|OH|OH2|NO3")  # CifParser._parse_symbol's special cases
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:\(\d+\))?")
_PLAIN_NUMBERS = re.compile(r"(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)? )*")  # space-separated, no '(2)'
_FRAC_TOL = 1e-4  # CifParser frac_tolerance


def gemmi_doc(text: str):
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

_symop_cache: dict[tuple[str, ...], np.ndarray | None] = {}
_symbol_cache: dict[str, object] = {}
_electroneg_cache: dict[object, float] = {}
_composition_cache: dict[object, object] = {}


def affine_ops(ops: tuple[str, ...]) -> np.ndarray | None:
    """Affine matrices, shape (K, 4, 4), of pymatgen's ``SymmOp.from_xyz_str`` for each op, a
    repeated string once (its images repeat the first one's exactly), None if one does not parse;
    cached (a few hundred lists), as files repeat the same few lists."""
    ops = tuple(dict.fromkeys(ops))
    if ops not in _symop_cache:
        from pymatgen.core.operations import SymmOp

        if len(_symop_cache) > 512:
            _symop_cache.clear()
        try:
            _symop_cache[ops] = np.array([SymmOp.from_xyz_str(s).affine_matrix for s in ops], dtype=np.float64)
        except ValueError:
            _symop_cache[ops] = None
    return _symop_cache[ops]



def distinct_ops(affine: np.ndarray) -> np.ndarray:
    """The operations of ``affine`` (K, 4, 4) with repeats left out, first occurrences in order.

    Two operations are the same when their rotations are equal and their translations are
    equal modulo whole cell vectors (to 1e-6): ``x+1,y,z`` is ``x,y,z``.  Their images differ
    only by rounding, so pymatgen keeps the first one's; a symmetry-operation list without
    repeats (every normal CIF) is returned as it is.
    """
    if len(affine) < 2:
        return affine
    rot = affine[:, :3, :3].reshape(len(affine), 9) + 0.0
    trans = np.round(affine[:, :3, 3] * 1e6) % 1e6 + 0.0
    _, first = np.unique(np.concatenate([rot, trans], axis=1), axis=0, return_index=True)
    return affine if len(first) == len(affine) else affine[np.sort(first)]


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


def cif_number(value: str) -> float | None:
    """A CIF number as pymatgen's ``str2float`` reads it, or None unless plainly numeric."""
    if _NUMBER.fullmatch(value) is None:
        return None
    return float(value.split("(", 1)[0])


def _numbers(values: list[str]) -> list[float] | None:
    """:func:`cif_number` of each value, or None if one is not plainly numeric (one regex per column)."""
    if _PLAIN_NUMBERS.fullmatch(" ".join(values) + " ") is not None:
        return list(map(float, values))
    numbers = [cif_number(v) for v in values]
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
        doc = gemmi_doc(text)
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
        number = cif_number(value) if isinstance(value, str) else None
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
            affine = affine_ops(ops)
            if affine is not None:
                break
    if affine is None:
        return None
    affine = distinct_ops(affine)

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
    if occupancies is not None and any(cif_number(o) != 1.0 for o in occupancies):
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
        pairs = close_pairs(coords, images.reshape(-1, 3))  # raw site vs image of a later one
        if pairs is None or (pairs[0] < pairs[1] // len(affine)).any():
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


def _first_unique(coords: np.ndarray) -> np.ndarray | None:
    """Mask of the coordinates (m, 3) kept by ``CifParser._unique_coords``: each unless
    within 1e-4 (fractional, periodic) of one kept before.  None if the closeness
    relation is not clean enough for the vectorised form to equal the sequential one."""
    pairs = close_pairs(coords, coords)
    if pairs is None:
        return None
    i, j = pairs
    earlier = i < j
    i, j = i[earlier], j[earlier]
    keep = np.ones(len(coords), dtype=bool)
    keep[j] = False  # j has a close i < j
    # sequentially, j is dropped only if a *kept* i < j is close to it
    if not np.isin(j, j[keep[i]]).all():
        return None
    return keep


def site_numbers(text: str) -> np.ndarray | None:
    """The atomic numbers, in site order, of the structure :func:`cgcnn.crystals.read_structure` gives
    for the CIF ``text``, without building it: gemmi's symmetry expansion of the sites
    (``make_small_structure_from_block``, ``get_all_unit_cell_sites``) counted per element, the
    elements in pymatgen's order (electronegativity, then symbol).  About 0.1 ms for a small crystal;
    used to check a cached graph against the CIF it claims to be (:mod:`cgcnn.data.graphcache`).

    Returns
    -------
    ndarray of int64, shape (N,), or None
        None where this cheap reading is not sure to match (gemmi cannot read the file, several
        blocks, partial occupancies, symbols pymatgen reads by special rules, an element without
        electronegativity): the caller then reads the structure itself.
    """
    doc = gemmi_doc(text)
    if doc is None or len(doc) != 1:
        return None
    try:
        import gemmi

        sites = gemmi.make_small_structure_from_block(doc[0]).get_all_unit_cell_sites()
        counts: dict[object, int] = {}
        for site in sites:
            el = _element(site.type_symbol or site.label) if site.occ == 1.0 else None
            if el is None:
                return None
            counts[el] = counts.get(el, 0) + 1
    except Exception:  # anything gemmi does not read as pymatgen would: the caller decides
        return None
    if not counts:
        return None
    order = sorted(counts, key=lambda el: (_electroneg_cache[el], el.symbol))
    return np.repeat(np.array([el.Z for el in order], dtype=np.int64), [counts[el] for el in order])
