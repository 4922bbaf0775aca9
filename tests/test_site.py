"""arml.site: the static course site from hand-made notebooks and Markdown (nothing is executed)."""

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from matplotlib.figure import Figure

from arml.site import build_site, collect_pages, github_slug, main

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _png() -> str:
    fig = Figure(figsize=(1, 1), dpi=20)
    fig.subplots().plot([0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _notebook(path: Path, title: str, cells: list) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), *cells]
    nbformat.write(nb, path)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids, self.imgs = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "figures").mkdir()
    (root / "figures" / "dot.png").write_bytes(base64.b64decode(_png()))
    (root / "README.md").write_text(
        "# Toy course\n\nStart with [the first notebook](notebooks/01_first.ipynb), then read "
        "[the guide](docs/guide.md#second-part-eq-3).\n\n![dot](figures/dot.png)\n",
        encoding="utf-8",
    )
    (root / "docs" / "guide.md").write_text(
        "# The guide\n\nBack to [the README](../README.md); see [notebook 02](../notebooks/02_second.ipynb) "
        "and [the code](../arml/losses.py).\n\n## Second part: Eq. (3)\n\ntext\n",
        encoding="utf-8",
    )
    figure = nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})
    hint = nbformat.v4.new_output(
        "display_data",
        data={WIDGET_VIEW: {"model_id": "abc"}, "text/plain": "Interactive: run the cells above"},
    )
    code = nbformat.v4.new_code_cell("plot()", outputs=[figure, hint])
    takeaways = nbformat.v4.new_markdown_cell("## Takeaways\n\nThe line goes up.")
    _notebook(root / "notebooks" / "01_first.ipynb", "01 · First", [code, takeaways])
    _notebook(
        root / "notebooks" / "02_second.ipynb",
        "02 · Second",
        [nbformat.v4.new_markdown_cell("see [guide](../docs/guide.md)")],
    )
    return root


def test_collect_pages_orders_readme_notebooks_docs(tree):
    pages = collect_pages(tree)
    assert [p.source.as_posix() for p in pages] == [
        "README.md",
        "notebooks/01_first.ipynb",
        "notebooks/02_second.ipynb",
        "docs/guide.md",
    ]
    assert [p.title for p in pages] == ["Toy course", "01 · First", "02 · Second", "The guide"]
    with pytest.raises(FileNotFoundError, match="no README.md"):
        collect_pages(tree / "docs")


def test_site_index_links_every_page_in_order(tree, tmp_path):
    out = tmp_path / "site"
    written = build_site(tree, out)
    assert written[0] == out / "index.html" and all(p.is_file() for p in written)
    hrefs = _parse(out / "index.html").hrefs
    pages = [h for h in hrefs if "#" not in h]
    assert pages == ["README.html", "notebooks/01_first.html", "notebooks/02_second.html", "docs/guide.html"]
    assert all((out / h).is_file() for h in pages)
    takeaway = [h for h in hrefs if "#" in h]  # only notebook 01 has a takeaways heading
    assert len(takeaway) == 1 and takeaway[0].startswith("notebooks/01_first.html#")
    assert takeaway[0].split("#")[1] in _parse(out / "notebooks/01_first.html").ids


def test_notebook_page_embeds_the_figure_and_shows_the_widget_hint(tree, tmp_path):
    build_site(tree, tmp_path / "site")
    page = tmp_path / "site" / "notebooks" / "01_first.html"
    imgs = _parse(page).imgs
    assert any(src == f"data:image/png;base64,{_png()}" for src in imgs)
    text = page.read_text(encoding="utf-8")
    assert "Interactive: run the cells above" in text  # no kernel: the widget's text/plain
    assert WIDGET_VIEW not in text and "The line goes up." in text
    assert WIDGET_VIEW in (tree / "notebooks" / "01_first.ipynb").read_text()  # the source is not rewritten


def test_relative_links_between_pages_resolve(tree, tmp_path):
    out = tmp_path / "site"
    build_site(tree, out)
    checked = 0
    for page in [out / "README.html", out / "docs" / "guide.html", out / "notebooks" / "02_second.html"]:
        for href in _parse(page).hrefs:
            if re.match(r"[a-z]+:", href) or href.startswith("#") or href.endswith(".py"):
                continue
            target, _, anchor = href.partition("#")
            resolved = (page.parent / target).resolve()
            assert resolved.is_file(), f"{page.name}: {href} is broken"
            if anchor:
                assert anchor in _parse(resolved).ids, f"{page.name}: no #{anchor} in {target}"
            checked += 1
    assert checked >= 6
    guide = (out / "docs" / "guide.html").read_text(encoding="utf-8")
    assert 'href="../arml/losses.py"' in guide  # not a page of the site: left as written
    readme = _parse(out / "README.html")
    assert "docs/guide.html#second-part-eq-3" in readme.hrefs
    assert any(src.startswith("data:image/png;base64,") for src in readme.imgs)  # local image embedded


def test_github_slug_and_cli(tree, tmp_path, capsys):
    assert github_slug("Second part: Eq. (3)") == "second-part-eq-3"
    assert github_slug("A &amp; <code>B</code>") == "a--b"
    assert main(["--root", str(tree), "--out", str(tmp_path / "cli")]) == 0
    assert "wrote 5 pages" in capsys.readouterr().out
