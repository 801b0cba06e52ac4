"""Every human- and tool-facing description of a finished build, written in one place.

`write_reports(dest, ...)` writes into `dest` (the build folder, or its staging folder
before the outputs are switched into place), from the build record and the merged
per-shard aggregates:

- README.md: the data card with the front matter the Hugging Face hub reads (DATACARD.md
  is the same text), LICENSE.md when the sources' licences differ;
- card.html: the same card as one self-contained page;
- figures/: the contact sheet, the example sample and the distribution plots;
- croissant.json.

`regenerate(build_dir)` (`curate card DIR`) recomputes the aggregates from a finished
build's Parquet parts and writes all of it again, without rebuilding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.dataset.hub import PARQUET
from curate.model.errors import CurateError
from curate.model.recipe import SourceSpec
from curate.report import card_markdown, hub_meta
from curate.report.croissant import write_croissant
from curate.report.datacard import merge_stats
from curate.report.figures import contact_sheet, distribution_plots, example_figure
from curate.report.html_card import write_html

CARD_FILES = ["README.md", "DATACARD.md", "card.html"]


def _write(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a card."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def card_schema(dest: Path, splits: list[str]) -> pa.Schema:
    """The columns the card's field table lists: the Parquet export's, else the manifest's
    with the image and masks the export adds (curate.dataset.hub.PARQUET)."""
    parts = [p for s in splits for p in sorted((dest / "data").glob(f"{s}-*.parquet"))]
    if parts:
        return pq.read_schema(parts[0])
    return PARQUET


def licence_file(specs: list[SourceSpec], per_source: dict[str, int]) -> str:
    used = hub_meta.used_specs(specs, per_source)
    return "\n".join([
        "# Licences", "",
        "This dataset is built from several sources, each under its own licence; every sample "
        "carries its source's licence in the `license` field.", "",
        card_markdown.licence_table(used, per_source), "",
        card_markdown.commercial_note(used), ""])


def write_reports(dest: Path, record: dict, kept_stats: dict, dropped: dict, quarantine: dict,
                  specs: list[SourceSpec]) -> None:
    kept, dropped, quarantine = (merge_stats(kept_stats, {}), merge_stats(dropped, {}),
                                 merge_stats(quarantine, {}))
    dest = Path(dest)
    shards, fig_dir = dest / "shards", dest / "figures"
    figures: dict[str, str] = {}
    examples = kept.get("examples", [])
    if contact_sheet(shards, examples, fig_dir / "samples.png"):
        figures["figures/samples.png"] = ("The first samples of each source, with their ROIs "
                                          "and full captions")
    example = card_markdown.pick_example(examples)
    if example is not None:
        example_figure(shards, example, fig_dir / "example.png")
        figures["figures/example.png"] = "The example sample"
    figures |= {f"figures/{k}": v for k, v in distribution_plots(kept, fig_dir).items()}
    for stale in fig_dir.glob("*.png"):  # from an earlier card of this build
        if f"figures/{stale.name}" not in figures:
            stale.unlink()
    front = hub_meta.front_matter(dest, record, kept, specs)
    splits = [s for s in hub_meta.split_order(kept.get("per_split", {})) if s]
    parquet = any("parquet" in f for f in hub_meta.split_files(dest, splits).values())
    body = card_markdown.body(record, kept, dropped, quarantine, specs, figures=figures,
                              example=example, parquet=parquet,
                              schema=card_schema(dest, splits))
    text = card_markdown.render(front, body)
    _write(dest / "README.md", text)
    _write(dest / "DATACARD.md", text)
    if front["license"] == "other":
        _write(dest / hub_meta.LICENSE_FILE, licence_file(specs, kept.get("per_source", {})))
    else:
        (dest / hub_meta.LICENSE_FILE).unlink(missing_ok=True)
    write_html(dest / "card.html", front, body, dest)
    write_croissant(dest, record, sorted({hub_meta.spec_licence(s) if s.license else "unknown"
                                          for s in specs}))


def regenerate(build_dir: Path) -> list[str]:
    """`curate card DIR`: the card, figures and croissant.json of a finished build, again,
    from run.json and the aggregates of its manifest, filtered and quarantine parts (per
    part, merged). Returns the files written. The build folder is locked meanwhile."""
    from curate.report.datacard import (
        card_stats,
        dropped_stats,
        frame_stats,
        merge_all,
        quarantine_stats,
    )
    from curate.runner import Executor
    from curate.workdir import BuildLock, finish_switch

    build_dir = Path(build_dir)
    # a build killed while switching its outputs in has run.json moved aside: complete the
    # switch first (as `curate verify` does), so the card describes the build in place
    finish_switch(build_dir)
    run = build_dir / "run.json"
    if not run.is_file():
        raise CurateError(f"{build_dir} is not a finished build: it has no run.json")
    if not (build_dir / "manifest.parquet").exists():
        raise CurateError(f"{build_dir} has no manifest.parquet: is the build complete?")
    try:
        record = json.loads(run.read_text())
        specs = [SourceSpec.model_validate(s) for s in record["sources"]]
    except (ValueError, KeyError) as exc:
        raise CurateError(f"{run} cannot be read as a build record: {exc}") from exc
    def stats(ex, name: str, fn) -> dict:
        path = build_dir / name  # a folder of parts, or one file in older builds
        return merge_all([fn(pq.read_table(path))] if path.is_file()
                         else frame_stats(ex, path, fn))

    with BuildLock(build_dir), Executor("local") as ex:
        kept = stats(ex, "manifest.parquet", card_stats)
        dropped = stats(ex, "filtered.parquet", dropped_stats)
        quarantine = stats(ex, "quarantine.parquet", quarantine_stats)
        write_reports(build_dir, record, kept, dropped, quarantine, specs)
    written = [*CARD_FILES, "croissant.json"]
    if (build_dir / hub_meta.LICENSE_FILE).is_file():
        written.append(hub_meta.LICENSE_FILE)
    _list_outputs(build_dir, [*written, "figures"])
    return written + sorted(f"figures/{p.name}" for p in (build_dir / "figures").glob("*.png"))


def _list_outputs(build_dir: Path, names: list[str]) -> None:
    """Keep the build's list of its outputs (which the next build's switch replaces) true:
    the card's files are outputs too, LICENSE.md only while it exists."""
    from curate.workdir import LAST, OUTPUTS, atomic_text, outputs_in_place

    if not (build_dir / OUTPUTS).is_file():
        return  # a build from before the list: its outputs are known by name
    listed = {n for n in outputs_in_place(build_dir) if n != LAST} | set(names)
    atomic_text(build_dir / OUTPUTS, json.dumps(
        sorted(n for n in listed if (build_dir / n).exists()) + [LAST]))
