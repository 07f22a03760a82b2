"""What a run leaves behind: resolved config, per-round Parquet, summary JSON, learning curves."""

from fedray.results.run_dir import rounds_frame, write_failure, write_interrupted, write_run

__all__ = ["rounds_frame", "write_failure", "write_interrupted", "write_run"]
