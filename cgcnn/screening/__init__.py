"""Screening: a structure database through the source models and a fitted last layer, streamed in
chunks, in bounded memory, resumable, on this machine's cores or a ``dask.distributed`` cluster.

- :mod:`~cgcnn.screening.run`: the run (:func:`screen`, :class:`ScreenSummary`) and its chunks on this
  machine;
- :mod:`~cgcnn.screening.screener`: the models applied to one chunk (:class:`Screener`, :class:`Shard`), the
  settings (:class:`ScreenSettings`);
- :mod:`~cgcnn.screening.chunk`: a chunk's crystals read and made into graphs in any process
  (:func:`prepare_crystal`), then read as each model's dataset (:class:`ChunkData`) with each model's atom
  table (:func:`atom_tables`);
- :mod:`~cgcnn.screening.workfolder`: the work folder of shards and its manifest (``--resume``);
- :mod:`~cgcnn.screening.cluster`: the chunks on a Dask cluster (``--dask``).

Layer: above :mod:`cgcnn.transfer`, beside :mod:`cgcnn.evaluation` (neither imports the other).
"""

from cgcnn.screening.chunk import (
    AtomTable,
    ChunkData,
    Prepared,
    PrepSpec,
    atom_tables,
    prepare_crystal,
)
from cgcnn.screening.run import (
    ON_ERROR,
    RESULT_COLUMNS,
    SKIPPED_COLUMNS,
    TEST_COLUMNS,
    Screener,
    ScreenSettings,
    ScreenSummary,
    Shard,
    dask_log,
    local_shards,
    screen,
    work_folder,
)
from cgcnn.screening.workfolder import (
    ShardWriteError,
    is_parquet,
    parquet_table,
)

__all__ = [
    "AtomTable", "ChunkData", "ON_ERROR", "PrepSpec", "Prepared", "RESULT_COLUMNS", "SKIPPED_COLUMNS",
    "ScreenSettings", "ScreenSummary", "Screener", "Shard", "ShardWriteError", "TEST_COLUMNS", "atom_tables",
    "dask_log", "is_parquet", "local_shards", "parquet_table", "prepare_crystal", "screen", "work_folder",
]
