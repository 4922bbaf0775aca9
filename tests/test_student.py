"""``make student``: solution cells become stubs, and every stub fails its check while the solution passes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import arml.exercises
from arml.runtime import REPO_ROOT
from arml.student import (
    ANSWER_STUB,
    STUB,
    is_solution,
    main,
    solution_blocks,
    stub_cell,
    student_notebook,
    write_student_notebooks,
)

NOTEBOOKS = REPO_ROOT / "notebooks"
STAGE1 = ("01_cam_baselines", "02_ars_ablation", "03_pseudo_mask_quality")


def _code(source: str, tags=("solution",), outputs=None) -> dict:
    return {
        "cell_type": "code",
        "id": "a1b2c3d4",
        "metadata": {"tags": list(tags)},
        "execution_count": 7,
        "outputs": outputs or [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}],
        "source": source.splitlines(keepends=True),
    }


def _markdown(text: str, tags=()) -> dict:
    return {"cell_type": "markdown", "id": "e5f6a7b8", "metadata": {"tags": list(tags)}, "source": [text]}


HAND_MADE = {
    "cells": [
        _markdown("**Exercise.** Add one."),
        _code(
            'def add_one(x):\n    "Return x + 1."\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n'
            "    ### END SOLUTION\n\n\nprint('defined')"
        ),
        _code("add_one(1)", tags=()),
        _markdown("*Answer.* Secret reasoning.", tags=("solution",)),
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_a_hand_made_notebook_is_stubbed():
    out = student_notebook(HAND_MADE)
    stub = out["cells"][1]
    assert (
        "".join(stub["source"]) == f"def add_one(x):\n    \"Return x + 1.\"\n    {STUB}\n\n\nprint('defined')"
    )
    assert stub["outputs"] == [] and stub["execution_count"] is None
    assert stub["id"] == "a1b2c3d4" and stub["metadata"] == {"tags": ["solution"]}
    assert out["cells"][0] == HAND_MADE["cells"][0]
    assert out["cells"][2] == HAND_MADE["cells"][2]  # other cells keep their outputs
    assert out["cells"][3]["source"] == [ANSWER_STUB]
    assert "".join(HAND_MADE["cells"][1]["source"]).count("BEGIN") == 1  # the original is not modified
    namespace = {}
    exec("".join(stub["source"]), namespace)
    with pytest.raises(NotImplementedError, match="exercise"):
        namespace["add_one"](1)


def test_several_blocks_and_nested_indentation():
    source = "for i in range(2):\n    if i:\n        ### BEGIN SOLUTION\n        pass\n        ### END SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n"
    assert solution_blocks(source) == [["        pass"], ["x = 1"]]
    text = "".join(stub_cell(_code(source))["source"])
    assert text == f"for i in range(2):\n    if i:\n        {STUB}\n{STUB}"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f():\n    return 1\n", "needs"),
        ("### BEGIN SOLUTION\nx = 1\n", "without a matching"),
        ("x = 1\n### END SOLUTION\n", "without a"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another"),
    ],
)
def test_bad_markers_fail_clearly(source, message):
    with pytest.raises(ValueError, match=message):
        stub_cell(_code(source))
    notebook = {**HAND_MADE, "cells": [_code(source)]}
    with pytest.raises(ValueError, match="cell 0 \\(id a1b2c3d4\\)"):
        student_notebook(notebook)


def test_the_command_writes_copies_and_reports_bad_notebooks(tmp_path, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    (src / "x.ipynb").write_text(json.dumps(HAND_MADE))
    assert main(["--notebooks", str(src), "--out", str(tmp_path / "student")]) == 0
    copy = json.loads((tmp_path / "student" / "x.ipynb").read_text())
    assert STUB in "".join(copy["cells"][1]["source"])
    assert "2 solution cells stubbed" in capsys.readouterr().out
    (src / "y.ipynb").write_text(json.dumps({**HAND_MADE, "cells": [_code("x = 1\n")]}))
    assert main(["--notebooks", str(src), "--out", str(tmp_path / "again")]) == 1
    assert "y.ipynb: cell 0" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()  # nothing written when a notebook is bad
    assert main(["--notebooks", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1


@pytest.fixture(scope="module")
def student_copies(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    written = write_student_notebooks(NOTEBOOKS, out)
    assert {p.name for p in written} == {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    return out


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _solution_lines(cell) -> list[str]:
    if cell["cell_type"] == "markdown":
        return [line for line in "".join(cell["source"]).splitlines() if line.strip()]
    return [line for block in solution_blocks(cell["source"]) for line in block if line.strip()]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_student_copies_hold_no_solution_line(student_copies, path):
    original = _cells(path)
    copy = _cells(student_copies / path.name)
    assert [c["id"] for c in copy] == [c["id"] for c in original]
    secret = {
        line.strip()
        for c in original
        if "solution" in c["metadata"].get("tags", [])
        for line in _solution_lines(c)
    }
    shown = {line.strip() for c in copy for line in "".join(c["source"]).splitlines()}
    assert not secret & shown, sorted(secret & shown)


def _implement_exercises(stem: str) -> list[tuple[str, str, str]]:
    """``(check name, function name, solution source, stub source)`` for every solution code cell followed by a check call."""
    cells = _cells(NOTEBOOKS / f"{stem}.ipynb")
    found = []
    for cell, after in zip(cells, cells[1:], strict=False):
        if cell["cell_type"] != "code" or "solution" not in cell["metadata"].get("tags", []):
            continue
        call = re.fullmatch(r"\s*(check_\w+)\((\w+)\)\s*", "".join(after["source"]))
        assert call, f"{stem}: the cell after a solution must call a check, got {''.join(after['source'])!r}"
        solution = "".join(cell["source"])
        found.append((call.group(1), call.group(2), solution, "".join(stub_cell(cell)["source"])))
    return found


@pytest.mark.parametrize("stem", STAGE1)
def test_stage1_notebooks_have_three_kinds_of_exercises(stem):
    cells = _cells(NOTEBOOKS / f"{stem}.ipynb")
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    numbers = set(
        re.findall(rf"\*\*Exercise {stem[:2]}\.(\d+) \((implement|predict, then run|explore)\)", text)
    )
    assert len(numbers) >= 3 and {kind for _, kind in numbers} == {
        "implement",
        "predict, then run",
        "explore",
    }
    assert _implement_exercises(stem)
    assert any(c["cell_type"] == "markdown" and "solution" in c["metadata"].get("tags", []) for c in cells)
    last_code = [c for c in cells if c["cell_type"] == "code"][-1]
    assert "".join(last_code["source"]).startswith("# Takeaways, written from this run's numbers")


@pytest.mark.parametrize(
    ("stem", "index"), [(stem, i) for stem in STAGE1 for i in range(len(_implement_exercises(stem)))]
)
def test_stub_fails_its_check_with_a_hint_and_the_solution_passes(stem, index, capsys):
    check_name, fn_name, solution, stub = _implement_exercises(stem)[index]
    check = getattr(arml.exercises, check_name)
    for source, verdict in ((stub, False), (solution, True)):
        namespace = {"torch": torch, "np": np}
        exec(source, namespace)
        assert check(namespace[fn_name]) is verdict
        out = capsys.readouterr().out
        assert out.startswith("✓" if verdict else "✗"), out
        if not verdict:
            assert "not implemented yet" in out


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_has_three_exercises_a_solution_and_ends_with_its_takeaways(path):
    cells = json.loads(path.read_text())["cells"]
    markdown = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    numbers = set(re.findall(rf"Exercise {path.stem[:2]}\.(\d+)", markdown))
    assert len(numbers) >= 3, numbers
    assert any(is_solution(c) for c in cells)
    *_, heading, takeaways, idea = cells
    assert "".join(heading["source"]).startswith("## Takeaways")
    assert takeaways["cell_type"] == "code" and takeaways["outputs"]  # executed: sentences from the run
    assert "".join(takeaways["source"]).startswith("# Takeaways, written from this run's numbers")
    assert idea["cell_type"] == "markdown" and "idea to keep" in "".join(idea["source"])
