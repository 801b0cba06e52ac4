"""Recipes (recipes/*.yaml): validated models, loading, and resolving their sources.

Source declarations live in curate.model.source and are re-exported here. The JSON Schemas in
schemas/ are generated from these models (`curate schemas`), and a test keeps them
current. Unknown keys are errors everywhere: a typo in a recipe must fail loudly.

This is the model layer: it imports nothing else in curate but spec and errors
(tests/test_imports.py), so names that refer to plug-ins (experts, describe options)
are checked against their registries by curate.load when a recipe is loaded.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from curate.model.errors import ConfigError
from curate.model.source import (  # noqa: F401 - re-exported: the source models live in curate.model.source
    SLUG,
    SUPPORTED_FAMILIES,
    Access,
    BoxTable,
    ClassLabels,
    Download,
    FormatFamily,
    Layout,
    License,
    PhantomSpec,
    QATable,
    SourceRef,
    SourceSpec,
    Strict,
    View,
    VolumeRules,
)

OPTIONAL_DESCRIPTION = (
    "skip this source with a notice when its folder is absent or holds nothing to build; "
    "without it a missing source fails the build"
)


class RecipeSourceRef(SourceRef):
    """A recipe entry naming a declared source in sources/, with its local path."""

    optional: bool = Field(default=False, description=OPTIONAL_DESCRIPTION)


class InlineSource(SourceSpec):
    """A source declared inside the recipe itself."""

    optional: bool = Field(default=False, description=OPTIONAL_DESCRIPTION)


def _source_kind(v: Any) -> str:
    """Which model a recipe's source entry is: one branch, so errors name one model."""
    if isinstance(v, BaseModel):
        return "ref" if isinstance(v, SourceRef) else "inline"
    return "ref" if isinstance(v, dict) and "source" in v else "inline"


SourceEntry = Annotated[
    Annotated[RecipeSourceRef, Tag("ref")] | Annotated[InlineSource, Tag("inline")],
    Discriminator(_source_kind),
]
_TAGS = {"ref": RecipeSourceRef, "inline": InlineSource}


def _as_entry(v: Any) -> Any:
    """A plain SourceSpec or SourceRef (built in code) as the recipe's entry model."""
    for plain, entry in ((SourceSpec, InlineSource), (SourceRef, RecipeSourceRef)):
        if type(v) is plain:
            return entry.model_construct(_fields_set=set(v.model_fields_set), **dict(v))
    return v


def is_optional(entry: SourceSpec | SourceRef) -> bool:
    """Whether a recipe marks this source entry `optional: true`."""
    return bool(getattr(entry, "optional", False))


def entry_name(entry: SourceSpec | SourceRef) -> str:
    return entry.source if isinstance(entry, SourceRef) else entry.name


class ExpertConfig(Strict):
    """One recipe entry: which expert, its params, and where it applies.

    `modality` and `sources` filter which views the expert sees (None: all). Params are
    validated against the expert's own model when the recipe loads, so a typo fails
    before any work starts, not on a worker an hour in.
    """

    # The name and params are checked by curate.load (curate.unit.experts.registry.
    # expert_errors): this model does not know the registry; plug-ins import the model,
    # never the other way round. (Docstring above is the schema's description.)

    name: str = Field(description="a key of curate.unit.experts.EXPERTS")
    params: dict[str, Any] = Field(default_factory=dict)
    modality: list[str] | None = Field(None, description="run only on these modalities")
    sources: list[str] | None = Field(None, description="run only on these source names")
    scan: int = Field(
        default=0, ge=0,
        description="2D experts on a volume no annotation covers: also run on every Nth "
        "slice before slices are chosen, so the slices holding the lesions it finds are "
        "kept like annotated ones (0: only on the chosen slices)",
    )

    def applies_to(self, source: str, modality: str | None) -> bool:
        """Whether this expert should run on a view of this source and modality."""
        if self.sources is not None and source not in self.sources:
            return False
        if self.modality is not None:
            wanted = {m.upper() for m in self.modality}
            return (modality or "").upper() in wanted
        return True


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
    planes: list[Literal["acquisition", "axial", "coronal", "sagittal"]] = Field(
        default_factory=lambda: ["acquisition"],
        description="planes volumes are cut in: the acquisition plane always; the others "
        "only where the voxels are near-isotropic (isotropic_tolerance)",
    )
    isotropic_tolerance: float = Field(
        default=1.2, ge=1,
        description="a volume is near-isotropic when its largest voxel side is at most "
        "this multiple of its smallest",
    )
    min_view_px: int = Field(
        default=16, ge=1, description="never make a view thinner than this many pixels")


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
    # option names are the generator factory's business: checked at load by
    # curate.describe.backends.factory.describe_errors (see curate.load), not here


