"""The card's YAML front matter: what the Hugging Face hub reads from a dataset's README.md.

Licence, size category, tasks, annotation creators, source datasets, the `configs` that
tell `datasets.load_dataset(BUILD_DIR)` (and the hub's viewer) which files hold which
split, and `dataset_info` with the features the Parquet export (or the shards) carry,
from curate.dataset.hub.
"""

from __future__ import annotations

from pathlib import Path

from curate.dataset.hub import card_dataset_info
from curate.model.recipe import SourceSpec

# licence ids the hub accepts (https://huggingface.co/docs/hub/repositories-licenses),
# lower-case SPDX ids; any other licence is declared as `other` with a name and a link
HUB_LICENSES = {
    "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause",
    "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5",
    "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0",
    "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0",
    "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0",
    "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "osl-3.0", "postgresql",
    "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl",
}
HUB_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
LICENSE_FILE = "LICENSE.md"
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
         (1_000_000_000, "100M<n<1B"), (10_000_000_000, "1B<n<10B")]


def hub_split(split: str) -> str:
    """The hub's name for a recipe split (val -> validation)."""
    return HUB_SPLITS.get(split, split)


def split_order(splits) -> list[str]:
    """train, val, test first, then any other split by name."""
    order = list(HUB_SPLITS)
    return sorted(splits, key=lambda s: (order.index(s) if s in order else len(order), s))


def size_category(n: int) -> str:
    return next((label for bound, label in SIZES if n < bound), "n>10B")


def spec_licence(spec: SourceSpec) -> str:
    """A source's licence as one name: its SPDX id, else the name it states."""
    return (spec.license.spdx or spec.license.name) if spec.license else "not stated"


def hub_license(specs: list[SourceSpec]) -> dict:
    """`license` (a hub id when every source shares one), else `other` with a name and a
    link to LICENSE.md, which lists each source's licence."""
    ids = {(s.license.spdx or "").lower() if s.license else "" for s in specs}
    if len(ids) == 1 and next(iter(ids)) in HUB_LICENSES:
        return {"license": next(iter(ids))}
    names = sorted({spec_licence(s) for s in specs})
    return {"license": "other",
            "license_name": "per-source: " + ", ".join(names) if len(names) > 1
            else names[0] if names else "not stated",
            "license_link": LICENSE_FILE}


def used_specs(specs: list[SourceSpec], per_source: dict[str, int]) -> list[SourceSpec]:
    """The sources that contributed kept samples (all of them when none did)."""
    return [s for s in specs if per_source.get(s.name)] or list(specs)


def split_files(dest: Path, splits: list[str]) -> dict[str, dict[str, str]]:
    """Per recipe split present, the glob of its Parquet parts (when written) and shards."""
    out = {}
    for split in splits:
        files = {"webdataset": f"shards/{split}-*.tar"}
        if any((dest / "data").glob(f"{split}-*.parquet")):
            files["parquet"] = f"data/{split}-*.parquet"
        out[split] = files
    return out


def configs(files: dict[str, dict[str, str]]) -> list[dict]:
    """One config, the one `load_dataset(BUILD_DIR)` and the hub's viewer read: `default`,
    the Parquet export (images embedded), or `webdataset`, the shards, when there is no
    export. Only one: `datasets` picks one builder for every config of a repository from
    the first config's files, so a shard config beside the Parquet one would be read as
    Parquet and fail (the card's body shows how to load the shards instead)."""
    parquet = [{"split": hub_split(s), "path": f["parquet"]} for s, f in files.items()
               if "parquet" in f]
    if parquet:
        return [{"config_name": "default", "data_files": parquet, "default": True}]
    return [{"config_name": "webdataset", "default": True, "data_files": [
        {"split": hub_split(s), "path": f["webdataset"]} for s, f in files.items()]}]


def front_matter(dest: Path, record: dict, kept: dict, specs: list[SourceSpec]) -> dict:
    """Every field of the card's front matter, in the order the hub shows them."""
    recipe = record["recipe"]
    per_source = kept.get("per_source", {})
    used = used_specs(specs, per_source)
    splits = [s for s in split_order(kept.get("per_split", {})) if s]
    kinds = kept.get("roi_kinds", {})
    tasks = ["image-to-text", "visual-question-answering"]
    task_ids = ["image-captioning", "visual-question-answering"]
    if kinds.get("mask"):
        tasks.append("image-segmentation")
        task_ids.append("instance-segmentation")
    if sum(kinds.values()):
        tasks.append("object-detection")
    generated = {s.name for s in specs if s.generate}
    by_source = kept.get("roi_origins_by_source", {})
    expert = any(n and src not in generated and origin == "annotation"
                 for src, origins in by_source.items() for origin, n in origins.items()) \
        or bool(kept.get("vqa_origins", {}).get("source"))
    modalities = sorted({m.lower() for m in kept.get("per_modality", {}) if m})
    out = {
        "pretty_name": recipe.get("title") or recipe["name"],
        **hub_license(used),
        "language": ["en"],
        "size_categories": [size_category(kept.get("rows", 0))],
        "task_categories": tasks,
        "task_ids": task_ids,
        "annotations_creators": (["expert-generated"] if expert else []) + ["machine-generated"],
        "language_creators": ["machine-generated"],
        "multilinguality": ["monolingual"],
        "source_datasets": [f"extended|{s.name}" for s in used],
        "tags": ["medical", "medical-imaging", "curate", "roi", "grounded-captions",
                 *modalities],
    }
    if splits:  # an empty build declares no data files
        out["configs"] = configs(split_files(dest, splits))
        # the features the export or the shards declare (curate.dataset.hub)
        out["dataset_info"] = card_dataset_info(dest, {s: kept["per_split"][s] for s in splits})
    return out
