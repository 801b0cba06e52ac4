"""Load a recipe and check the plug-in names it gives against their registries.

The recipe model (curate.model.recipe) imports nothing else in curate, so it cannot know
which experts or generator options exist. This module may import both sides: it
validates the recipe, then asks the expert registry and the generator factory about
the names the recipe uses, so a typo still fails when the recipe loads.
"""

from __future__ import annotations

from pathlib import Path

from curate.describe.backends.factory import describe_errors
from curate.model import recipe as config
from curate.model.errors import ConfigError
from curate.unit.experts.registry import expert_errors


def plugin_errors(recipe: config.Recipe) -> list[str]:
    """Problems with the recipe's expert entries and describe options, one per line."""
    return [*expert_errors(recipe.experts), *describe_errors(recipe.describe)]


def check_plugins(recipe: config.Recipe, where: str = "recipe") -> config.Recipe:
    """The recipe unchanged, or ConfigError listing every unknown name and bad param."""
    problems = plugin_errors(recipe)
    if problems:
        raise ConfigError("\n".join([f"{where}: invalid configuration",
                                     *(f"  {p}" for p in problems)]))
    return recipe


def load_recipe(path: Path) -> config.Recipe:
    """Read, validate and check a recipe file: the loader for builds and the CLI."""
    return check_plugins(config.load_recipe(path), str(path))