class AskConfig(Strict):
    """Computed VQA (curate.unit.text.vqa): GMAI-MMBench-style categories x granularity."""

    max_questions: int = Field(default=10, ge=1, description="questions per image at most")
    per_category: int = Field(
        default=2, ge=1, description="questions per category per image at most (modality, "
        "organ, presence, counting, localisation, laterality, size, attribute, comparison, "
        "clinical), so no task dominates")


class FilterConfig(Strict):
    blank_std: float = Field(default=1.0, ge=0, description="reject when pixel std below")
    min_contrast: float = Field(
        default=12.0, ge=0, description="reject when p99 - p1 (0-255 scale) below"
    )
    cross_case_duplicate_bits: int | None = Field(
        default=None, ge=0, le=16,
        description="drop a sample whose pHash is within this many bits of a sample of "
        "another case (the same scan re-published in two sources would otherwise put one "
        "patient in two splits); off by default; near-identical slices of one case stay",
    )
    min_scores: dict[str, float] = Field(
        default_factory=dict,
        description="drop a sample whose named score in quality.scores (e.g. judge, "
        "alignment) is below the threshold; a sample without that score is kept",
    )


class JudgeConfig(Strict):
    """An LLM that reads each sample's text against its computed facts and scores it 1-5
    on accuracy, completeness and clarity (docs/scores.md). Settings that change no
    answer (concurrency, rates, retries, actors) leave the cached scores valid."""

    backend: Literal["openai"] = Field(
        default="openai",
        description="openai: any OpenAI-compatible chat endpoint (vllm serve, a hosted API)")
    base_url: str = Field(description="the endpoint, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the model name the endpoint serves")
    prompt_version: str = Field(default="judge-v1",
                                description="curate/prompts/<version>.md and .schema.json")
    aggregate: Literal["min", "mean"] = Field(
        default="min", description="how `judge` combines the three scores: min (a text is "
        "as good as its weakest axis) or mean")
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=256, ge=16)
    concurrency: int = Field(default=16, ge=1,
                             description="requests in flight for the whole build, divided "
                             "among the actors")
    rps: float | None = Field(default=None, gt=0,
                              description="requests per second for the whole build")
    max_retries: int = Field(default=3, ge=0,
                             description="retries per sample (server errors, invalid answers)")
    timeout_s: float = Field(default=120.0, gt=0)
    api_key_env: str | None = Field(
        default=None, description="variable holding the API key (default CURATE_LLM_API_KEY, "
        "then OPENAI_API_KEY)")
    price_per_1k_prompt: float = Field(default=0.0, ge=0)
    price_per_1k_completion: float = Field(default=0.0, ge=0)
    actors: int = Field(default=2, ge=1, description="judge client actors")
    actor_cpus: float = Field(default=0.5, gt=0, description="CPUs each judge actor reserves")


class AlignmentConfig(Strict):
    """A trained bundled-model run (`curate train`) scoring each sample's image-caption
    alignment (cosine similarity, -1..1) as the score `alignment`."""

    run: str = Field(description="the training run folder (curate train --out RUN), "
                     "relative to the recipe's folder")
    batch_size: int = Field(default=64, ge=1, description="samples per forward pass")
    num_gpus: float = Field(default=0, ge=0, description="GPUs each scoring actor reserves")
    num_cpus: float = Field(default=1, gt=0, description="CPUs each scoring actor reserves")
    actors: int = Field(default=1, ge=1, description="scoring actors (each loads the model)")


class ScoreConfig(Strict):
    """Scores later stages give every sample (quality.scores), after describe; use
    `filters.min_scores` to drop below a threshold. Off unless configured."""

    judge: JudgeConfig | None = None
    alignment: AlignmentConfig | None = None


