"""Recipe validation errors name file:line:col and at most one suggestion; optional sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from curate.load import check_required, load_recipe, required_missing
from curate.model.errors import ConfigError
from curate.model.recipe import Recipe, SourceRef, SourceSpec, is_optional
from curate.model.recipe import load_recipe as load_recipe_model


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    return str(exc.value)


def test_typo_in_inline_source_points_at_line_with_one_suggestion(tmp_path):
    p = _write(tmp_path, """name: t
sources:
  - name: inline-src
    format: nifti
    layot: {images: ["*.nii.gz"]}
    path: x
""")
    msg = _error(p)
    assert f"{p}:5:5: sources.0.layot: Extra inputs are not permitted; did you mean 'layout'?" \
        in msg
    assert msg.count("did you mean") == 1
    # one model is tried, not every branch of the union
    assert "SourceRef" not in msg and "source\n" not in msg and "InlineSource" not in msg


def test_typo_in_source_reference_and_top_level(tmp_path):
    p = _write(tmp_path, """name: t
sources:
  - source: acdc
    optinal: true
normalise: {max_size: 10}
""")
    msg = _error(p)
    assert f"{p}:4:5: sources.0.optinal:" in msg and "did you mean 'optional'?" in msg
    assert f"{p}:5:1: normalise:" in msg and "did you mean 'normalize'?" in msg


def test_nested_value_error_and_model_error_have_lines(tmp_path):
    p = _write(tmp_path, """name: t
sources:
  - source: acdc
normalize:
  max_size: 8
split: {train: 0.5, val: 0.1, test: 0.1}
""")
    msg = _error(p)
    assert f"{p}:5:3: normalize.max_size:" in msg
    assert f"{p}:6:1: split:" in msg and "sum to 1" in msg


def test_unrelated_typo_gets_no_suggestion(tmp_path):
    msg = _error(_write(tmp_path, "name: t\nsources:\n  - source: acdc\nzzzzqqq: 1\n"))
    assert "zzzzqqq" in msg and "did you mean" not in msg
    assert re.search(r":4:1: zzzzqqq:", msg)


def test_empty_sources_is_an_error(tmp_path):
    p = _write(tmp_path, "name: t\nsources: []\n")
    for load in (load_recipe, load_recipe_model):
        with pytest.raises(ConfigError, match="at least one source") as exc:
            load(p)
        assert f"{p}:2:1: sources" in str(exc.value)
    Recipe(name="t", sources=[])  # code (tests, phantoms) may still build one empty


def test_plugin_errors_point_at_line(tmp_path):
    msg = _error(_write(tmp_path, "name: t\nsources:\n  - source: acdc\nexperts:\n"
                                  "  - name: nope\n"))
    assert re.search(r"r\.yaml:5:5: experts\.0: unknown expert 'nope'", msg)


def test_optional_field_and_required_missing(tmp_path):
    p = _write(tmp_path, """name: t
sources:
  - source: acdc
  - {source: amos, optional: true}
  - name: inline-src
    format: nifti
    layout: {images: ["*.nii.gz"]}
    path: x
    optional: true
""")
    recipe = load_recipe(p)
    assert [is_optional(e) for e in recipe.sources] == [False, True, True]
    records = [{"source": "acdc", "missing": "no folder at /x"},
               {"source": "amos", "missing": "no folder at /y"},
               {"source": "inline-src", "missing": "no files match"}]
    assert required_missing(recipe, records) == ["acdc"]
    assert required_missing(recipe, [{**r, "missing": None} for r in records]) == []
    with pytest.raises(ConfigError, match="acdc: no folder at /x"):
        check_required(recipe, records, str(p))
    check_required(recipe, records[1:])


def test_resolved_inline_source_is_a_plain_spec(tmp_path):
    recipe = load_recipe(_write(tmp_path, """name: t
sources:
  - name: inline-src
    format: nifti
    layout: {images: ["*.nii.gz"]}
    path: x
    optional: true
"""))
    from curate.model.recipe import resolve_sources
    (spec,) = resolve_sources(recipe, tmp_path, tmp_path / "out", registry={})
    assert type(spec) is SourceSpec and "optional" not in spec.model_dump()
    SourceSpec.model_validate(spec.model_dump())


def test_plain_models_built_in_code_are_accepted():
    spec = SourceSpec(name="s", format="nifti", layout={"images": ["*.nii.gz"]}, path="x")
    recipe = Recipe(name="t", sources=[spec, SourceRef(source="acdc")])
    assert [is_optional(e) for e in recipe.sources] == [False, False]
