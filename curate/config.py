"""Validated models for sources (sources/*.yaml) and recipes (recipes/*.yaml).

The JSON Schemas in schemas/ are generated from these models (`curate schemas`), and a
test keeps them current. Unknown keys are errors everywhere: a typo in a recipe must
fail loudly, not be ignored.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curate.errors import ConfigError

SLUG = r"^[a-z0-9][a-z0-9_-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class FormatFamily(StrEnum):
    """How a source's files are laid out on disk; one adapter per family."""

    dicom = "dicom"  # DICOM files, single- or multi-frame, grouped into series
    nifti = "nifti"  # NIfTI (or other SimpleITK-readable) volumes, optional label volumes
    dicom_seg = "dicom_seg"  # DICOM images with DICOM SEG objects
    rtstruct = "rtstruct"  # DICOM images with RTSTRUCT contours
    image_mask = "image_mask"  # 2D images with mask images
    image_boxes = "image_boxes"  # 2D images with boxes (CSV, COCO, VOC)
    image_labels = "image_labels"  # 2D images with class labels (CSV or folders)
    video = "video"  # videos read as frames
    wsi = "wsi"  # whole-slide images read as tiles
    vqa = "vqa"  # images with question/answer files (VQA-RAD, SLAKE, PathVQA)


# families with an adapter in curate.ingest (a test keeps the two in step); the others
# are declared for sources/ and fail with a clear message until their adapters land
SUPPORTED_FAMILIES = frozenset(FormatFamily)


class View(StrEnum):
    """How the pixel grid relates to the patient; decides whether laterality can be stated."""

    axial = "axial"  # volume slices, reoriented to LPS: patient's left on image right
    frontal = "frontal"  # frontal projection (PA/AP X-ray), radiological display
    lateral = "lateral"
    none = "none"  # no patient frame (dermoscopy, endoscopy, pathology, fundus, ...)


class BoxTable(Strict):
    """Boxes in pixel coordinates: a CSV (one row per box), a COCO JSON, or VOC XML files."""

    file: str = Field(
        description="csv/coco: the file relative to the source root; voc: a per-image "
        "template such as 'Annotations/{stem}.xml'"
    )
    format: Literal["csv", "coco", "voc"] = "csv"
    coords: Literal["xyxy", "xywh"] = Field(
        default="xyxy", description="csv: corners, or top-left corner plus width and height "
        "(then x1_column/y1_column name the width/height columns)"
    )
    image_column: str = "image"
    label_column: str | None = "label"
    label: str | None = Field(
        default=None, description="fixed label for every box when the table has no label column"
    )
    x0_column: str = "x0"
    y0_column: str = "y0"
    x1_column: str = "x1"
    y1_column: str = "y1"


class ClassLabels(Strict):
    """Image-level class labels: a CSV (single- or multi-label columns) or folder names."""

    file: str | None = Field(default=None, description="CSV relative to the source root")
    image_column: str = "image"
    label_column: str | None = Field(default=None, description="single-label: the class")
    label_columns: list[str] = Field(
        default_factory=list, description="multi-label: one column per class"
    )
    positive_values: list[str] = Field(default_factory=lambda: ["1", "1.0", "True", "true"])
    from_folder: bool = Field(default=False, description="the image's parent folder is its class")


class QATable(Strict):
    """Question-answer pairs written by people (VQA-RAD, SLAKE, PathVQA): JSON, JSONL or CSV.

    Pickled files are refused: loading a pickle runs code from the file.
    """

    file: str = Field(description="relative to the source root")
    format: Literal["json", "jsonl", "csv"] = "json"
    image_column: str = "image"
    question_column: str = "question"
    answer_column: str = "answer"
    type_column: str | None = Field(default=None, description="e.g. answer_type (CLOSED/OPEN)")
    modality_column: str | None = Field(
        default=None, description="per-image modality, for sources that mix modalities"
    )
    include: dict[str, list[str]] = Field(
        default_factory=dict, description="keep rows whose column holds one of these values"
    )
    exclude: dict[str, list[str]] = Field(
        default_factory=dict, description="drop rows whose column holds one of these values"
    )


