"""What a run leaves behind: resolved config, per-round Parquet, the typed summary, learning curves."""

from fedray.results.run_dir import RunRecord, read_run, rounds_frame, write_failure, write_interrupted, write_run
from fedray.results.summary import DataSummary, RunSummary

__all__ = ["DataSummary", "RunRecord", "RunSummary", "read_run", "rounds_frame", "write_failure",
           "write_interrupted", "write_run"]
