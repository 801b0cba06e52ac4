"""Models of a data source as declared in sources/*.yaml or inline in a recipe.

A source is data (this file); reading it is code (curate.ingest). Unknown keys are
errors, as everywhere in curate's configuration.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    image = "image"  # plain 2D images, no annotation (any other image family's files)


# families with an adapter in curate.ingest (a test keeps the two in step); the others
# are declared for sources/ and fail with a clear message until their adapters land
SUPPORTED_FAMILIES = frozenset(FormatFamily)


class View(StrEnum):
    """How the pixel grid relates to the patient; decides whether laterality can be stated."""

    axial = "axial"  # volume slices, reoriented to LPS: patient's left on image right
    coronal = "coronal"  # volume slices, head at the top, patient's left on image right
    sagittal = "sagittal"  # volume slices, head at the top, anterior on image left
    frontal = "frontal"  # frontal projection (PA/AP X-ray), radiological display
    lateral = "lateral"
    none = "none"  # no patient frame (dermoscopy, endoscopy, pathology, fundus, ...)


class BoxTable(Strict):
    """Boxes in pixel coordinates: a CSV (one row per box), a COCO JSON, or VOC XML files."""

    file: str = Field(
        description="csv/coco: the file relative to the source root; voc: a per-image "
        "template such as 'Annotations/{stem}.xml'"
    )
    format: Literal["csv", "coco", "voc", "json"] = "csv"
    coords: Literal["xyxy", "xywh"] = Field(
        default="xyxy", description="csv: corners, or top-left corner plus width and height "
        "(then x1_column/y1_column name the width/height columns)"
    )
    coords_column: str | None = Field(
        default=None,
        description="csv: one column holding the four numbers as text, e.g. DeepLesion's "
        "Bounding_boxes '226.2, 276.0, 268.8, 312.2' (then the x/y columns are unused)",
    )
    image_key: str | None = Field(
        default=None,
        description="template giving an image's key in the table from its path, e.g. "
        "'{folder}_{name}' (DeepLesion: Images_png/000001_01_01/109.png is "
        "000001_01_01_109.png); by default the path, a trailing part of it, or the stem",
    )
    image_key_tag: str | None = Field(
        default=None,
        description="DICOM images: the header attribute whose value keys the table, e.g. "
        "SOPInstanceUID (CQ500-BHX's boxes name slices by UID, not by file)",
    )
    spacing_column: str | None = Field(
        default=None,
        description="csv: a column with the image's pixel spacing in mm ('0.82, 0.82, 5': "
        "the first value, rows and columns alike; or 'row, col')",
    )
    listed_only: bool = Field(
        default=False,
        description="plan only the images the table names (DeepLesion: the key slices; "
        "its neighbouring slices are context, not images without findings)",
    )
    records: Literal["list", "keyed"] = Field(
        default="list",
        description="json: a list of objects naming their image in image_column, or an "
        "object keyed by image (name or stem)",
    )
    boxes_key: str = Field(
        default="boxes",
        description="json: each record's list of boxes, each [x0, y0, x1, y1] or an object "
        "with the x0..y1 columns (and label_column)",
    )
    labels_key: str | None = Field(
        default=None,
        description="json: a list parallel to boxes_key with each box's label (ChestX-Det's "
        "syms)",
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

    file: str | None = Field(
        default=None, description="CSV (.csv, .csv.gz) or Excel (.xlsx, first sheet) "
        "relative to the source root")
    image_column: str = "image"
    label_column: str | None = Field(default=None, description="single-label: the class")
    separator: str | None = Field(
        default=None, description="label_column holds several labels joined by this, e.g. '|'"
    )
    label_columns: list[str] = Field(
        default_factory=list, description="multi-label: one column per class"
    )
    list_in_cell: bool = Field(
        default=False,
        description="label_column holds a list literal, e.g. \"['pneumonia', 'effusion']\" "
        "(PadChest's Labels)",
    )
    positive_values: list[str] = Field(default_factory=lambda: ["1", "1.0", "True", "true"])
    from_folder: bool = Field(default=False, description="the image's parent folder is its class")
    from_name: str | None = Field(
        default=None,
        description="regex on the file name whose group 1 is the class code, e.g. "
        "'_(\\d)\\.png$' for CHNCXR_0001_1.png",
    )
    name_values: dict[str, str] = Field(
        default_factory=dict,
        description="from_name: code -> class (e.g. {'0': normal, '1': tuberculosis}); a "
        "code not listed is a planning problem",
    )
    image_key: str | None = Field(
        default=None,
        description="template giving an image's key in the table from its path, e.g. "
        "'{folder:^s=}' (MIMIC-CXR: files/p10/p10000032/s50414267/x.dcm is study 50414267); "
        "for a DICOM series its first file; by default the path, a trailing part or the stem",
    )
    key_columns: list[str] = Field(
        default_factory=list,
        description="further columns that, with image_column, key a row (CMMD: ID1 and "
        "LeftRight, one row per breast); matched against image_key_tags")
    image_key_tags: list[str] = Field(
        default_factory=list,
        description="DICOM images: header attributes whose values follow the image's key, "
        "one per key_columns entry (CMMD: ImageLaterality against LeftRight)")
    readers: list[str] = Field(
        default_factory=list,
        description="label_columns read by several people, one column per reader and class "
        "named PREFIX + class (CQ500's 'R1:ICH', 'R2:ICH', 'R3:ICH': readers ['R1:', 'R2:', "
        "'R3:']); a class is positive when min_votes readers mark it",
    )
    min_votes: int = Field(default=1, ge=1, description="with readers: votes a class needs")

    @model_validator(mode="after")
    def _keys_pair_up(self):
        if len(self.key_columns) != len(self.image_key_tags):
            raise ValueError("key_columns and image_key_tags pair up: give as many of each")
        return self

    @model_validator(mode="after")
    def _votes_within_readers(self):
        if self.readers and self.min_votes > len(self.readers):
            raise ValueError(f"min_votes {self.min_votes} exceeds the {len(self.readers)} readers")
        if self.readers and not self.label_columns:
            raise ValueError("readers need label_columns (the classes each reader marks)")
        return self


class RawImage(Strict):
    """Headerless raw image files (JSRT's .IMG): the shape and the stored sample type."""

    suffixes: list[str] = Field(default_factory=lambda: [".img", ".raw"],
                                description="file suffixes read as raw (case-insensitive)")
    shape: tuple[int, int] = Field(description="(rows, columns)")
    dtype: str = Field(default=">u2", description="NumPy dtype, e.g. '>u2' (16-bit big-endian)")
    bits: int | None = Field(default=None, ge=1, le=32,
                             description="bits stored: values above 2**bits - 1 are an error")


class RleMasks(Strict):
    """Masks as run-length encoded rows of a CSV (SIIM-ACR's train-rle.csv): one row per
    mask, several rows per image combined; an empty or "-1" cell means no finding."""

    file: str = Field(description="relative to the source root")
    image_column: str = "ImageId"
    rle_column: str = "EncodedPixels"
    order: Literal["column", "row"] = Field(
        default="column", description="pixels counted down columns (Fortran) or along rows")
    starts: Literal["relative", "absolute"] = Field(
        default="relative",
        description="each start counts from the end of the previous run (SIIM), or is a "
        "1-based absolute pixel index (most Kaggle RLE)",
    )


class WorldPoints(Strict):
    """Findings as points in patient space (millimetres) with a diameter, one row per
    finding in a CSV keyed by volume (LUNA16's annotations.csv: seriesuid, coordX, coordY,
    coordZ, diameter_mm): each becomes a sphere on the volume's grid, placed through the
    volume's own geometry (origin, spacing, direction)."""

    file: str = Field(description="relative to the source root; .csv or .csv.gz")
    image_column: str = "seriesuid"
    image_key: str | None = Field(
        default=None, description="template giving a volume's key in the table from its "
        "path; by default the path, a trailing part of it or the stem")
    x_column: str = "coordX"
    y_column: str = "coordY"
    z_column: str = "coordZ"
    coords_column: str | None = Field(
        default=None, description="one column with the three coordinates as text, e.g. "
        "PROSTATEx's pos '25.7457 31.8707 -38.511' (then the x/y/z columns are unused)")
    frame: Literal["LPS", "RAS"] = Field(
        default="LPS", description="the table's axes: LPS (DICOM, ITK, MetaImage world "
        "coordinates) or RAS (x and y negated to reach LPS)")
    outside: Literal["error", "skip"] = Field(
        default="error", description="a point outside its volume: an error (a wrong frame or "
        "key shows), or skipped with a note (findings keyed by patient, several series of "
        "different extent each)")
    diameter_column: str | None = "diameter_mm"
    volume_column: str | None = Field(
        default=None, description="a column with the finding's volume in mm3, drawn as the "
        "sphere of that volume (LNDb's Volume), when there is no diameter column")
    diameter_mm: float | None = Field(
        default=None, gt=0,
        description="fixed diameter when the table has no diameter column; only for a size "
        "the source itself states (a drawn marker's size becomes the ROI's size facts and "
        "text, so never use it to mark a bare point)")
    include: dict[str, list[str]] = Field(
        default_factory=dict, description="keep rows whose column holds one of these values "
        "(LNDb: {Nodule: ['1']} leaves out non-nodules)")
    label_column: str | None = None
    label: str = Field(default="finding", description="label when there is no label_column")
    label_names: dict[str, str] = Field(
        default_factory=dict, description="words for the label column's codes (PROSTATEx's "
        "ClinSig TRUE -> 'clinically significant finding'); when set, a code not listed is "
        "an error")
    extent: Literal["sphere", "point"] = Field(
        default="sphere", description="sphere: each finding drawn as a sphere of its diameter "
        "(a label volume); point: the source gives no extent (PROSTATEx), so each finding is "
        "a point ROI on the one slice that holds it, with no mask, area, size or volume")
    zone_column: str | None = Field(
        default=None, description="point extent: a column naming the anatomical zone the "
        "source places the finding in (PROSTATEx's zone: PZ, TZ, AS, SV)")
    zones: dict[str, str] = Field(
        default_factory=dict, description="the words for each zone code, e.g. {PZ: "
        "peripheral zone}; a code not listed is an error")

    @model_validator(mode="after")
    def _a_diameter(self):
        if self.extent == "point":
            if self.diameter_column or self.volume_column or self.diameter_mm:
                raise ValueError("extent: point has no size; set diameter_column: null and "
                                 "no volume_column or diameter_mm")
            return self
        if self.zone_column:
            raise ValueError("zone_column is read only with extent: point")
        if [self.diameter_column, self.volume_column, self.diameter_mm].count(None) != 2:
            raise ValueError("points need exactly one of diameter_column, volume_column or "
                             "a fixed diameter_mm (set diameter_column: null to use another)")
        return self


class FrameLabels(Strict):
    """Labels of video frames in one table per video (Cholec80's phase_annotations/
    video01-phase.txt, 'Frame<TAB>Phase', and tool_annotations/video01-tool.txt, one 0/1
    column per tool every 25th frame): a sampled frame takes the row at or before its
    frame number (the frame's time times the video's frame rate)."""

    file: str = Field(description="per-video template, e.g. 'phase_annotations/{stem}-phase.txt'")
    separator: str = Field(default="\t", description="column separator")
    frame_column: str = "Frame"
    label_column: str | None = Field(default=None, description="single label: its column")
    label_columns: list[str] = Field(
        default_factory=list, description="one 0/1 column per label (tool presence)")
    positive_values: list[str] = Field(default_factory=lambda: ["1", "1.0", "True", "true"])

    @model_validator(mode="after")
    def _some_label(self):
        if not self.label_column and not self.label_columns:
            raise ValueError("frame_labels need a label_column or label_columns")
        return self


class SlideRegions(Strict):
    """Polygons on a whole-slide image in level-0 pixel coordinates, one XML file per slide
    (ASAP's Annotation PartOfGroup=... / Coordinates / Coordinate X Y, as in CAMELYON),
    drawn on every tile read from the slide."""

    file: str = Field(description="per-slide template, e.g. 'training/lesion_annotations/{stem}.xml'")
    groups: dict[str, str | None] = Field(
        description="annotation group (PartOfGroup) -> label; null for a group that marks "
        "regions to leave out of the others (CAMELYON16's '_2' non-tumour islands inside a "
        "tumour); a group not listed is an error")


class FrameTracings(Strict):
    """Outlines traced on chosen video frames as chords, one CSV for all videos
    (EchoNet-Dynamic's VolumeTracings.csv: FileName, X1, Y1, X2, Y2, Frame): per video and
    frame the first row is the long axis and the others chords across it; the outline runs
    through the chords' first ends and back along their second ends, and is filled."""

    file: str = Field(description="relative to the source root")
    image_column: str = "FileName"
    frame_column: str = "Frame"
    x1_column: str = "X1"
    y1_column: str = "Y1"
    x2_column: str = "X2"
    y2_column: str = "Y2"
    first_is_axis: bool = Field(
        default=True, description="the first row of each frame is the long axis, not a chord")
    label: str = Field(description="what the filled outline is, e.g. left_ventricle")


class ReadingSessions(Strict):
    """Radiologists' outlines per slice in XML files beside a DICOM series (LIDC-IDRI:
    readingSession / unblindedReadNodule / roi with imageSOP_UID, inclusion and edgeMap
    pixel points; up to four readers), placed through each slice's own geometry."""

    file: str = Field(description="template of the series' XML file(s), e.g. '{parent}/*.xml'")
    min_readers: int = Field(
        default=1, ge=1, description="a voxel is labelled where this many readers outline it")
    label: str = "nodule"


class RoiFolders(Strict):
    """ROI masks as DICOM images in per-abnormality folders beside their image's folder
    (CBIS-DDSM: <case>/.../1-1.dcm is the mammogram; <case>_<n>/.../ holds abnormality
    n's ROI mask and cropped image), labelled per abnormality from case tables keyed by
    the first path component of a column. The mask is the file whose SeriesDescription
    is mask_series, else the one at the image's size with binary pixels; the rest of the
    folder (the crop) is consumed, never read as an image. No such file, two, or a mask
    of another size is a quarantine row naming the files (never resized)."""

    folder_regex: str = Field(
        default=r"^(.+)_(\d+)$", description="regex on an abnormality folder (a first path "
        "component): group 1 is its image's folder, group 2 the abnormality number")
    mask_series: str = Field(default="ROI mask images",
                             description="SeriesDescription of a mask file")
    crop_series: str | None = Field(
        default="cropped images", description="SeriesDescription of a crop (never a mask)")
    tables: list[str] = Field(
        min_length=1, description="case tables (CSV globs relative to the source root), "
        "one row per abnormality")
    key_column: str = Field(
        default="ROI mask file path", description="column whose first path component is "
        "the abnormality folder's name")
    label_columns: list[str] = Field(
        min_length=1, description="columns whose values, joined by a space, are the ROI's "
        "label (e.g. pathology and abnormality type: 'malignant mass')")
    label_words: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="per label column, the words a coded value is "
        "written as in the label and the text (CBIS-DDSM's pathology: {MALIGNANT: "
        "malignant, BENIGN_WITHOUT_CALLBACK: 'benign (no callback)'}); other values as "
        "published")
    number_column: str | None = Field(
        default=None, description="column that must equal the folder's abnormality number")
    image_column: str | None = Field(
        default=None, description="column whose first path component must be the image's "
        "folder")