class VolumeRules(Strict):
    """Declared rules for awkward volumes, so what happens to them is a decision on record."""

    uneven_spacing: Literal["resample", "median", "reject"] = Field(
        default="resample",
        description="DICOM series whose slice steps differ by over 10%: interpolate onto "
        "an even grid at the median step, keep the slices with the median step, or reject",
    )
    gantry_tilt: Literal["keep", "reject"] = Field(
        default="keep",
        description="series whose slice origins drift off the slice normal: keep each slice "
        "on its own plane (in-plane facts are exact, 3D shapes slightly sheared) or reject",
    )
    four_d: Literal["first", "mean", "split"] = Field(
        default="first",
        description="4D NIfTI (time or channels): the first volume, the mean over the 4th "
        "axis, or every volume as its own case",
    )


class Layout(Strict):
    """Where a source's files are and how annotations are named.

    Templates may use {stem} (file name without extensions), {name} (file name) and
    {parent} (the image's folder relative to the source root).
    """

    images: list[str] = Field(description="glob(s) relative to the source root")
    exclude: list[str] = Field(default_factory=list, description="globs to leave out")
    masks: str | None = Field(
        default=None, description="mask/label file template, e.g. 'labelsTr/{name}'"
    )
    case_regex: str | None = Field(
        default=None,
        description="regex on the image stem whose group 1 fills {case} in templates, e.g. "
        "'^(.*)_0000$' for nnU-Net channel suffixes or 'volume-(\\d+)'",
    )
    label_map: dict[int, str] = Field(
        default_factory=dict, description="mask value -> label (source vocabulary)"
    )
    boxes: BoxTable | None = None
    classes: ClassLabels | None = None
    volume: VolumeRules = VolumeRules()
    qa: QATable | None = None
    tile_size: int = Field(default=512, ge=64, description="wsi: tile edge in pixels")
    tile_level: int = Field(default=0, ge=0, description="wsi: pyramid level tiles are read at")
    max_tiles: int = Field(default=4, ge=1, description="wsi: tissue tiles kept per slide")
    patient_id: str | None = Field(
        default=None,
        description="regex applied to the relative path; group 1 is the patient id "
        "(else DICOM PatientID, else the case id)",
    )
    view: View | None = Field(
        default=None, description="2D families: the view; volumes are always axial"
    )
    max_frames: int = Field(
        default=4, ge=1, description="multi-frame files without geometry: frames kept"
    )
    pixel_spacing_mm: tuple[float, float] | None = Field(
        default=None, description="2D families: (row, col) spacing when the files lack it"
    )


class License(Strict):
    spdx: str | None = Field(default=None, description="SPDX id where one exists")
    name: str = Field(description="the licence as the source states it")
    commercial_use: bool | Literal["unknown"] = "unknown"
    url: str | None = None


class Download(Strict):
    url: str
    sha256: str | None = None
    size: int | None = None
    extract: bool = True


class Access(Strict):
    kind: Literal["direct", "registration", "credentialed", "manual"]
    urls: list[Download] = Field(default_factory=list)
    steps: list[str] = Field(default_factory=list, description="what a person must do")


class PhantomSpec(Strict):
    """Generate a synthetic source with known ground truth (see curate.phantoms)."""

    kind: Literal["ct_lesion", "xray_boxes", "rgb_mask"]
    cases: int = Field(default=2, ge=1, le=1000)
    seed: int = 0


class SourceSpec(Strict):
    """One data source: a file in sources/ or an inline entry in a recipe."""

    name: str = Field(pattern=SLUG)
    title: str | None = None
    homepage: str | None = None
    license: License | None = None
    citation: str | None = None
    modality: str | None = Field(
        default=None,
        description="CT, MR, XR, US, PET, pathology, dermoscopy, endoscopy, fundus, ...; "
        "for DICOM the header's Modality wins when present",
    )
    anatomy: str | None = None
    findings: dict[str, str] = Field(
        default_factory=dict, description="source label -> normalised finding label"
    )
    format: FormatFamily
    layout: Layout
    access: Access | None = None
    path: str | None = Field(
        default=None,
        description="local root; 'pkg:PACKAGE/sub/dir' for data shipped in a package; "
        "relative paths are taken from the recipe's folder",
    )
    generate: PhantomSpec | None = None
    window: str | None = Field(default=None, description="CT window preset name")
    allow_burned_in: bool = Field(
        default=False, description="include DICOM images flagged BurnedInAnnotation=YES"
    )
    notes: str | None = None

    def normalised_label(self, label: str) -> str:
        return self.findings.get(label, label)


class SourceRef(Strict):
    """A recipe entry naming a declared source in sources/, with its local path."""

    source: str = Field(pattern=SLUG)
    path: str | None = None
    window: str | None = None
    allow_burned_in: bool = False


