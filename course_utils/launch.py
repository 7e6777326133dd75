"""Where the course is hosted, and the "Open in Colab" and Binder links made from it.

``REPOSITORY`` and ``BRANCH`` are the one place that says where the course lives. A fork changes them and
runs ``python -m course_utils.publish metadata``, which rewrites every link in the README and in the
notebooks' launch cells; ``tests/test_publish.py`` fails while any link disagrees with them.
"""
from __future__ import annotations

import re
import uuid
from urllib.parse import quote

__all__ = ["REPOSITORY", "BRANCH", "MARKER", "colab_url", "binder_url", "launch_cell", "with_readme_table",
           "replace_between"]

REPOSITORY = "https://github.com/diffusion-course/diffusion-models-course"  # a fork changes this line
BRANCH = "main"
MARKER = "course-launch"  # every launch cell carries it, so it can be found and replaced
README_START, README_END = "<!-- launch-links:start -->", "<!-- launch-links:end -->"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"


def _github_path(repository: str) -> str:
    m = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", repository)
    if not m:
        raise ValueError(f"repository must be a GitHub URL https://github.com/OWNER/NAME, got {repository!r}")
    return f"{m.group(1)}/{m.group(2)}"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+\.ipynb", name):
        raise ValueError(f"name must be a notebook file name such as '03_ddpm_ddim.ipynb', got {name!r}")
    return name


def colab_url(name: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """Google Colab's address for ``notebooks/<name>`` of ``repository`` at ``branch``."""
    return f"https://colab.research.google.com/github/{_github_path(repository)}/blob/{branch}/notebooks/{_check_name(name)}"


def binder_url(name: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """mybinder.org's address that builds ``repository`` at ``branch`` (from ``binder/``) and opens
    ``notebooks/<name>`` in JupyterLab."""
    return (f"https://mybinder.org/v2/gh/{_github_path(repository)}/{branch}"
            f"?labpath={quote('notebooks/' + _check_name(name), safe='')}")


def _badges(name: str) -> str:
    return (f"[![Open in Colab]({COLAB_BADGE})]({colab_url(name)}) "
            f"[![Launch on Binder]({BINDER_BADGE})]({binder_url(name)})")


INSTALL = '''# {marker}: on Google Colab this cell fetches the course and installs course_utils (a few seconds);
# anywhere else it does nothing. (Written by `python -m course_utils.publish metadata`.)
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    if not os.path.isdir("/content/course"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "{repository}", "/content/course"],
                       check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/course", "torchdiffeq",
                    "torchmetrics", "torch-fidelity"], check=True)
    sys.path.insert(0, "/content/course")
    os.chdir("/content/course/notebooks")'''


def _cell(kind: str, text: str) -> dict:
    lines = text.split("\n")
    cell = {"cell_type": kind, "id": uuid.uuid5(uuid.NAMESPACE_URL, kind + text).hex[:8], "metadata": {},
            "source": [line + "\n" for line in lines[:-1]] + [lines[-1]]}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def launch_cell(name: str) -> list[dict]:
    """The launch cells of notebook ``name``: a Markdown cell with its Colab and Binder links, and a code
    cell that installs the course when it runs on Colab (and does nothing elsewhere)."""
    links = (f"<!-- {MARKER}: written by `python -m course_utils.publish metadata` from course_utils/launch.py -->\n"
             f"{_badges(name)} Run it in the cloud: Colab (a free GPU for the at-scale sections: "
             f"Runtime > Change runtime type) or Binder (CPU only). The next cell sets Colab up.")
    install = INSTALL.format(marker=MARKER, branch=BRANCH, repository=REPOSITORY)
    return [_cell("markdown", links), _cell("code", install)]


def with_readme_table(text: str, names: list[str]) -> str:
    """README ``text`` with the table of launch links between its ``README_START`` and ``README_END``
    markers rewritten for the notebooks ``names``."""
    rows = "\n".join(f"| [`{n}`](notebooks/{n}) | [Colab]({colab_url(n)}) | [Binder]({binder_url(n)}) |"
                     for n in names)
    table = f"\n| notebook | Colab | Binder |\n|---|---|---|\n{rows}\n"
    return replace_between(text, README_START, README_END, table, "the launch table")


def replace_between(text: str, start: str, end: str, body: str, what: str) -> str:
    """``text`` with what lies between its one ``start`` and one ``end`` marker replaced by ``body`` (the
    generated tables of the README and the instructor's guide); ``what`` names it in the error."""
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"text must hold one {start!r} and one {end!r} line around {what}")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return head + start + body + end + tail