class DecontaminateConfig(Strict):
    lists: list[str] = Field(
        default_factory=list,
        description="JSONL hash lists of benchmark images (`curate hashes DIR --out F`), "
        "relative to the recipe's folder",
    )
    max_distance: int = Field(default=4, ge=0, le=16,
                              description="pHash bits that may differ and still match")


class SplitConfig(Strict):
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    link_near_duplicates_bits: int | None = Field(
        default=None, ge=0, le=16,
        description="before splitting, link cases whose images are within this many pHash "
        "bits of each other (one patient republished by two sources) so they share a split; "
        "off by default, on in recipes/medtrinity.yaml",
    )

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total}")
        return self


class ShardConfig(Strict):
    max_samples: int = Field(default=10_000, ge=1,
                             description="at most this many samples per shard (img2dataset's "
                             "default): small images still give enough shards for the shard "
                             "writers and the training loaders to run in parallel")
    max_bytes: int = Field(default=1_000_000_000, ge=1000,
                           description="about this many bytes per shard (image and masks)")
    parquet_images: bool = Field(
        default=True,
        description="also write data/{split}-NNNNNN.parquet, one per shard: the manifest "
        "columns with the image and masks embedded, which Hugging Face datasets and the "
        "hub load (about doubles the bytes the build writes)")


class RunConfig(Strict):
    max_error_frac: float = Field(
        default=0.5, ge=0, le=1,
        description="stop when more than this fraction of work units fail "
        "(checked once at least `min_units_for_error_check` have finished)",
    )
    min_units_for_error_check: int = 50
    max_in_flight: int | None = Field(default=None, description="default: 2 x cluster CPUs")
    units_per_part: int = Field(
        default=64, ge=1,
        description="work units committed together as one part (the unit of resume): a "
        "part is a deterministic run of one source's units in case order",
    )
    workers: int | None = Field(default=None, ge=1,
                                description="unit-stage actors; default: one per CPU")


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
    sources: list[SourceEntry] = Field(
        description="the sources to build: `source: NAME` names one declared in sources/, "
        "or a full inline declaration; a file-based recipe needs at least one",
    )
    normalize: NormalizeConfig = NormalizeConfig()
    ground: GroundConfig = GroundConfig()
    describe: DescribeConfig = DescribeConfig()
    ask: AskConfig = AskConfig()
    score: ScoreConfig = ScoreConfig()
    filters: FilterConfig = FilterConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    split: SplitConfig = SplitConfig()
    shard: ShardConfig = ShardConfig()
    run: RunConfig = RunConfig()
    experts: list[ExpertConfig] = Field(
        default_factory=list,
        description="expert ROI models, in order (organs before lesions: later experts see "
        "earlier ROIs as context); organ/structure ROIs are added to every view they apply "
        "to, lesion ROIs only where the source annotates nothing",
    )

    @field_validator("sources", mode="before")
    @classmethod
    def _entries(cls, v: Any) -> Any:
        return [_as_entry(e) for e in v] if isinstance(v, list) else v

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


Marks = dict[tuple, tuple[int, int]]


