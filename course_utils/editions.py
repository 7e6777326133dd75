"""The student edition of the notebooks: the same notebooks with the exercise solutions taken out.

    python -m course_utils.editions student --out student      # writes student/0N_*.ipynb

In the course's (instructor's) notebooks every solution is a Markdown cell tagged ``solution`` (a folded
``<details>`` block under its exercise) and every exercise is a code cell tagged ``exercise`` (a stub that
raises ``NotImplementedError`` and a checker call). The student edition drops the ``solution`` cells, clears
the outputs of the ``exercise`` cells (whose stored output is the checker's "not attempted yet"), and
replaces the sentence that points to the solutions (``SOLUTIONS_NOTE``) by ``STUDENT_NOTE``. Every other
cell, code and outputs alike, is kept as it is: the student notebooks run top to bottom exactly as the
instructor's do (their code cells are the same), and each checker reports "not attempted yet" until the
student fills in the exercise.
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import sys

from . import REPO_ROOT

__all__ = ["SOLUTIONS_NOTE", "STUDENT_NOTE", "student_notebook", "notebook_paths", "write_student_edition", "main"]

SOLUTIONS_NOTE = "Solutions are hidden below each exercise."
STUDENT_NOTE = "(This is the student edition: the solutions are in the instructor's notebooks.)"


def _tags(cell: dict) -> list:
    return cell.get("metadata", {}).get("tags", [])


def student_notebook(nb: dict) -> dict:
    """A copy of notebook ``nb`` (nbformat 4 JSON as a dict) without its ``solution`` cells, with its
    ``exercise`` cells' outputs cleared and ``SOLUTIONS_NOTE`` replaced by ``STUDENT_NOTE``. Raises
    ValueError for a notebook with exercises but no tagged solutions or no ``SOLUTIONS_NOTE`` (an untagged
    solution would leak into the student edition)."""
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError("nb must be a notebook as a dict (json.load of an .ipynb file)")
    cells = nb["cells"]
    n_ex = sum("exercise" in _tags(c) for c in cells)
    n_sol = sum("solution" in _tags(c) for c in cells)
    text = ["".join(c["source"]) for c in cells]
    if n_ex and (n_sol < n_ex or not any(SOLUTIONS_NOTE in t for t in text)):
        raise ValueError(f"nb has {n_ex} exercise cells but {n_sol} cells tagged 'solution' and "
                         f"{'a' if any(SOLUTIONS_NOTE in t for t in text) else 'no'} {SOLUTIONS_NOTE!r}: "
                         "tag every solution cell before making a student edition")
    out = copy.deepcopy(nb)
    kept = []
    for cell in out["cells"]:
        if "solution" in _tags(cell):
            continue
        if "exercise" in _tags(cell):
            cell["outputs"], cell["execution_count"] = [], None
        if cell["cell_type"] == "markdown":
            src = "".join(cell["source"]).replace(SOLUTIONS_NOTE, STUDENT_NOTE)
            cell["source"] = src.splitlines(keepends=True)
        kept.append(cell)
    out["cells"] = kept
    return out


def notebook_paths(notebooks: str | None = None) -> list[str]:
    """The chapter notebooks, ``notebooks/0N_*.ipynb`` (or those of the folder ``notebooks``), in order."""
    folder = notebooks or os.path.join(REPO_ROOT, "notebooks")
    paths = sorted(glob.glob(os.path.join(folder, "*.ipynb")))
    if not paths:
        raise FileNotFoundError(f"notebooks: no .ipynb files in {folder!r}")
    return paths


def write_student_edition(out: str, notebooks: str | None = None) -> list[str]:
    """Write the student edition of every ``notebooks/*.ipynb`` into the folder ``out``; return the paths."""
    paths = notebook_paths(notebooks)
    os.makedirs(out, exist_ok=True)
    written = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
        target = os.path.join(out, os.path.basename(path))
        with open(target, "w", encoding="utf-8") as fh:
            json.dump(student_notebook(nb), fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.editions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("edition", choices=["student"])
    parser.add_argument("--out", default="student", help="folder to write the notebooks to (default: student)")
    parser.add_argument("--notebooks", default=None, help="folder of the instructor's notebooks (default: notebooks/)")
    args = parser.parse_args(argv)
    for path in write_student_edition(args.out, args.notebooks):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
