"""Recipe snippets in the docs and README must be valid configuration."""

import re

import pytest
import yaml

from curate.model.recipe import DescribeConfig, Recipe, SourceSpec
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def yaml_blocks(path):
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_yaml_snippets_validate(path):
    for block in yaml_blocks(path):
        if block.lstrip().startswith("---"):
            continue  # front matter examples, not configuration
        data = yaml.safe_load(block)
        if not isinstance(data, dict):
            continue
        if "sources" in data and "name" in data:
            Recipe.model_validate(data)
        elif set(data) == {"experts"}:
            Recipe.model_validate({"name": "x", "sources": [], **data})
        elif set(data) == {"describe"}:
            DescribeConfig.model_validate(data["describe"])
        elif "format" in data and "layout" in data:
            SourceSpec.model_validate(data)