def _marks(node: yaml.Node, path: tuple = (), out: Marks | None = None) -> Marks:
    """(line, column), 1-based, of every key and list item, by its path in the document."""
    out = {} if out is None else out
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            out[(*path, key)] = (k.start_mark.line + 1, k.start_mark.column + 1)
            _marks(v, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _marks(v, (*path, i), out)
    return out


def load_yaml_marked(path: Path) -> tuple[Any, Marks]:
    """The document and the line and column of each key (for error messages)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return data, (_marks(node) if node is not None else {})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models anywhere in a field's annotation (list[X], X | None, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for m in _models_in(arg):
            if m not in found:
                found.append(m)
    return found


def _walk(model: type[BaseModel], loc: tuple) -> tuple[tuple, list[type[BaseModel]]]:
    """Strip union tags from a pydantic loc; also the models in force at its last step."""
    clean: list = []
    models = [model]
    for part in loc:
        if isinstance(part, str) and part in _TAGS and _TAGS[part] in models:
            models = [_TAGS[part]]
            continue
        clean.append(part)
        if isinstance(part, int):
            continue
        nxt = [m for c in models if part in c.model_fields
               for m in _models_in(c.model_fields[part].annotation)]
        models = nxt
    return tuple(clean), models


def _suggest(key: str, models: list[type[BaseModel]]) -> str:
    names = sorted({n for m in models for n in m.model_fields})
    best = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f"; did you mean {best[0]!r}?" if best else ""


def _where(where: str, loc: tuple, marks: Marks | None) -> str:
    """'file:line:col' of loc, or of the nearest enclosing key that exists in the file."""
    if marks:
        for n in range(len(loc), -1, -1):
            if loc[:n] in marks:
                line, col = marks[loc[:n]]
                return f"{where}:{line}:{col}"
    return where


def _format_errors(err: ValidationError, where: str, marks: Marks | None = None,
                   model: type[BaseModel] | None = None) -> str:
    lines = [f"{where}: invalid configuration"]
    for e in err.errors():
        loc, parents = _walk(model, tuple(e["loc"])) if model else (tuple(e["loc"]), [])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden" and loc:
            owner = _walk(model, tuple(e["loc"])[:-1])[1] if model else []
            msg += _suggest(str(loc[-1]), owner)
        lines.append(f"  {_where(where, loc, marks)}: {dotted}: {msg}")
    return "\n".join(lines)


def load_yaml(path: Path) -> Any:
    return load_yaml_marked(path)[0]


def load_source(path: Path) -> SourceSpec:
    data, marks = load_yaml_marked(path)
    try:
        spec = SourceSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(path), marks, SourceSpec)) from err
    if spec.name != Path(path).stem:
        raise ConfigError(f"{path}: name {spec.name!r} must match the file name")
    return spec


def default_sources_dir() -> Path:
    """sources/ beside the package (a source checkout or an editable install)."""
    return Path(__file__).resolve().parents[2] / "sources"


def load_source_registry(sources_dir: Path | None = None) -> dict[str, SourceSpec]:
    """The explicit registry of declared sources: name -> spec."""
    d = Path(sources_dir) if sources_dir else default_sources_dir()
    if not d.is_dir():
        return {}
    return {p.stem: load_source(p) for p in sorted(d.glob("*.yaml"))}


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe's own fields; plug-in names are not checked here.

    Use curate.load.load_recipe, which also checks expert names and params and describe
    options against their registries. This one stays for what imports it today.
    """
    data, marks = load_yaml_marked(path)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(path), marks, Recipe)) from err
    if not recipe.sources:
        raise ConfigError(f"{path}: invalid configuration\n  {_where(str(path), ('sources',), marks)}"
                          ": sources: a recipe needs at least one source")
    return recipe


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


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def through_archive_folder(folder: Path, globs: list[str], depth: int = 2) -> Path:
    """The folder itself, or the one folder an archive extracted into it kept as its top
    (data_root/kvasir-seg/Kvasir-SEG/...): followed while a folder holds exactly one
    visible subfolder and, besides it, only archives, and the layout's image globs do not
    start with that subfolder's name. Looks at folder listings only, never at the data."""
    import fnmatch

    firsts = [g.split("/")[0] for g in globs if "/" in g]
    for _ in range(depth):
        if not folder.is_dir():
            return folder
        entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
        dirs = [e for e in entries if e.is_dir()]
        others = [e for e in entries if not e.is_dir()
                  and not e.name.lower().endswith(ARCHIVE_SUFFIXES)]
        if len(dirs) != 1 or others or any(f == "**" or fnmatch.fnmatch(dirs[0].name, f)
                                           for f in firsts):
            return folder
        folder = dirs[0]
    return folder


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
            if entry.path is None:  # <data_root>/<name>: look through an archive's own folder
                spec.path = str(through_archive_folder(Path(spec.path), spec.layout.images))
            if entry.window:
                spec.window = entry.window
            spec.allow_burned_in = entry.allow_burned_in
        else:  # a plain SourceSpec downstream: `optional` is the recipe's business
            spec = SourceSpec.model_construct(
                _fields_set=entry.model_fields_set - {"optional"},
                **{k: copy.deepcopy(getattr(entry, k)) for k in SourceSpec.model_fields})
        if spec.generate is not None:
            spec.path = str(out_dir / "phantoms" / spec.name)
        elif spec.path is None:
            raise ConfigError(f"source {spec.name!r}: no path given")
        elif isinstance(entry, SourceSpec):
            spec.path = str(resolve_path(spec.path, recipe_dir))
        resolved.append(spec)
    return resolved