class SliceMasks(Strict):
    """Per-slice 2D mask images beside a DICOM series, one per slice (CHAOS's
    <series>/../Ground/*.png): the masks of a series folder pair with its DICOM files by
    name order (the i-th mask with the i-th DICOM file, both in natural name order: the
    challenge's own evaluation rule) or by file stem, and each mask lands on the slice of
    its own DICOM file, found by that file's position (curate.ingest.slice_masks)."""

    series: str = Field(description="glob of the DICOM folders these masks belong to, "
                        "relative to the source root, e.g. 'Train_Sets/CT/*/DICOM_anon'")
    folder: str = Field(description="template of the mask folder from a DICOM file of the "
                        "series, e.g. '{parent:DICOM_anon$=Ground}'")
    files: str = Field(default="*.png", description="glob of the mask file names in that "
                       "folder (names starting with '.' are never masks)")
    pair: Literal["name_order", "stem"] = Field(
        default="name_order", description="name_order: the i-th mask with the i-th DICOM "
        "file of the folder (a count mismatch leaves the series out, named in the "
        "quarantine); stem: the mask whose stem is the DICOM file's stem (every file needs "
        "one)")
    labels: dict[str, tuple[int, int]] = Field(
        min_length=1, description="label -> inclusive range [low, high] of the mask values "
        "that mean it (low >= 1; 0 is background), e.g. {liver: [1, 255]} for any non-zero "
        "value; a value in no range follows layout.unknown_labels")

    @model_validator(mode="after")
    def _ranges_apart(self):
        spans = sorted((lo, hi, name) for name, (lo, hi) in self.labels.items())
        for lo, hi, name in spans:
            if not 1 <= lo <= hi:
                raise ValueError(f"slice_masks label {name}: range [{lo}, {hi}] must have "
                                 "1 <= low <= high")
        for (_, hi, a), (lo, _, b) in zip(spans, spans[1:], strict=False):
            if lo <= hi:
                raise ValueError(f"slice_masks labels {a} and {b} have overlapping ranges")
        return self


