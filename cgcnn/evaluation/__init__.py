"""Evaluation: how good a transfer is (``python -m cgcnn.evaluate``): the protocol's splits and figures,
and the report.

- :mod:`~cgcnn.evaluation.protocol`: random splits (ParAIsite, arXiv:2411.18259), K-fold and grouped
  (prototype, structure type) cross-validation, and their figures (:func:`metrics`, :func:`summarize`);
- :mod:`~cgcnn.evaluation.report`: ``metrics.md`` and ``parity.png`` (:func:`write_report`);
- :mod:`~cgcnn.evaluation.bte`: the last layers with their phonon-BTE model (``--bte``,
  ``--bte-mode``: :func:`bte_rows`) and their figures on the crystals with a value (:func:`bte_subset`).

Layer: above :mod:`cgcnn.transfer`, beside :mod:`cgcnn.screening` (neither imports the other).
"""

from cgcnn.evaluation.bte import bte_rows, bte_subset
from cgcnn.evaluation.protocol import (
    Split,
    make_group_splits,
    make_splits,
    metrics,
    protocol_text,
    read_groups,
    split_metrics,
    structure_types,
    summarize,
)
from cgcnn.evaluation.report import (
    BASELINES,
    METRICS,
    best_method,
    format_table,
    label,
    parity_figure,
    write_report,
)

__all__ = [
    "BASELINES", "METRICS", "Split", "best_method", "bte_rows", "bte_subset", "format_table", "label",
    "make_group_splits", "make_splits", "metrics", "parity_figure", "protocol_text", "read_groups", "split_metrics",
    "structure_types", "summarize", "write_report",
]
