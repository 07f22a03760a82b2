"""Informed consent: records without it are removed before anything else sees them.

A record's consent comes from the dataset (a table's consent column, see
:class:`fedray.data.types.Loaded`) and/or from ``data.consent_list``: a text
file naming, one identifier per line, the records that gave consent (an
opt-in list; blank lines and ``#`` comments are ignored). Identifiers are the
records' ids, e.g. ``Train/melanoma/ISIC_0000000.jpg`` for an image folder.
Where both exist a record needs both.

Removal happens before the split, so a record without consent is in no
training shard, no validation or test set, and no membership-audit pool: it
is never trained on, never evaluated, never a member. The run summary counts
how many were removed (``data.without_consent``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedray.data.types import Loaded, Records
from fedray.config.schema import DataCommon
from fedray.errors import FedrayError


def read_consent_list(path: str | Path) -> set[str]:
    """The identifiers listed in ``path``; a missing file is a one-line error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FedrayError(f"data.consent_list '{path}' does not exist: give a text file with one record id per line")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line}


def consent_mask(records: Records, dataset_consent: np.ndarray | None, listed: set[str] | None) -> np.ndarray:
    """True where a record may be used: consented in the dataset (if it says) and listed (if a list is given)."""
    mask = np.ones(len(records), dtype=bool) if dataset_consent is None else np.asarray(dataset_consent, dtype=bool)
    if listed is not None:
        mask &= np.isin(records.ids.astype(str), sorted(listed))
    return mask


def apply_consent(loaded: Loaded, data_cfg: DataCommon) -> tuple[Records, Records | None, int]:
    """(records, fixed test set or None, number removed) with every record lacking consent removed."""
    listed = read_consent_list(data_cfg.consent_list) if data_cfg.consent_list else None
    if listed is not None:
        known = set(loaded.records.ids.astype(str))
        if loaded.test is not None:
            known |= set(loaded.test.ids.astype(str))
        unknown = sorted(listed - known)
        if unknown:
            raise FedrayError(
                f"data.consent_list names {len(unknown)} record(s) not in the data (first: '{unknown[0]}'): "
                f"list ids as the data names them, e.g. '{loaded.records.ids[0]}'"
            )
    keep = consent_mask(loaded.records, loaded.consent, listed)
    records = loaded.records.subset(np.flatnonzero(keep))
    removed = int((~keep).sum())
    test = loaded.test
    if test is not None and listed is not None:
        keep_test = consent_mask(test, None, listed)
        test, removed = test.subset(np.flatnonzero(keep_test)), removed + int((~keep_test).sum())
    if len(records) == 0:
        raise FedrayError("no record carries informed consent: check data.consent_list or the consent column")
    return records, test, removed