class SegmentationFile(Strict):
    """One 3D Slicer segmentation file (.seg.nrrd, its geometry in its header) of a series."""

    file: str = Field(description="template filled from the series' first file (as masks)")
    label: str | None = Field(
        default=None, description="every non-zero voxel is this label (a one-structure file "
        "whose segment names are not relied on)")
    segments: dict[str, str] = Field(
        default_factory=dict, description="segment name in the header (SegmentN_Name) -> "
        "label: its voxels equal SegmentN_LabelValue in layer SegmentN_Layer; painted in this "
        "order (a later one wins where they overlap); one absent or not listed is an error")

    @model_validator(mode="after")
    def _label_or_segments(self):
        if (self.label is None) == (not self.segments):
            raise ValueError("a segmentation file needs a label or segments, not both")
        return self


class SeriesRoles(Strict):
    """A table naming series by UID and role: which series per-patient files were drawn on."""

    file: str = Field(description=".csv or .xlsx (first sheet) relative to the source root")
    uid_column: str
    uid_part: int | None = Field(
        default=None, description="the '/'-separated part of uid_column holding the "
        "SeriesInstanceUID (-2: the folder of 'C/P/Study/Series/1-1.dcm'); null: the value")
    role_column: str
    role_part: int | None = Field(default=None, description="as uid_part, for role_column")
    role: str = Field(description="the role of the series the files were drawn on")