class ExpertConfig(Strict):
    """One recipe entry: which expert, its params, and where it applies.

    `modality` and `sources` filter which views the expert sees (None: all). Params are
    validated against the expert's own model when the recipe loads, so a typo fails
    before any work starts, not on a worker an hour in.
    """

    name: str = Field(description="a key of curate.experts.EXPERTS")
    params: dict[str, Any] = Field(default_factory=dict)
    modality: list[str] | None = Field(None, description="run only on these modalities")
    sources: list[str] | None = Field(None, description="run only on these source names")

    @model_validator(mode="after")
    def _known_and_valid(self) -> ExpertConfig:
        from curate.experts.registry import EXPERTS  # experts import normalize, which imports us

        if self.name not in EXPERTS:
            raise ValueError(f"unknown expert {self.name!r}; known: {sorted(EXPERTS)}")
        params_model = getattr(EXPERTS[self.name], "Params", None)
        if params_model is not None:
            try:
                params_model.model_validate(self.params)
            except ValidationError as err:
                lines = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                  for e in err.errors())
                raise ValueError(f"expert {self.name!r} params: {lines}") from None
        return self

    def applies_to(self, source: str, modality: str | None) -> bool:
        """Whether this expert should run on a view of this source and modality."""
        if self.sources is not None and source not in self.sources:
            return False
        if self.modality is not None:
            wanted = {m.upper() for m in self.modality}
            return (modality or "").upper() in wanted
        return True

    def build(self):
        """A new Expert instance (params validated, nothing loaded yet)."""
        from curate.experts.registry import EXPERTS

        return EXPERTS[self.name](**self.params)



class NormalizeConfig(Strict):
    max_size: int = Field(default=512, ge=32, description="longest side after resize")
    roi_slices: int = Field(default=6, ge=1, description="max slices kept per ROI label")
    normal_slices: int = Field(default=2, ge=0, description="slices without ROI kept per volume")
    min_roi_slice_frac: float = Field(
        default=0.1, ge=0, le=1,
        description="keep an ROI slice only if its area is at least this fraction of the "
        "label's largest slice area (BiomedParse rule)",
    )
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: str | None = Field(default=None, description="preset for all CT; else by anatomy")


class GroundConfig(Strict):
    min_roi_pixels: int = Field(default=4, ge=1)


class KnowledgeConfig(Strict):
    """Retrieval of knowledge passages for each sample (see docs/knowledge.md)."""

    kb: str = Field(
        default="default",
        description="a knowledge base built with `curate kb build`, or 'default': the corpus "
        "shipped with curate, built into <out>/kb on first use",
    )
    k: int = Field(default=3, ge=1, le=20, description="passages per sample")
    model: str | None = Field(
        default=None, description="embedding model path when building the default KB"
    )


class DescribeConfig(Strict):
    backend: Literal["grounded", "openai", "vllm"] = Field(
        default="grounded",
        description="grounded: the deterministic template generator (no model); openai: any "
        "OpenAI-compatible endpoint (vllm serve, hosted); vllm: engines inside Ray",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="generator settings (base_url, model, concurrency, rps, max_retries, "
        "timeout_s, price_per_1k_prompt/completion, ...); see docs/generation.md",
    )
    knowledge: KnowledgeConfig | None = None

    @model_validator(mode="after")
    def _known_options(self) -> DescribeConfig:
        from curate.generate.factory import OPENAI_KEYS, VLLM_KEYS

        allowed = {"grounded": {}, "openai": OPENAI_KEYS, "vllm": VLLM_KEYS}[self.backend]
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown options for backend {self.backend!r}: {unknown}; "
                             f"allowed: {sorted(allowed)}")
        return self


class AskConfig(Strict):
    max_questions: int = Field(default=10, ge=1)


class FilterConfig(Strict):
    blank_std: float = Field(default=1.0, ge=0, description="reject when pixel std below")
    min_contrast: float = Field(
        default=12.0, ge=0, description="reject when p99 - p1 (0-255 scale) below"
    )


class SplitConfig(Strict):
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total}")
        return self


class ShardConfig(Strict):
    max_samples: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=500_000_000, ge=1000)


class RunConfig(Strict):
    max_error_frac: float = Field(
        default=0.5, ge=0, le=1,
        description="stop when more than this fraction of work units fail "
        "(checked once at least `min_units_for_error_check` have finished)",
    )
    min_units_for_error_check: int = 50
    max_in_flight: int | None = Field(default=None, description="default: 2 x cluster CPUs")


