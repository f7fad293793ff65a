"""Outputs: every file a run writes, written atomically and replaced together (the lowest layer).

- :mod:`~cgcnn.outputs.files`: the one atomic writer (:func:`save_atomic`, :func:`save_text`,
  :func:`save_csv`), output checks (:func:`check_output`, :func:`check_output_dir`) and facts about
  files (:func:`missing_reason`, :func:`file_sha256`);
- :mod:`~cgcnn.outputs.outputset`: the outputs of one run, checked against its inputs before any
  work and renamed into place together (:class:`OutputSet`, :func:`check_outputs`).

Imports nothing of the project but :class:`cgcnn.InputError`; nothing here imports torch or pymatgen.
"""

from cgcnn.outputs.files import (
    check_output,
    check_output_dir,
    file_sha256,
    missing_reason,
    save_atomic,
    save_csv,
    save_text,
)
from cgcnn.outputs.outputset import OutputSet, check_outputs

__all__ = ["OutputSet", "check_output", "check_output_dir", "check_outputs", "file_sha256", "missing_reason",
           "save_atomic", "save_csv", "save_text"]