class SeriesSegmentations(Strict):
    """Segmentation files of one series per patient, that series chosen by a role table;
    resampled onto it by geometry (a label reaching beyond its grid is quarantined)."""

    series: SeriesRoles
    files: list[SegmentationFile] = Field(
        min_length=1, description="painted in this order; a later file wins where they overlap")


class MdaiExport(Strict):
    """An MD.ai annotation export for DICOM series (MIDRC-RICORD): one JSON with
    datasets[].annotations[] (UIDs, labelId, data) and labelGroups[].labels[] (id, name)."""

    file: str = Field(description="the export, relative to the source root")
    ignore: list[str] = Field(default_factory=list, description="label names not to read")


class QATable(Strict):
    """Question-answer pairs written by people (VQA-RAD, SLAKE, PathVQA): JSON, JSONL, CSV,
    or a pickle of plain rows (PathVQA's *_qa.pkl), read without running code from it: a
    pickle that names any class or function is refused whole (curate.ingest.qa_pickle).
    """

    file: str = Field(description="relative to the source root")
    format: Literal["json", "jsonl", "csv", "pickle"] = Field(
        default="json", description="pickle: a list of dicts holding only text and numbers")
    image_column: str = "image"
    image_key: str | None = Field(
        default=None,
        description="template giving an image's value in image_column from its path, e.g. "
        "'{stem}' (PathVQA: split/images/train/train_0001.jpg is 'train_0001'), matched "
        "exactly; by default the path, a trailing part of it, or the stem",
    )
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
    duplicate_positions: Literal["first", "reject"] = Field(
        default="first",
        description="DICOM series with several instances at one position (re-sent or "
        "re-encoded copies): keep the first file of each position, or reject",
    )
    gaps: Literal["split", "reject"] = Field(
        default="split",
        description="DICOM series with a step between slices over max_gap times the median "
        "step (missing slices): split into sub-volumes at each gap, or reject; never "
        "interpolated across",
    )
    max_gap: float = Field(
        default=2.5, gt=1,
        description="a slice step over this multiple of the median step is a gap",
    )
    four_d: Literal["first", "mean", "split"] = Field(
        default="first",
        description="4D NIfTI (time or channels): the first volume, the mean over the 4th "
        "axis, or every volume as its own case",
    )
    max_voxels: int = Field(
        default=1_000_000_000, ge=1,
        description="voxel budget per volume (all axes multiplied), checked from the file's "
        "header before any voxel is read; a larger volume becomes a quarantine row",
    )


