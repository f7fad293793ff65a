"""The work folder of a screening run, ``<results>.parts/``: its shards, one per finished chunk,
and its ``manifest.json``, which lets ``--resume`` continue only the same run.

A chunk's rows go to a *shard*, four files renamed into place one after the other
(``<index>.results.csv``, ``<index>.test.csv``, ``<index>.skipped.csv``, then
``<index>.json`` with the chunk's figures): a chunk is done when its ``.json`` exists.  At
the end the shards are concatenated, in input order, into the run's CSV files
(:meth:`_Work.writer`).  ``manifest.json`` records the source models, property models, last
layer, input, atom feature tables and options; resuming with any of them changed is refused
(:func:`_check_manifest`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cgcnn import InputError
from cgcnn.data import atom_init_digest
from cgcnn.outputs import save_atomic, save_text

if TYPE_CHECKING:
    from cgcnn.crystals import CrystalInput
    from cgcnn.screening.screener import Screener, ScreenSettings, Shard

__all__ = ["work_folder", "ShardWriteError", "is_parquet", "parquet_table"]

_MANIFEST_FORMAT = "cgcnn-kappa screen 1"
_PARTS = ("results", "test", "skipped")


def work_folder(results: str | os.PathLike) -> Path:
    """The folder of an unfinished run's shards: ``<results>.parts`` beside the results file."""
    results = Path(results)
    return results.with_name(results.name + ".parts")


class ShardWriteError(InputError):
    """A shard that cannot be written (a full disk, a file-size limit): not a fault of the input,
    so the finished shards are kept for ``--resume``."""


def is_parquet(path: str | os.PathLike | None) -> bool:
    """Whether an output is written as Parquet (its name ends in ``.parquet``), else CSV."""
    return path is not None and str(path).lower().endswith(".parquet")


def parquet_table(text: str):
    """CSV text with its header (as the shards hold it) as a pyarrow Table of the same values: ``cif_id``,
    ``reason`` as strings, ``in_domain`` as booleans, every other column float64 (NaN where empty)."""
    import io

    import pandas as pd
    import pyarrow as pa

    header = text.split("\n", 1)[0].split(",")
    types = {c: pa.string() if c in ("cif_id", "reason") else pa.bool_() if c == "in_domain" else pa.float64()
             for c in header}
    frame = pd.read_csv(io.StringIO(text), dtype={c: str for c, k in types.items() if k == pa.string()},
                        keep_default_na=False, na_values=[""])
    for column, kind in types.items():
        if kind == pa.bool_():
            frame[column] = frame[column].astype(bool)
        elif kind == pa.float64():
            frame[column] = frame[column].astype("float64")
    return pa.Table.from_pandas(frame, schema=pa.schema([(c, k) for c, k in types.items()]), preserve_index=False)


class _Work:
    """The shards of one run (see the module docstring); the parts named in ``parquet`` are Parquet files."""

    def __init__(self, folder: Path, parquet: frozenset = frozenset()):
        self.folder = folder
        self.parquet = parquet

    def shard_file(self, index: int, part: str) -> Path:
        suffix = "json" if part == "stats" else f"{part}.{'parquet' if part in self.parquet else 'csv'}"
        return self.folder / f"{index:07d}.{suffix}"

    def done(self) -> set[int]:
        return {int(p.name.split(".")[0]) for p in self.folder.glob("*.json")
                if p.name != "manifest.json" and p.name.split(".")[0].isdigit()}

    def write(self, shard: Shard, headers: dict) -> None:
        """Write a shard's files, its ``.json`` last; ``headers``: each part's CSV header line.

        Raises
        ------
        ShardWriteError
            A file cannot be written (``OSError``: a full disk, a file-size limit); the files of
            this shard written before are left (without its ``.json`` the chunk is not done).
        """
        try:
            for part in _PARTS:
                if part in self.parquet:
                    import pyarrow.parquet as pq

                    save_atomic(parquet_table(headers[part] + getattr(shard, part)), self.shard_file(shard.index, part),
                                saver=lambda table, f: pq.write_table(table, f))
                else:
                    save_text(getattr(shard, part), self.shard_file(shard.index, part))
            save_text(json.dumps({"index": shard.index, "stats": shard.stats}), self.shard_file(shard.index, "stats"))
        except InputError as exc:  # save_text's one line for an OSError
            raise ShardWriteError(str(exc)) from None

    def stats(self, index: int) -> dict:
        return json.loads(self.shard_file(index, "stats").read_text())["stats"]

    def writer(self, part: str, header: str, n_chunks: int) -> Callable:
        """A saver for :meth:`OutputSet.save` that writes ``header`` then every shard's ``part`` (CSV), or
        every shard's table as one Parquet file (one row group per chunk)."""
        if part in self.parquet:
            def save_parquet(_, f):
                import pyarrow.parquet as pq

                schema = parquet_table(header).schema
                with pq.ParquetWriter(f, schema) as out:
                    for index in range(n_chunks):
                        table = pq.read_table(self.shard_file(index, part))
                        if table.num_rows:
                            out.write_table(table.cast(schema))
            return save_parquet

        def save(_, f):
            f.write(header.encode("utf-8"))
            for index in range(n_chunks):
                with open(self.shard_file(index, part), "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
        return save


def _manifest(screener: Screener, data: CrystalInput, settings: ScreenSettings, layer_sha: str) -> dict:
    return {
        "format": _MANIFEST_FORMAT,
        "source model": [s.sha256 for s in screener.sources],
        "property models": [m.sha256 for m in screener.models[len(screener.sources):]],
        "last layer": layer_sha,  # None for cgcnn.predict
        "input": {"path": str(data.path.resolve()), "crystals": len(data), "sha256": data.fingerprint()},
        "atom_init": [atom_init_digest(t.atom_init) for t in screener.tables],
        "options": {"--descriptors": screener.descriptors, "--batch-size": settings.batch_size,
                    "--chunk-size": settings.chunk, "--on-error": settings.on_error,
                    "--interval": settings.level, "--max-sites": settings.max_sites,
                    "--bte": screener.bte.source.get("sha256") if getattr(screener, "bte", None) else None},
    }


def _check_manifest(folder: Path, saved: dict, now: dict) -> None:
    what = {"format": "another version of this tool", "source model": "another source model",
            "property models": "other property models", "last layer": "another last layer",
            "input": "another input (or the input has changed)", "atom_init": "another atom_init.json"}
    for key, text in what.items():
        if saved.get(key) != now[key]:
            raise InputError(f"{folder}: the interrupted run was made with {text}; --resume continues only the "
                             "same run (remove the folder to start again)")
    for option, value in now["options"].items():
        if saved.get("options", {}).get(option) != value:
            raise InputError(f"{folder}: the interrupted run was made with {option} "
                             f"{saved.get('options', {}).get(option)}, not {value}; give the same options to "
                             "--resume (or remove the folder to start again)")
