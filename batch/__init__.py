"""The batch job: every active customer scored as the API scores them, streamed, resumable, atomic.

`run_batch` (in `batch.job`) is the pipeline; each stage has a module of its own: `tables` (read and
check), `chunk` (score one chunk), `engines` (in this process, one process per core, or Dask),
`assemble` (output, drift, snapshot) and `report` (progress, MLflow, summary).
"""

from batch.assemble import drift_path, write_snapshot_from_chunks
from batch.chunk import Scorer, result_table, score_chunk
from batch.engines import ENGINES, default_workers
from batch.job import DEFAULT_CHUNK_SIZE, BatchResult, RunKey, check_output, run_batch, work_dir
from batch.tables import chunk_of, data_fingerprint, load_chunk_world, split_tables
from features.io import table_files

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ENGINES",
    "BatchResult",
    "RunKey",
    "Scorer",
    "check_output",
    "chunk_of",
    "data_fingerprint",
    "default_workers",
    "drift_path",
    "load_chunk_world",
    "result_table",
    "run_batch",
    "score_chunk",
    "split_tables",
    "table_files",
    "work_dir",
    "write_snapshot_from_chunks",
]