class Layout(Strict):
    """Where a source's files are and how annotations are named.

    Templates may use {stem} (file name without its last suffix; .nii.gz counts as one:
    case.v1.png -> case.v1), {name} (file name), {parent} (the image's folder relative
    to the source root), {folder} (the last part of {parent}) and {case} (case_regex).
    """

    @model_validator(mode="after")
    def _threshold_needs_one_label(self):
        if self.mask_threshold is not None and len([v for v in self.label_map if v]) != 1:
            raise ValueError("mask_threshold needs a label_map with exactly one non-zero "
                             "value (the value a thresholded pixel gets)")
        if self.points is not None and self.masks:
            raise ValueError("points and masks are both label volumes; declare one of them")
        if self.slice_masks and self.masks:
            raise ValueError("slice_masks and masks are both label volumes; declare one of them")
        return self

    images: list[str] = Field(description="glob(s) relative to the source root")
    exclude: list[str] = Field(default_factory=list, description="globs to leave out")
    masks: str | None = Field(
        default=None,
        description="mask/label file template, e.g. 'labelsTr/{name}'; with * or ? after "
        "filling (e.g. '{parent}/{stem}_mask*.png') every matching file is a mask of the "
        "image (one per lesion), combined",
    )
    mask_threshold: int | None = Field(
        default=None, ge=1,
        description="lossy (JPEG) masks: a pixel at or above this grey value is the "
        "label_map's single value, below it background",
    )
    mask_label_from: Literal["value", "folder", "stem"] = Field(
        default="value",
        description="'value': mask values name labels through label_map; 'folder' or "
        "'stem': every file the masks pattern matches is one structure, its non-zero "
        "pixels labelled by the file's folder or stem (TotalSegmentator's "
        "segmentations/liver.nii.gz, EndoVis' <instrument>_labels/ folders)",
    )
    mask_label_regex: str | None = Field(
        default=None,
        description="with mask_label_from: group 1 of this regex on the folder or stem is "
        "the label (e.g. '^(.*)_labels$')",
    )
    mask_channels: list[str | None] = Field(
        default_factory=list,
        description="masks with one channel per class (PanNuke's masks.npy, N x H x W x 6): "
        "the label of each channel, null for one that is not a label (background); the "
        "label_map is then channel i+1 -> its label",
    )
    mask_key: str | None = Field(
        default=None,
        description="masks in .mat or .npz files: the array to read (e.g. inst_map)",
    )
    rle: RleMasks | None = Field(
        default=None, description="masks as run-length encoded rows of a CSV")
    raw: RawImage | None = Field(
        default=None, description="headerless raw image files: their shape and sample type")
    mask_fill: Literal["none", "outline"] = Field(
        default="none",
        description="'outline': masks draw each region's outline (HC18's ellipse); the "
        "inside of each closed outline is filled, per label value",
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
    regions: SlideRegions | None = Field(
        default=None, description="wsi: polygon annotations in level-0 coordinates (ASAP XML)")
    mdai: MdaiExport | None = Field(
        default=None, description="dicom: outlines and exam labels from an MD.ai export")
    roi_folders: RoiFolders | None = Field(
        default=None, description="dicom: ROI masks in per-abnormality folders beside "
        "the image's folder, labelled from case tables (CBIS-DDSM)")
    slice_masks: list[SliceMasks] = Field(
        default_factory=list, description="dicom: per-slice 2D mask images beside a series "
        "(CHAOS's Ground PNGs), one entry per kind of series folder")
    readings: ReadingSessions | None = Field(
        default=None, description="dicom: readers' outlines in XML beside each series (LIDC)")
    segmentations: SeriesSegmentations | None = Field(
        default=None, description="dicom: 3D Slicer segmentation files of the one series per "
        "patient that a role table names (Duke's pre-contrast series)")
    tracings: FrameTracings | None = Field(
        default=None, description="video: outlines traced as chords on chosen frames; those "
        "frames are read (instead of evenly spaced ones) with the filled outline as mask")
    frame_labels: list[FrameLabels] = Field(
        default_factory=list, description="video: per-frame label tables, one per video each")
    points: WorldPoints | None = Field(
        default=None, description="volumes: findings as world-coordinate points with a "
        "diameter (spheres), from a CSV")
    volume: VolumeRules = VolumeRules()
    dicom_per_file: bool = Field(
        default=False,
        description="dicom: every file is its own case (exports that put unrelated images "
        "under one SeriesInstanceUID), instead of one case per series",
    )
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
    max_image_pixels: int = Field(
        default=100_000_000, ge=1,
        description="pixel budget per 2D image (width x height), checked from the file's "
        "header before decoding; a larger image becomes a quarantine row",
    )
    allow_symlinks_outside: bool = Field(
        default=False,
        description="use files whose resolved path leaves the source root (symlinks to "
        "elsewhere); by default they are refused as planning problems naming the link",
    )
    unknown_labels: Literal["quarantine", "keep", "ignore"] = Field(
        default="quarantine",
        description="mask values absent from a non-empty label_map: quarantine the case "
        "(listing the values), keep them as 'label N', or ignore them (treated as background)",
    )
    intensity_offset: float | None = Field(
        default=None,
        description="2D families: added to the stored pixel values to give modality units "
        "(DeepLesion's 16-bit PNGs store HU + 32768: -32768); for CT the image is then "
        "windowed in HU like a CT slice",
    )
    nonfinite: Literal["quarantine", "zero"] = Field(
        default="quarantine",
        description="NaN/inf pixels or voxels: quarantine the case, or set them to 0 and "
        "note it on the sample",
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


class ConfirmedBy(StrEnum):
    """What a source's declared layout was checked against, strongest first."""

    release_file = "release_file"  # a file shipped in the release (dataset.json, README, header)
    authors_page = "authors_page"  # the authors' or challenge's page, README or data descriptor
    authors_code = "authors_code"  # the authors' loader, conversion or evaluation code
    paper = "paper"  # the paper describing the data (a DOI or arXiv/journal URL)
    data_index = "data_index"  # the record serving the files (NCI IDC index, Zenodo, GigaDB)
    public_loader = "public_loader"  # a widely used third-party loader (torch-em, MONAI, ...)
    catalogue = "catalogue"  # a third-party catalogue or redistribution (dataset-ninja, a mirror)
    # nothing outside curate: its miniature is written from the declaration itself, so `what`
    # names the facts that stay unconfirmed (recalled, from memory, from unnamed code)
    miniature_only = "miniature_only"


# a reference is a URL, a DOI, or a repository path owner/repo/path (no spaces)
REF = (r"^(https?://\S+|doi:10\.\d{4,9}/\S+|10\.\d{4,9}/\S+"
       r"|[A-Za-z0-9][\w.-]*/[\w.-]+/\S+)$")


class Confirmation(Strict):
    """One piece of evidence for a source's declared layout: what it was checked against,
    where that is, and which facts it confirms (or, for miniature_only, leaves open)."""

    by: ConfirmedBy
    ref: str | None = Field(
        default=None, pattern=REF,
        description="a URL, a DOI (doi:10.x/y) or a repository path (owner/repo/path); "
        "required except for miniature_only")
    what: str = Field(min_length=3, description="the facts it confirms (layout, columns, "
                      "label values, licence), or what stays unconfirmed")

    @model_validator(mode="after")
    def _ref_unless_miniature(self):
        if self.ref is None and self.by is not ConfirmedBy.miniature_only:
            raise ValueError(f"confirmed by {self.by.value} needs a ref (URL, DOI or repo path)")
        return self


class PhantomSpec(Strict):
    """Generate a synthetic source with known ground truth (see curate.sources.phantoms)."""

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
    record_paths: bool = Field(
        default=True,
        description="record each sample's input files (paths relative to the source root) "
        "in the manifest's source_files; set false for private data whose file or folder "
        "names identify people",
    )
    cohort_diagnosis: str | None = Field(
        default=None, min_length=3,
        description="the diagnosis every patient of this source has on record, when the "
        "collection is defined by it (CPTAC-LUAD: lung adenocarcinoma): a label of the "
        "patient, not of any image; it goes in the manifest's patient_labels and is stated "
        "as patient context, never as a finding seen in or located on the image")
    confirmed: list[Confirmation] | None = Field(
        default=None, min_length=1,
        description="how the declared layout was confirmed: the authors' page or code, a "
        "paper, a public loader, a data index; miniature_only where nothing outside curate "
        "was checked")
    notes: str | None = None

    def normalised_label(self, label: str) -> str:
        return self.findings.get(label, label)

    def patient_labels(self) -> list[str]:
        """Labels of every patient of this source (not of an image): the cohort diagnosis."""
        return [self.cohort_diagnosis] if self.cohort_diagnosis else []


class SourceRef(Strict):
    """A recipe entry naming a declared source in sources/, with its local path."""

    source: str = Field(pattern=SLUG)
    path: str | None = None
    window: str | None = None
    allow_burned_in: bool = False
