"""Results on disk: one JSON file per job, its model beside it, a summary at the end.

Layout of the output folder::

    jobs/<key>.json    the job's record, written when the job ends
    jobs/<key>.npz     its trained model (``nnx.load`` reads it), with --save-models or --plot
    summary.csv        one row per configuration of the last sweep, whatever its status
    summary.json       the same records as JSON

Every file is written atomically (``nnx.fileio.atomic_write``; models through
``MLP.save``), the model before the record, so a record on disk always means a complete result (and its model, when
one was kept): a sweep killed at any moment resumes from what is there.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from ..fileio import atomic_write
from ..persistence import load
from .config import CONFIG_FIELDS, upgrade_record
from .job import FINISHED, RESULT_FIELDS, RUN_FIELDS

PENDING = "pending"
SUMMARY_FIELDS = ("key", *CONFIG_FIELDS, *RESULT_FIELDS, *RUN_FIELDS, "nnx_version")


class ResultStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.jobs = self.folder / "jobs"

    def prepare(self) -> None:
        """Create the folders (before any job starts, so an unwritable place fails first)."""
        try:
            self.jobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create the results folder {self.jobs}: {exc.strerror or exc}; "
                             "choose another with --out") from exc

    def record_path(self, key: str) -> Path:
        return self.jobs / f"{key}.json"

    def model_path(self, key: str) -> Path:
        return self.jobs / f"{key}.npz"

    def finished(self, key: str, *, need_model: bool = False) -> dict | None:
        """The stored record of a job that need not run again, else None.

        Failed jobs run again; so does a job whose model is wanted but was not kept.
        An unreadable record (written by something else) is treated as missing. A record
        written before the optimiser, batch-size, epochs and schedule settings existed
        gains them at the values its job ran with (plain full-batch gradient descent).
        """
        try:
            record = json.loads(self.record_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key or record.get("status") not in FINISHED:
            return None
        if need_model and not self.model_path(key).is_file():
            return None
        return upgrade_record(record)

    def save(self, record: dict, model=None) -> None:
        if model is not None:
            model.save(self.model_path(record["key"]))  # atomic, like every file nnx writes
        with atomic_write(self.record_path(record["key"]), "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=True, allow_nan=False)
            handle.write("\n")

    def load_model(self, key: str):
        path = self.model_path(key)
        return load(path) if path.is_file() else None

    def write_summary(self, records: list[dict]) -> tuple[Path, Path]:
        """summary.csv and summary.json for the sweep's configurations, finished or not."""
        csv_path, json_path = self.folder / "summary.csv", self.folder / "summary.json"
        with atomic_write(csv_path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for record in records:
                writer.writerow({k: _cell(v) for k, v in record.items()})
        document = {"configurations": len(records), "counts": dict(Counter(r["status"] for r in records)),
                    "records": records}
        with atomic_write(json_path, "w") as handle:
            json.dump(document, handle, indent=1, allow_nan=False)
            handle.write("\n")
        return csv_path, json_path


def _cell(value) -> str:
    """A CSV cell: None empty, a list (a record's notes) joined."""
    if value is None:
        return ""
    return " | ".join(map(str, value)) if isinstance(value, list) else value


def pending_record(key: str, config: dict) -> dict:
    """The summary row of a configuration that has no result yet (the sweep was stopped)."""
    record = {"key": key, **config}
    record.update({name: None for name in RESULT_FIELDS + RUN_FIELDS})
    record["status"] = PENDING
    return record
