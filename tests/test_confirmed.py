"""Every declared source says how its layout was confirmed (issue 8), in a checkable form:
`confirmed` entries naming what was checked (by), where (ref: a URL, a DOI or a repository
path) and which facts (what), with what stays unconfirmed said as such."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from curate.model.recipe import load_source_registry
from curate.model.source import Confirmation, ConfirmedBy, SourceSpec
from curate.sources.docs import confirmed_by, confirmed_section, ref_url, render_sources_doc

# sources whose helpers are rewriting them in this session; the lead fills their entries and
# removes them from this set
NOT_YET_FILLED: set[str] = set()  # sources allowed without a `confirmed` list: none

# what a note says when a fact was taken on trust; such a source must list what is unconfirmed
TAKEN_ON_TRUST = re.compile(
    r"not verified|not re-checked|from memory|recalled|(?:was|were) not read|not checked against",
    re.I)

URL = re.compile(r"^https?://[A-Za-z0-9.-]+\.[A-Za-z]{2,}(/\S*)?$")
DOI = re.compile(r"^(doi:)?10\.\d{4,9}/\S+$")
REPO_PATH = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+/[\w./#-]*[\w-]$")


@pytest.fixture(scope="module")
def registry() -> dict[str, SourceSpec]:
    return load_source_registry()


def test_every_source_says_how_its_layout_was_confirmed(registry):
    missing = sorted(n for n, s in registry.items() if not s.confirmed and n not in NOT_YET_FILLED)
    assert not missing, f"sources without a `confirmed` list: {missing}"
    stale = sorted(NOT_YET_FILLED - set(registry))
    assert not stale, f"exceptions naming no declared source: {stale}"


def test_refs_are_urls_dois_or_repository_paths(registry):
    bad = []
    for name, spec in registry.items():
        for c in spec.confirmed or []:
            if c.ref is None:
                if c.by is not ConfirmedBy.miniature_only:
                    bad.append((name, c.by.value, "no ref"))
            elif not (URL.match(c.ref) or DOI.match(c.ref) or REPO_PATH.match(c.ref)):
                bad.append((name, c.by.value, c.ref))
            elif not URL.match(ref_url(c.ref)):
                bad.append((name, c.by.value, f"{c.ref} -> {ref_url(c.ref)}"))
    assert not bad, bad


def test_facts_taken_on_trust_are_listed_as_unconfirmed(registry):
    """A note saying a fact was recalled or not verified needs a miniature_only entry naming
    what stays open, so the structured field never reads stronger than the notes."""
    lacking = []
    for name, spec in registry.items():
        if not spec.confirmed:
            continue
        text = " ".join([spec.notes or "", spec.license.name if spec.license else ""])
        found = TAKEN_ON_TRUST.search(text)
        if found and not any(c.by is ConfirmedBy.miniature_only for c in spec.confirmed):
            lacking.append((name, found.group(0)))
    assert not lacking, lacking


def test_a_source_confirmed_only_by_itself_says_so(registry):
    for name, spec in registry.items():
        kinds = {c.by for c in spec.confirmed or []}
        if kinds == {ConfirmedBy.miniature_only}:
            assert confirmed_by(spec) == "nothing outside curate", name
        elif ConfirmedBy.miniature_only in kinds:
            assert confirmed_by(spec).endswith("+ open points"), name


def test_confirmation_model_is_strict():
    ok = Confirmation(by="public_loader", ref="owner/repo/pkg/loader.py", what="label values")
    assert ok.by is ConfirmedBy.public_loader
    assert Confirmation(by="miniature_only", what="unconfirmed: folder names").ref is None
    for bad in (
        {"by": "paper", "what": "label values"},  # evidence without a ref
        {"by": "paper", "ref": "Smith J et al. A dataset. 2020", "what": "labels"},  # citation text
        {"by": "paper", "ref": "repo/only", "what": "labels"},  # not owner/repo/path
        {"by": "hearsay", "ref": "https://example.org/x", "what": "labels"},  # unknown kind
        {"by": "paper", "ref": "doi:10.1/x", "what": "labels", "date": "2024"},  # unknown key
        {"by": "paper", "ref": "https://example.org/x", "what": ""},  # says nothing
    ):
        with pytest.raises(ValidationError):
            Confirmation(**bad)


def test_source_spec_rejects_an_empty_confirmed_list(registry):
    spec = registry["acdc"].model_dump(mode="json", exclude_none=True)
    spec["confirmed"] = []
    with pytest.raises(ValidationError):
        SourceSpec.model_validate(spec)


def test_ref_links():
    assert ref_url("doi:10.1038/s41597-022-01718-3") == \
        "https://doi.org/10.1038/s41597-022-01718-3"
    assert ref_url("neheller/kits23/kits23/configuration/labels.py") == \
        "https://github.com/neheller/kits23/blob/HEAD/kits23/configuration/labels.py"
    assert ref_url("https://zenodo.org/records/1") == "https://zenodo.org/records/1"


def test_docs_list_each_sources_evidence(registry):
    specs = [registry[n] for n in sorted(registry)]
    section = confirmed_section(specs)
    lines = [ln for ln in section.splitlines() if ln.startswith("- `")]
    assert len(lines) == len(specs)
    camus = next(ln for ln in lines if ln.startswith("- `camus`"))
    assert "(https://github.com/vitalab/vital/blob/HEAD/vital/data/camus/config.py)" in camus
    # file patterns are escaped, so Markdown neither italicises nor swallows them as tags
    assert "\\_half\\_sequence\\[\\_gt\\]" in camus
    page = render_sources_doc(registry)
    assert "| confirmed by |" in page and "## How each layout was confirmed" in page
    assert f"| {confirmed_by(registry['camus'])} |" in page