class Recipe(Strict):
    name: str = Field(pattern=SLUG)
    description: str | None = None
    seed: int = 0
    salt: str = Field(
        default="curate", description="salt for hashing patient ids; set your own per release"
    )
    data_root: str | None = Field(
        default=None,
        description="folder holding one subfolder per declared source; a `source:` entry "
        "without a path reads <data_root>/<name>, a relative path is taken from here",
    )
    sources: list[Annotated[SourceSpec | SourceRef, Field(union_mode="left_to_right")]]
    normalize: NormalizeConfig = NormalizeConfig()
    ground: GroundConfig = GroundConfig()
    describe: DescribeConfig = DescribeConfig()
    ask: AskConfig = AskConfig()
    filters: FilterConfig = FilterConfig()
    split: SplitConfig = SplitConfig()
    shard: ShardConfig = ShardConfig()
    run: RunConfig = RunConfig()
    experts: list[ExpertConfig] = Field(
        default_factory=list,
        description="expert ROI models, in order (organs before lesions: later experts see "
        "earlier ROIs as context); organ/structure ROIs are added to every view they apply "
        "to, lesion ROIs only where the source annotates nothing",
    )

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list) -> list:
        names = [s.name if isinstance(s, SourceSpec) else s.source for s in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"source names must be unique: {sorted(dup)}")
        return v

    def fingerprint(self, section: str) -> str:
        """Hash of one config section; unit cache keys include the sections they depend on."""
        value = getattr(self, section)
        data = [v.model_dump(mode="json") for v in value] if isinstance(value, list) else \
            value.model_dump(mode="json")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(err: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_source(path: Path) -> SourceSpec:
    try:
        spec = SourceSpec.model_validate(load_yaml(path))
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(path))) from err
    if spec.name != Path(path).stem:
        raise ConfigError(f"{path}: name {spec.name!r} must match the file name")
    return spec


def default_sources_dir() -> Path:
    """sources/ beside the package (a source checkout or an editable install)."""
    return Path(__file__).resolve().parent.parent / "sources"


def load_source_registry(sources_dir: Path | None = None) -> dict[str, SourceSpec]:
    """The explicit registry of declared sources: name -> spec."""
    d = Path(sources_dir) if sources_dir else default_sources_dir()
    if not d.is_dir():
        return {}
    return {p.stem: load_source(p) for p in sorted(d.glob("*.yaml"))}


def load_recipe(path: Path) -> Recipe:
    try:
        return Recipe.model_validate(load_yaml(path))
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(path))) from err


def resolve_path(raw: str, base: Path) -> Path:
    """'pkg:PACKAGE/sub/dir' -> a folder inside an installed package; else relative to base."""
    if raw.startswith("pkg:"):
        package, _, sub = raw[4:].partition("/")
        try:
            root = resources.files(package)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"{raw}: package {package!r} is not installed") from exc
        return Path(str(root)) / sub
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def resolve_sources(
    recipe: Recipe, recipe_dir: Path, out_dir: Path, registry: dict[str, SourceSpec] | None = None,
    data_root: str | None = None,
) -> list[SourceSpec]:
    """Turn recipe entries into full specs with absolute paths.

    data_root (e.g. from the command line) overrides the recipe's own.
    """
    root_raw = data_root or recipe.data_root
    root = resolve_path(root_raw, recipe_dir) if root_raw else recipe_dir
    resolved: list[SourceSpec] = []
    for entry in recipe.sources:
        if isinstance(entry, SourceRef):
            registry = registry if registry is not None else load_source_registry()
            if entry.source not in registry:
                raise ConfigError(
                    f"recipe names source {entry.source!r}, which is not declared in sources/"
                )
            spec = registry[entry.source].model_copy(deep=True)
            spec.path = str(resolve_path(entry.path or entry.source, root))
            if entry.window:
                spec.window = entry.window
            spec.allow_burned_in = entry.allow_burned_in
        else:
            spec = entry.model_copy(deep=True)
        if spec.generate is not None:
            spec.path = str(out_dir / "phantoms" / spec.name)
        elif spec.path is None:
            raise ConfigError(f"source {spec.name!r}: no path given")
        elif isinstance(entry, SourceSpec):
            spec.path = str(resolve_path(spec.path, recipe_dir))
        resolved.append(spec)
    return resolved
