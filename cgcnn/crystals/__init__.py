"""Crystals in: CIF files read and checked, data folders' ``id_prop.csv``, folders and archives to screen.

- :mod:`~cgcnn.crystals.cif`: a CIF read into pymatgen's ``Structure`` (:func:`read_cif`: the gemmi
  fast path of :mod:`~cgcnn.crystals.cif_fast`, pymatgen's ``CifParser`` otherwise) and its geometry
  checked (:func:`check_geometry`); a CIF's atomic numbers, site by site, without building it
  (:func:`site_numbers`);
- :mod:`~cgcnn.crystals.structure`: the one ordered crystal of a structure file, read and checked
  (:func:`read_structure`, :func:`structure_from_bytes`, :data:`MAX_SITES`), or of a data folder's
  ``cif_id`` (:func:`read_crystal`);
- :mod:`~cgcnn.crystals.checks`: the checks every crystal passes, whatever its format
  (:func:`check_structure`);
- :mod:`~cgcnn.crystals.folder`: a CGCNN data folder's ``id_prop.csv`` (:func:`read_id_prop`, log10 κ_L
  targets checked by :func:`check_log10_kappa`) and its crystals' files (:func:`cif_file`, :func:`locate`);
- :mod:`~cgcnn.crystals.names`: structure files known by their names (:func:`structure_format`,
  :func:`structure_id`): ``.cif``, ``POSCAR*``/``CONTCAR*``/``.vasp``, pymatgen ``.json``, ``.extxyz``/``.xyz``;
- :mod:`~cgcnn.crystals.formats`: the other formats (POSCAR, pymatgen JSON, extxyz) and the objects of a
  Python session (pymatgen ``Structure``, ASE ``Atoms``), through the same checks;
- :mod:`~cgcnn.crystals.frames`: the frames of extxyz files, each one crystal (:func:`folder_frames`,
  :func:`read_frame`);
- :mod:`~cgcnn.crystals.archive`: the crystals of a folder or a ``.tar``/``.zip`` archive of structure
  files, in order and in chunks (:func:`open_input`, :class:`CrystalInput`, :class:`CrystalText`,
  :func:`read_structure_text`);
- :mod:`~cgcnn.crystals.cif_bounds` (with :mod:`~cgcnn.crystals.sites`): what one CIF may cost, its
  sites bounded from its counts before any symmetry image is made;
- :mod:`~cgcnn.crystals.members`: one CIF's bytes read with a bound (:data:`MAX_CIF_BYTES`,
  :func:`read_cif_bytes`), from a file or an archive member, links in archives followed.

Layer: above :mod:`cgcnn.outputs` only; no torch.
"""

from cgcnn.crystals.archive import ARCHIVE_SUFFIXES, CrystalInput, CrystalText, open_input, read_structure_text
from cgcnn.crystals.checks import check_structure
from cgcnn.crystals.cif import MIN_DISTANCE, check_geometry, read_cif
from cgcnn.crystals.cif_fast import site_numbers
from cgcnn.crystals.folder import (
    LOG10_KAPPA_RANGE,
    check_log10_kappa,
    cif_file,
    data_folder_inputs,
    locate,
    read_id_prop,
)
from cgcnn.crystals.formats import own_id, structure_from_object, structures_from_text
from cgcnn.crystals.frames import file_frames, folder_frames, read_frame
from cgcnn.crystals.members import MAX_CIF_BYTES, read_cif_bytes
from cgcnn.crystals.names import STRUCTURE_FORMATS, structure_format, structure_id
from cgcnn.crystals.structure import MAX_SITES, read_crystal, read_structure, structure_from_bytes

__all__ = ["ARCHIVE_SUFFIXES", "LOG10_KAPPA_RANGE", "MAX_CIF_BYTES", "MAX_SITES", "MIN_DISTANCE", "STRUCTURE_FORMATS",
           "CrystalInput", "CrystalText", "check_geometry", "check_log10_kappa", "check_structure", "cif_file",
           "data_folder_inputs", "file_frames", "folder_frames", "locate", "open_input", "own_id", "read_cif",
           "read_cif_bytes", "read_crystal", "read_frame", "read_id_prop", "read_structure", "read_structure_text",
           "site_numbers", "structure_format", "structure_from_bytes", "structure_from_object", "structure_id",
           "structures_from_text"]
