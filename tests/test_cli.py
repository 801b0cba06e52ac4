import click
from click.testing import CliRunner

from curate.cli import main


def walk(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, (*prefix, name))


def test_every_command_has_help():
    for path, cmd in walk(main):
        assert cmd.help and len(cmd.help) > 10, f"{' '.join(path)} has no help text"
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output


def test_build_dry_run_prints_plan(tmp_path):
    from tests.conftest import ROOT
    result = CliRunner().invoke(main, ["build", str(ROOT / "recipes" / "demo.yaml"), "--out",
                                       str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "sources found: 5" in result.output and "work units:" in result.output


def test_bad_recipe_is_a_clean_error(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\nsources: []\nbogus: 1\n")
    result = CliRunner().invoke(main, ["build", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "bogus" in result.output
    assert "Traceback" not in result.output
