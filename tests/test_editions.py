"""The student edition: no solution leaks, the code is the instructor's, every checker says "not attempted yet"."""
import contextlib
import glob
import io
import json
import os
import re

import pytest

from course_utils.editions import SOLUTIONS_NOTE, STUDENT_NOTE, main, student_notebook, write_student_edition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def _load(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _text(cell):
    return "".join(cell["source"])


def _solution_lines(nb):
    """The code lines of the solutions (inside their ```python blocks), long enough to be distinctive."""
    lines = []
    for cell in nb["cells"]:
        if "solution" in cell.get("metadata", {}).get("tags", []):
            for block in re.findall(r"```python\n(.*?)```", _text(cell), re.S):
                lines += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 25 and "def " not in ln]
    return lines


@pytest.fixture(scope="module")
def editions(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("student"))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["student", "--out", out]) == 0
    written = buf.getvalue().split()
    assert len(written) == len(NOTEBOOKS) == 6
    return {os.path.basename(p): (_load(p), _load(os.path.join(out, os.path.basename(p)))) for p in NOTEBOOKS}


def test_every_solution_is_tagged_and_every_exercise_too(editions):
    for name, (teacher, _) in editions.items():
        tags = [c.get("metadata", {}).get("tags", []) for c in teacher["cells"]]
        n_sol, n_ex = sum("solution" in t for t in tags), sum("exercise" in t for t in tags)
        assert 3 <= n_ex == n_sol, name
        untagged = [k for k, c in enumerate(teacher["cells"]) if re.search(r"<summary>\s*solution", _text(c), re.I)
                    and "solution" not in tags[k]]
        assert not untagged, f"{name}: cells {untagged} look like solutions but are not tagged"
        assert sum(SOLUTIONS_NOTE in _text(c) for c in teacher["cells"]) == 1, name
        for k, cell in enumerate(teacher["cells"]):   # a solution cell holds its folded block and nothing else
            if "solution" in tags[k]:
                assert not re.sub(r"<details>.*?</details>", "", _text(cell), flags=re.S).strip(), (name, k)


def test_no_solution_text_leaks_into_the_student_edition(editions):
    for name, (teacher, student) in editions.items():
        everything = "\n".join(_text(c) + json.dumps(c.get("outputs", [])) for c in student["cells"])
        assert "<summary>Solution" not in everything and SOLUTIONS_NOTE not in everything, name
        assert STUDENT_NOTE in everything, name
        for heading in (r"^### Exercise", r"^## .*Summary"):   # the exercises' statements and the summary stay
            count = sum(len(re.findall(heading, _text(c), re.M)) for c in teacher["cells"])
            assert count and sum(len(re.findall(heading, _text(c), re.M)) for c in student["cells"]) == count, \
                (name, heading)
        leaked = [ln for ln in _solution_lines(teacher) if ln in everything]
        assert _solution_lines(teacher) and not leaked, f"{name}: solution lines in the student edition: {leaked}"


def test_student_code_is_the_instructors_so_both_editions_run_alike(editions):
    """nbval runs the instructor's notebooks in CI; the student edition has exactly the same code cells in the
    same order (and keeps every output but the exercises'), so it runs wherever they do."""
    for name, (teacher, student) in editions.items():
        code = [(_text(c), c.get("outputs")) for c in teacher["cells"] if c["cell_type"] == "code"]
        scode = [(_text(c), c.get("outputs")) for c in student["cells"] if c["cell_type"] == "code"]
        assert [s for s, _ in code] == [s for s, _ in scode], name
        for (_, out), (_, sout), cell in zip(code, scode, [c for c in student["cells"] if c["cell_type"] == "code"]):
            if "exercise" in cell.get("metadata", {}).get("tags", []):
                assert sout == [] and cell["execution_count"] is None
            else:
                assert sout == out


def test_the_student_exercises_run_and_each_checker_says_not_attempted_yet(editions):
    for name, (_, student) in editions.items():
        namespace = {}
        exec("from course_utils import exercises", namespace)
        cells = [c for c in student["cells"] if "exercise" in c.get("metadata", {}).get("tags", [])]
        for cell in cells:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(_text(cell), name, "exec"), namespace)
            assert "not attempted yet" in buf.getvalue(), (name, buf.getvalue())


def test_untagged_solutions_are_refused(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["exercise"]}, "source": ["pass"], "outputs": [],
                     "execution_count": 1},
                    {"cell_type": "markdown", "metadata": {}, "source": ["<details><summary>Solution</summary>"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    with pytest.raises(ValueError, match="tag every solution cell"):
        student_notebook(nb)
    with pytest.raises(ValueError, match="nb must be a notebook"):
        student_notebook([])
    with pytest.raises(FileNotFoundError, match="no .ipynb files"):
        write_student_edition(str(tmp_path / "out"), str(tmp_path))
