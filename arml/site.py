"""The course site: the executed notebooks, the README and ``docs/*.md`` as static HTML (``make site``).

``python -m arml.site --out build/site`` writes, mirroring the repository's layout so that relative links
keep working::

    build/site/index.html             table of contents: README, notebooks 01.. in order, docs in order
    build/site/README.html
    build/site/notebooks/<name>.html  nbconvert's "lab" template, outputs as committed (nothing is executed)
    build/site/docs/<name>.html

Notebooks are rendered with nbconvert's :class:`~nbconvert.HTMLExporter` (figures are embedded ``data:``
PNGs), Markdown with mistune (both come with JupyterLab; see ``docs/course_site.md`` for why not Jupyter
Book). Relative links to a ``.md`` or ``.ipynb`` page of the site are rewritten to its ``.html``; local images
in Markdown are embedded, so every page is one self-contained file. A site has no kernel, so widget views are
dropped from the outputs and each widget shows its ``text/plain`` (for notebook 03's browser: a static
figure and a one-line hint, :class:`arml.viz.pseudo.PseudoMaskBrowser`). A notebook's takeaways are the
heading whose text contains "Takeaway"; the contents page links to it.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import mimetypes
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from arml.runtime import REPO_ROOT

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_HREF = re.compile(r'href="([^"#?:]+\.(?:md|ipynb))(#[^"]*)?"')
_HEADING = re.compile(r'<h([1-6]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
_TAG = re.compile(r"<[^>]+>")

_NAV_CSS = """
nav.arml-nav { font: 14px system-ui, sans-serif; padding: .6rem 1rem; border-bottom: 1px solid #ddd;
               background: #f6f8fa; }
nav.arml-nav a { margin-right: 1rem; }
"""
_CSS = (
    _NAV_CSS
    + """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 0 auto; padding: 0 1.5rem 3rem;
       line-height: 1.5; color: #1d1d1f; }
pre, code { background: #f6f8fa; border-radius: 4px; } pre { padding: .7rem; overflow-x: auto; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .25rem .6rem; }
img { max-width: 100%; }
ol.toc li { margin: .35rem 0; } .toc .note { color: #666; font-size: 90%; }
"""
)


@dataclass(frozen=True)
class Page:
    """One page of the site.

    Attributes:
        source: the ``.md`` or ``.ipynb`` file, relative to the source root.
        title: the first Markdown heading (else the file name).
        kind: ``"readme"``, ``"notebook"`` or ``"doc"``.
    """

    source: Path
    title: str
    kind: str

    @property
    def target(self) -> Path:
        """The HTML file, relative to the site root (same folder as the source, suffix ``.html``)."""
        return self.source.with_suffix(".html")


def _first_heading(markdown: str, default: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return default


def collect_pages(root: str | Path) -> list[Page]:
    """The site's pages in contents order: ``README.md``, ``notebooks/*.ipynb``, ``docs/*.md`` (each by name).

    Raises:
        FileNotFoundError: ``root`` holds none of them.
    """
    root = Path(root)
    pages = []
    if (root / "README.md").is_file():
        text = (root / "README.md").read_text(encoding="utf-8")
        pages.append(Page(Path("README.md"), _first_heading(text, "README"), "readme"))
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        text = "\n".join("".join(c["source"]) for c in cells if c.get("cell_type") == "markdown")
        pages.append(Page(path.relative_to(root), _first_heading(text, path.stem), "notebook"))
    for path in sorted((root / "docs").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        pages.append(Page(path.relative_to(root), _first_heading(text, path.stem), "doc"))
    if not pages:
        raise FileNotFoundError(f"{root} has no README.md, notebooks/*.ipynb or docs/*.md to render")
    return pages


def github_slug(text: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to ``-``.

    >>> github_slug("6. Paper vs code: discrepancies")
    '6-paper-vs-code-discrepancies'
    """
    text = _TAG.sub("", html.unescape(text)).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def _markdown_to_html(text: str) -> str:
    """Markdown → HTML with GitHub-style heading ids (so ``doc.md#section`` links resolve)."""
    import mistune

    class Renderer(mistune.HTMLRenderer):
        def heading(self, text: str, level: int, **attrs) -> str:
            return f'<h{level} id="{github_slug(text)}">{text}</h{level}>\n'

    markdown = mistune.create_markdown(
        renderer=Renderer(escape=False), plugins=["table", "strikethrough", "url", "footnotes"]
    )
    return markdown(text)


def _embed_images(body: str, folder: Path) -> str:
    """Inline ``<img src="relative.png">`` files that exist under ``folder`` as ``data:`` URIs."""

    def inline(match: re.Match) -> str:
        path = folder / html.unescape(match.group(1))
        kind = mimetypes.guess_type(path.name)[0]
        if not (path.is_file() and kind and kind.startswith("image/")):
            return match.group(0)
        return f'src="data:{kind};base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"'

    return re.sub(r'src="(?![a-z]+:)([^"]+)"', inline, body)


def _notebook_to_html(path: Path, title: str) -> str:
    """The committed notebook through nbconvert's "lab" template, widget views dropped (no kernel here)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": title, "path": str(path.parent)}}
    )
    return body


def _nav_bar(depth: int) -> str:
    return f'<nav class="arml-nav"><a href="{"../" * depth}index.html">Contents</a></nav>\n'


def _wrap(title: str, body: str, nav: str = "") -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>\n'
        f"<body>{nav}{body}</body></html>\n"
    )


def _rewrite_links(body: str, page: Page, targets: set[Path]) -> str:
    """``x.md`` / ``x.ipynb`` links to pages of the site → ``x.html``; others (files not in the site) stay."""

    def rewrite(match: re.Match) -> str:
        href, anchor = match.group(1), match.group(2) or ""
        linked = Path(*(page.source.parent / href).parts)
        resolved = Path(*_normalise(linked.parts))
        if resolved.with_suffix(".html") not in targets:
            return match.group(0)
        return f'href="{Path(href).with_suffix(".html").as_posix()}{anchor}"'

    return _HREF.sub(rewrite, body)


def _normalise(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            if out:
                out.pop()
        elif part != ".":
            out.append(part)
    return out


def _takeaways_anchor(body: str) -> str | None:
    for _, anchor, text in _HEADING.findall(body):
        if "takeaway" in _TAG.sub("", text).lower():
            return html.unescape(anchor)
    return None


def _nav(body: str, pages: list[Page], index: int) -> str:
    """Add previous/next links to the navigation bar of page ``index``."""
    page = pages[index]
    up = "../" * len(page.source.parent.parts)
    links = []
    if index > 0:
        links.append(
            f'<a href="{up}{pages[index - 1].target.as_posix()}">← {html.escape(pages[index - 1].title)}</a>'
        )
    if index + 1 < len(pages):
        links.append(
            f'<a href="{up}{pages[index + 1].target.as_posix()}">{html.escape(pages[index + 1].title)} →</a>'
        )
    return body.replace("</nav>", "".join(links) + "</nav>", 1)


def _index(pages: list[Page], takeaways: dict[Path, str | None]) -> str:
    def item(page: Page) -> str:
        link = f'<a href="{page.target.as_posix()}">{html.escape(page.title)}</a>'
        anchor = takeaways.get(page.source)
        if anchor:
            link += f' · <a class="note" href="{page.target.as_posix()}#{html.escape(anchor)}">takeaways</a>'
        return f"<li>{link} <span class='note'>({page.source.as_posix()})</span></li>"

    sections = []
    for kind, heading in (("readme", "Overview"), ("notebook", "Notebooks"), ("doc", "Documentation")):
        chosen = [p for p in pages if p.kind == kind]
        if chosen:
            items = "\n".join(item(p) for p in chosen)
            sections.append(f'<h2>{heading}</h2>\n<ol class="toc">\n{items}\n</ol>')
    title = next((p.title for p in pages if p.kind == "readme"), "Course")
    body = f"<h1>{html.escape(title)}: contents</h1>\n" + "\n".join(sections)
    return _wrap(title, body)


def build_site(root: str | Path = REPO_ROOT, out: str | Path = "build/site") -> list[Path]:
    """Render every page of :func:`collect_pages` under ``out`` and write ``out/index.html``.

    Args:
        root: the source tree (``README.md``, ``notebooks/``, ``docs/``); default the repository.
        out: the site folder (created; pages are overwritten).

    Returns:
        The written files, ``index.html`` first.
    """
    root, out = Path(root), Path(out)
    pages = collect_pages(root)
    targets = {p.target for p in pages}
    written, takeaways = [out / "index.html"], {}
    for i, page in enumerate(pages):
        source = root / page.source
        depth = len(page.source.parent.parts)
        if page.kind == "notebook":
            body = _notebook_to_html(source, page.title)
            head, tag, rest = body.partition("<body")
            if not tag:
                raise ValueError(f"nbconvert's HTML for {source} has no <body>")
            start, _, rest = rest.partition(">")
            body = f"{head}<body{start}><style>{_NAV_CSS}</style>{_nav_bar(depth)}{rest}"
        else:
            body = _embed_images(_markdown_to_html(source.read_text(encoding="utf-8")), source.parent)
            body = _wrap(page.title, body, _nav_bar(depth))
        body = _nav(_rewrite_links(body, page, targets), pages, i)
        takeaways[page.source] = _takeaways_anchor(body) if page.kind == "notebook" else None
        target = out / page.target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
        written.append(target)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(_index(pages, takeaways), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arml.site", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="source tree (default: the repository)")
    parser.add_argument(
        "--out", type=Path, default=Path("build/site"), help="site folder (default: build/site)"
    )
    args = parser.parse_args(argv)
    written = build_site(args.root, args.out)
    print(f"wrote {len(written)} pages to {args.out} (open {args.out / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
