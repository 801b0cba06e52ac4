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


def _located(problem: str, where: str, marks: config.Marks | None) -> str:
    """'file:line:col: problem' when the problem starts with a dotted path in the file."""
    head, sep, _ = problem.partition(": ")
    if not sep or not marks:
        return problem
    loc = tuple(int(p) if p.isdigit() else p for p in head.split("."))
    located = config._where(where, loc, marks)
    return f"{located}: {problem}" if located != where else problem


def check_plugins(recipe: config.Recipe, where: str = "recipe",
                  marks: config.Marks | None = None) -> config.Recipe:
    """The recipe unchanged, or ConfigError listing every unknown name and bad param."""
    problems = plugin_errors(recipe)
    if problems:
        raise ConfigError("\n".join([f"{where}: invalid configuration",
                                     *(f"  {_located(p, where, marks)}" for p in problems)]))
    return recipe


def load_recipe(path: Path) -> config.Recipe:
    """Read, validate and check a recipe file: the loader for builds and the CLI."""
    recipe = config.load_recipe(path)
    try:
        marks = config.load_yaml_marked(path)[1]
    except ConfigError:
        marks = None
    return check_plugins(recipe, str(path), marks)


def required_missing(recipe: config.Recipe, records: list[dict]) -> list[str]:
    """Names of the recipe's sources that planning found missing and that are not optional.

    records: the plan records ({"source": NAME, "missing": REASON or None, ...}). A source
    marked `optional: true` in the recipe may be missing (it is skipped with a notice);
    any other missing source must fail the build.
    """
    optional = {config.entry_name(e): config.is_optional(e) for e in recipe.sources}
    return [r["source"] for r in records
            if r.get("missing") and not optional.get(r["source"], False)]


def check_required(recipe: config.Recipe, records: list[dict], where: str = "recipe") -> None:
    """ConfigError naming every missing source the recipe does not mark optional."""
    names = required_missing(recipe, records)
    if names:
        why = {r["source"]: r["missing"] for r in records}
        raise ConfigError("\n".join([
            f"{where}: {len(names)} required source(s) missing (mark a source "
            "`optional: true` in the recipe to skip it when absent):",
            *(f"  {n}: {why[n]}" for n in names)]))
