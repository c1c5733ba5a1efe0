"""What ``nnx.sweep`` returns: the result records, one dict per configuration."""
from __future__ import annotations

from pathlib import Path

from .job import FAILED


class SweepRecords(list):
    """A list of result dicts (configuration, key, status, metrics, timing), in sweep order.

    Beside the list: ``out`` (the results folder, None when kept in memory),
    ``summary`` (the summary CSV and JSON paths), ``reused`` (how many records
    came from an earlier run), ``models`` (key -> trained ``MLP``, when models
    were kept) and ``datasets`` (data hash -> the data the jobs used).
    """

    out: Path | None = None
    summary: tuple[Path, Path] | None = None
    reused: int = 0

    def __init__(self, records=()):
        super().__init__(records)
        self.models: dict = {}
        self.datasets: dict = {}

    @property
    def failed(self) -> list[dict]:
        return [r for r in self if r["status"] == FAILED]

    def to_frame(self):
        """The records as a pandas DataFrame, one row per configuration."""
        try:
            import pandas
        except ImportError as exc:
            raise ImportError("to_frame() needs pandas, which nnx does not install: pip install pandas "
                              "(the records are also plain dicts, and the sweep's summary.csv reads "
                              "anywhere)") from exc
        return pandas.DataFrame.from_records(list(self))
