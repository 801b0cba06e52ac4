"""Every human- and tool-facing description of a finished build, written in one place.

`write_reports(dest, ...)` writes the contact sheet, the data card and the Croissant
metadata into `dest` (the build folder, or its staging folder before the outputs are
switched into place) from the build record and the merged per-shard aggregates.
"""

from __future__ import annotations

from pathlib import Path

from curate.model.recipe import SourceSpec
from curate.report.croissant import write_croissant
from curate.report.datacard import write_datacard
from curate.report.figures import contact_sheet


def write_reports(dest: Path, record: dict, kept_stats: dict, dropped: dict, quarantine: dict,
                  specs: list[SourceSpec]) -> None:
    sheet = contact_sheet(dest / "shards", kept_stats.get("examples", []),
                          dest / "figures" / "samples.png")
    write_datacard(dest / "DATACARD.md", record, kept_stats, dropped, quarantine, specs,
                   figure="figures/samples.png" if sheet else None)
    write_croissant(dest, record, sorted({(s.license.spdx or s.license.name) if s.license
                                          else "unknown" for s in specs}))
