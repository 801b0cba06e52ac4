import json

import pytest
import yaml

from curate.model.errors import ConfigError
from curate.model.recipe import Recipe, load_recipe, load_source_registry, resolve_path
from curate.model.schemas import render_schemas
from tests.conftest import ROOT


def test_demo_recipe_is_valid():
    recipe = load_recipe(ROOT / "recipes" / "demo.yaml")
    assert recipe.name == "demo"
    assert len(recipe.sources) == 5


def test_unknown_key_is_an_error(tmp_path):
    bad = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    bad["normalise"] = {"max_size": 10}  # typo of 'normalize'
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="normalise"):
        load_recipe(path)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        Recipe.model_validate({"name": "x", "sources": [], "split": {"train": 0.9, "val": 0.2,
                                                                      "test": 0.0}})


def test_duplicate_source_names_rejected():
    src = {"name": "a", "format": "nifti", "path": "/x", "layout": {"images": ["*.nii"]}}
    with pytest.raises(ValueError, match="unique"):
        Recipe.model_validate({"name": "x", "sources": [src, src]})


def test_pkg_paths_resolve_inside_installed_packages(tmp_path):
    p = resolve_path("pkg:pydicom/data/test_files", tmp_path)
    assert (p / "CT_small.dcm").is_file()
    with pytest.raises(ConfigError, match="not installed"):
        resolve_path("pkg:no_such_package_xyz/data", tmp_path)


def test_schema_files_are_current():
    for name, text in render_schemas().items():
        on_disk = (ROOT / "schemas" / name).read_text()
        assert json.loads(on_disk) == json.loads(text), f"run `curate schemas` to refresh {name}"


def test_declared_sources_load_and_match_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schemas" / "source.schema.json").read_text())
    registry = load_source_registry(ROOT / "sources")
    for path in sorted((ROOT / "sources").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    assert set(registry) == {p.stem for p in (ROOT / "sources").glob("*.yaml")}
