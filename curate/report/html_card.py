"""card.html: the data card as one self-contained page (figures as data URIs), rendered
from the same Markdown as README.md with markdown-it-py, laid out to fit any width."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import yaml

from curate.model.errors import MissingDependency

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24;
       max-width: 1100px; margin: 0 auto; padding: 16px 24px; box-sizing: border-box;
       overflow-wrap: break-word; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; margin: 8px 0; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; text-align: left;
         overflow-wrap: break-word; }
th { background: #f6f8fa; }
pre { background: #f6f8fa; padding: 10px; white-space: pre-wrap; overflow-wrap: anywhere; }
code { font-size: 90%; overflow-wrap: break-word; }
blockquote { margin: 8px 0; padding: 0 12px; border-left: 4px solid #d0d7de; color: #444; }
details { margin: 12px 0; }
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_html(text: str, root: Path) -> str:
    """HTML of a Markdown body (tables on), images under `root` inlined as data URIs."""
    try:
        from markdown_it import MarkdownIt
    except ImportError as exc:
        raise MissingDependency("markdown-it-py") from exc
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_image = md.renderer.rules["image"]

    def image(renderer, tokens, idx, options, env):
        token = tokens[idx]
        src = token.attrGet("src") or ""
        local = root / src
        if "://" not in src and local.is_file():
            token.attrSet("src", _data_uri(local))
        return default_image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    return md.render(text)


def write_html(dest: Path, front: dict, body: str, root: Path) -> Path:
    """Write dest (card.html): the rendered body, then the front matter the hub reads."""
    title = html.escape(str(front.get("pretty_name") or "data card"))
    meta = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=100)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{title}</title><style>{STYLE}</style></head><body>\n"
        + markdown_html(body, root)
        + "<details><summary>Hub metadata (the front matter of README.md)</summary>"
        f"<pre><code>{html.escape(meta)}</code></pre></details>\n</body></html>\n")
    dest.write_text(page, encoding="utf-8")
    return dest
