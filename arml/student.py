"""Student copies of the notebooks (``make student``): every cell tagged ``solution`` becomes a stub.

The convention is nbgrader's. In a *code* cell tagged ``solution``, the lines between ``### BEGIN SOLUTION``
and ``### END SOLUTION`` are replaced by one ``raise NotImplementedError("exercise: write this part")`` at the
markers' indentation; the lines outside the markers (the ``def`` line, the docstring) stay. A *markdown* cell
tagged ``solution`` (the answer to a predict-then-run question) becomes ``*Write your answer here.*``. Stubbed
cells lose their outputs; every other cell is copied unchanged.

    python -m arml.student [--out build/student] [--notebooks notebooks]

>>> cell = {"cell_type": "code", "metadata": {"tags": ["solution"]}, "outputs": [], "execution_count": 3,
...         "source": ["def f(x):\\n", "    ### BEGIN SOLUTION\\n", "    return x\\n", "    ### END SOLUTION\\n"]}
>>> print("".join(stub_cell(cell)["source"]))
def f(x):
    raise NotImplementedError("exercise: write this part")
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from arml.runtime import REPO_ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("exercise: write this part")'
ANSWER_STUB = "*Write your answer here.*"
TAG = "solution"


def is_solution(cell: dict) -> bool:
    """Whether the cell carries the ``solution`` tag in its metadata."""
    return TAG in cell.get("metadata", {}).get("tags", [])


def _lines(source) -> list[str]:
    text = "".join(source) if isinstance(source, list) else source
    return text.splitlines()


def solution_blocks(source) -> list[list[str]]:
    """The lines between each ``### BEGIN SOLUTION`` / ``### END SOLUTION`` pair of a cell's source.

    Raises:
        ValueError: no pair, an unclosed or unopened marker, or nested markers.
    """
    blocks, current = [], None
    for number, line in enumerate(_lines(source), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if current is not None:
                raise ValueError(f"line {number}: {BEGIN!r} inside another solution block")
            current = []
        elif marker == END:
            if current is None:
                raise ValueError(f"line {number}: {END!r} without a {BEGIN!r} before it")
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        raise ValueError(f"{BEGIN!r} without a matching {END!r}")
    if not blocks:
        raise ValueError(f"a code cell tagged {TAG!r} needs {BEGIN!r} … {END!r} markers around the solution")
    return blocks


def stub_source(source) -> str:
    """The source with every solution block replaced by :data:`STUB` at the ``BEGIN`` marker's indentation."""
    solution_blocks(source)  # validates the markers
    out, inside = [], False
    for line in _lines(source):
        marker = line.strip()
        if marker == BEGIN:
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif marker == END:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _as_source(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    return lines or [""]


def stub_cell(cell: dict) -> dict:
    """A student copy of one cell: a stub if it is tagged ``solution``, otherwise the cell unchanged."""
    cell = copy.deepcopy(cell)
    if not is_solution(cell):
        return cell
    if cell["cell_type"] == "markdown":
        cell["source"] = [ANSWER_STUB]
    elif cell["cell_type"] == "code":
        cell["source"] = _as_source(stub_source(cell["source"]))
        cell["outputs"] = []
        cell["execution_count"] = None
    else:
        raise ValueError(f"a {cell['cell_type']!r} cell cannot be tagged {TAG!r}")
    return cell


def student_notebook(notebook: dict) -> dict:
    """The student copy of a notebook (a dict as read from ``.ipynb`` JSON)."""
    out = copy.deepcopy(notebook)
    cells = []
    for index, cell in enumerate(notebook["cells"]):
        try:
            cells.append(stub_cell(cell))
        except ValueError as err:
            raise ValueError(f"cell {index} (id {cell.get('id', '?')}): {err}") from None
    out["cells"] = cells
    return out


def write_student_notebooks(
    notebooks: str | Path = REPO_ROOT / "notebooks", out: str | Path = REPO_ROOT / "build" / "student"
) -> list[Path]:
    """Write the student copy of every ``*.ipynb`` of ``notebooks`` to ``out``; return the written paths.

    Raises:
        FileNotFoundError: ``notebooks`` holds no notebook.
        ValueError: a solution cell without its markers (the message names the notebook and the cell).
    """
    notebooks, out = Path(notebooks), Path(out)
    sources = sorted(notebooks.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no *.ipynb in {notebooks}")
    copies = []
    for path in sources:
        try:
            copies.append(student_notebook(json.loads(path.read_text(encoding="utf-8"))))
        except ValueError as err:
            raise ValueError(f"{path.name}: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, notebook in zip(sources, copies, strict=True):
        target = out / path.name
        target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m arml.student",
        description="Write student copies of the notebooks (solutions stubbed).",
    )
    parser.add_argument("--notebooks", default=str(REPO_ROOT / "notebooks"), help="folder of the notebooks")
    parser.add_argument("--out", default=str(REPO_ROOT / "build" / "student"), help="folder for the copies")
    args = parser.parse_args(argv)
    try:
        written = write_student_notebooks(args.notebooks, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"make student: {err}", file=sys.stderr)
        return 1
    stubbed = sum(
        is_solution(c)
        for p in written
        for c in json.loads((Path(args.notebooks) / p.name).read_text())["cells"]
    )
    print(f"wrote {len(written)} student notebooks to {args.out} ({stubbed} solution cells stubbed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
