import yaml

from curate.build import build
from curate.model.recipe import load_recipe, load_source_registry
from tests.conftest import ROOT


def test_medtrinity_recipe_lists_every_declared_source():
    recipe = load_recipe(ROOT / "recipes" / "medtrinity.yaml")
    names = {s.source for s in recipe.sources}
    assert names == set(load_source_registry(ROOT / "sources"))


def test_medtrinity_dry_run_reports_found_and_missing(tmp_path):
    # one source present in a data root, the rest absent
    root = tmp_path / "data" / "msd-task03-liver"
    (root / "imagesTr").mkdir(parents=True)
    (root / "imagesTr" / "liver_0.nii.gz").write_bytes(b"x")  # not empty: planned
    lines = []
    record = build(ROOT / "recipes" / "medtrinity.yaml", tmp_path / "out", dry_run=True,
                   data_root=str(tmp_path / "data"), log=lines.append)
    assert record["found"] == ["msd-task03-liver"] and record["units"] == 1
    assert len(record["missing"]) == len(load_source_registry(ROOT / "sources")) - 1
    assert "skipped" in lines[0] and not (tmp_path / "out").exists()


def test_every_recipe_is_valid():
    for path in (ROOT / "recipes").glob("*.yaml"):
        load_recipe(path)
        assert yaml.safe_load(path.read_text())["name"] == path.stem


def test_a_declared_source_is_found_inside_the_folder_its_archive_kept(tmp_path):
    """`curate sources fetch kvasir-seg ROOT/kvasir-seg` leaves Kvasir-SEG/ (the archive's
    own top folder) beside the archive; --data-root ROOT must still find the images. A
    folder the layout itself names (HC18's training_set/) is not stepped into."""
    from curate.model.recipe import Recipe, resolve_sources
    data = tmp_path / "data"
    (data / "kvasir-seg" / "Kvasir-SEG" / "images").mkdir(parents=True)
    (data / "kvasir-seg" / "Kvasir-SEG" / "masks").mkdir()
    (data / "kvasir-seg" / "kvasir-seg.zip").write_bytes(b"PK")
    (data / "hc18" / "training_set").mkdir(parents=True)
    recipe = Recipe(name="t", sources=[{"source": "kvasir-seg"}, {"source": "hc18"}])
    specs = {s.name: s for s in resolve_sources(recipe, tmp_path, tmp_path / "out",
                                                data_root=str(data))}
    assert specs["kvasir-seg"].path == str(data / "kvasir-seg" / "Kvasir-SEG")
    assert specs["hc18"].path == str(data / "hc18")
