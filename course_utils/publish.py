"""Slides, a browsable site and launch links, made from the notebooks as they are stored (nothing is executed).

    python -m course_utils.publish slides --out build/slides   # one reveal.js deck per chapter, works offline
    python -m course_utils.publish site --out build/site       # the executed notebooks as a static site
                                                                 # (--edition instructor: with the solutions)
    python -m course_utils.publish metadata                     # (maintainers) refresh slide metadata and links

**Slides.** Every notebook cell carries reveal.js metadata (``metadata.slideshow.slide_type``), set by
``slide_type`` from the cell itself: chapter and section headings (``#``, ``##``) start slides, subsection
headings and every other Markdown cell start sub-slides (down-arrow), code cells are sub-slides of their
own, check cells (``# Check ...``) become speaker notes, and the set-up cells and the exercises' solutions
are skipped. JupyterLab's RISE extension (``jupyterlab-rise``) presents the same metadata live. The decks
are built by nbconvert's ``SlidesExporter`` with the course's template (``templates/course_slides``), which
loads reveal.js and MathJax from the decks' own ``_static`` folder (copied from the ``sphinx-revealjs`` and
``jupyter-server-mathjax`` packages), so a deck opens from a USB stick in a room without network. On the
decks (not in the notebooks) a code cell longer than ``LONG_CODE_LINES`` lines shows its output only.

**Site.** Sphinx with MyST-NB renders the stored outputs (``nb_execution_mode = "off"``) with the
sphinx-book-theme: math, figures, a table of contents per chapter, Colab and Binder buttons, and the
instructor's guide. By default it is built from the student edition (no solutions). The build runs with
warnings as errors, so a broken cross-reference fails it; MathJax is served from the site itself.

**Launch links.** ``launch.REPOSITORY`` is the one place that names where the course is hosted; ``metadata``
writes the Colab and Binder links from it into the README and into each notebook's first cells (a fork
changes that one line and reruns ``metadata``); the tests fail when they disagree.

**Run times.** The instructor's guide (``docs/teaching.md``) has a table of each notebook's stored run: the
seconds its final cell printed and its slowest cell by the execution times in the cells' metadata, beside the
README's estimate. ``metadata`` rewrites it from the notebooks, so it cannot go stale when a notebook is rerun.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime

from . import REPO_ROOT, launch
from .editions import _tags, notebook_paths, student_notebook

__all__ = ["LONG_CODE_LINES", "slide_type", "with_slide_metadata", "with_launch_cells", "notebook_paths",
           "deck_cells", "build_slides", "build_site", "stored_run_time", "with_run_times_table", "refresh_metadata",
           "main"]

LONG_CODE_LINES = 30
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
RISE_SETTINGS = {"scroll": True, "transition": "none", "width": "100%", "height": "100%"}
RUN_TIMES_START, RUN_TIMES_END = "<!-- run-times:start -->", "<!-- run-times:end -->"
TEACHING_GUIDE = os.path.join(REPO_ROOT, "docs", "teaching.md")


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def slide_type(cell: dict, before_first_section: bool) -> str:
    """The reveal.js slide type of one cell: "slide", "subslide", "notes" or "skip" (see the module's
    docstring). ``before_first_section``: whether the cell comes before the notebook's first ``## `` heading
    (the title, the launch cell, the imports: the title is a slide, set-up code is skipped)."""
    if cell.get("cell_type") not in ("markdown", "code"):
        return "skip"
    text = _src(cell).lstrip()
    if "solution" in _tags(cell) or launch.MARKER in text:
        return "skip"
    if cell["cell_type"] == "markdown":
        return "slide" if re.match(r"#{1,2} ", text) else "subslide"
    if before_first_section or "T_START" in text:  # set-up code, and the closing "notebook ran in ... s"
        return "skip"
    comments = []
    for line in text.splitlines():  # the leading comment lines, after nbval's pragmas
        if not line.startswith("#"):
            break
        comments.append(line)
    if any(line.startswith("# Check") for line in comments if not line.startswith("# NBVAL")):
        return "notes"
    return "subslide"


def with_slide_metadata(nb: dict) -> dict:
    """A copy of notebook ``nb`` whose cells carry ``slideshow.slide_type`` and whose metadata carries
    RISE's settings (scrolling for tall slides)."""
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError("nb must be a notebook as a dict (json.load of an .ipynb file)")
    out = copy.deepcopy(nb)
    before = True
    for cell in out["cells"]:
        if cell["cell_type"] == "markdown" and re.match(r"## ", _src(cell).lstrip()):
            before = False
        cell.setdefault("metadata", {})["slideshow"] = {"slide_type": slide_type(cell, before)}
    out.setdefault("metadata", {})["rise"] = dict(RISE_SETTINGS)
    return out


def with_launch_cells(nb: dict, name: str) -> dict:
    """A copy of notebook ``nb`` (file name ``name``) whose second and third cells are the launch cells of
    ``launch.launch_cell`` (Colab and Binder links, and on Colab the installation of the course),
    replacing those already there."""
    out = copy.deepcopy(nb)
    cells = [c for c in out["cells"] if launch.MARKER not in _src(c)]
    old = [c for c in out["cells"] if launch.MARKER in _src(c)]
    new = launch.launch_cell(name)
    if [(c["cell_type"], _src(c)) for c in old] == [(c["cell_type"], _src(c)) for c in new]:
        new = old  # unchanged: keep them as they are (an executed notebook keeps its execution count)
    cells[1:1] = new
    out["cells"] = cells
    return out


def stored_run_time(nb: dict) -> dict:
    """What notebook ``nb``'s stored run took: ``total`` (the seconds its final cell printed, "notebook ran in
    N s") and its slowest code cell as ``slowest`` (seconds, from the cell's execution metadata), ``cell`` (its
    index) and ``section`` (the number, or else the title, of the ``##`` section it is in)."""
    final = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    printed = "".join("".join(o.get("text", "")) for o in final.get("outputs", []))
    found = re.search(r"notebook ran in (\d+) s", printed)
    if not found:
        raise ValueError(f"nb's final cell must print 'notebook ran in N s' (it printed {printed[:80]!r})")
    slowest, section = None, None
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown" and _src(cell).startswith("## "):
            title = _src(cell).splitlines()[0][3:].strip()
            number = re.match(r"(\d+)\.", title)
            section = number.group(1) if number else f"'{title}'"
        times = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] != "code" or "iopub.execute_input" not in times:
            continue
        seconds = (datetime.fromisoformat(times["shell.execute_reply"].replace("Z", "+00:00"))
                   - datetime.fromisoformat(times["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()
        if slowest is None or seconds > slowest["slowest"]:
            slowest = dict(slowest=seconds, cell=i, section=section)
    if slowest is None:
        raise ValueError("nb must carry execution times in its cells' metadata (run it with nbconvert --execute)")
    return dict(total=int(found.group(1)), **slowest)


def with_run_times_table(text: str, paths: list[str], readme: str) -> str:
    """The guide's ``text`` with the table between ``RUN_TIMES_START`` and ``RUN_TIMES_END`` rewritten from the
    notebooks at ``paths`` (``stored_run_time``) and the README's estimates (``readme``, its text: the "~N min"
    that opens each notebook's run-time column)."""
    rows = []
    for path in paths:
        name = os.path.basename(path)
        link = re.escape(f"[`{name}`](notebooks/{name})")
        estimate = re.search(link + r" \|[^|]*\| (~[\d.-]+ min)", readme)
        if not estimate:
            raise ValueError(f"readme must have a row for {name} whose run-time column starts with '~N min'")
        with open(path, encoding="utf-8") as fh:
            run = stored_run_time(json.load(fh))
        rows.append(f"| `{name}` | {estimate.group(1)} | {run['total']} s | {run['slowest']:.0f} s "
                    f"(cell {run['cell']}, section {run['section']}) |")
    table = ("\n| notebook | README's estimate (idle 2-core CPU) | stored run (printed by its final cell) | "
             "slowest cell of that run |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return launch.replace_between(text, RUN_TIMES_START, RUN_TIMES_END, table, "the table of run times")


def refresh_metadata(notebooks: str | None = None, readme: str | None = None, guide: str | None = None) -> list[str]:
    """Rewrite every notebook's launch cell and slide metadata, and the README's table of launch links, from
    ``launch.REPOSITORY``; and the instructor's guide's table of run times (``with_run_times_table``). Returns
    the files that changed."""
    changed = []
    for path in notebook_paths(notebooks):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        nb = with_slide_metadata(with_launch_cells(json.loads(text), os.path.basename(path)))
        new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if new != text:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(new)
            changed.append(path)
    readme = readme or os.path.join(REPO_ROOT, "README.md")
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    new = launch.with_readme_table(text, [os.path.basename(p) for p in notebook_paths(notebooks)])
    if new != text:
        with open(readme, "w", encoding="utf-8") as fh:
            fh.write(new)
        changed.append(readme)
    guide = guide or TEACHING_GUIDE
    with open(guide, encoding="utf-8") as fh:
        text = fh.read()
    updated = with_run_times_table(text, notebook_paths(notebooks), new)
    if updated != text:
        with open(guide, "w", encoding="utf-8") as fh:
            fh.write(updated)
        changed.append(guide)
    return changed


def _copy_static(out: str, libraries=("reveal", "mathjax")) -> str:
    """Copy reveal.js (from sphinx-revealjs) and MathJax 2 (from jupyter-server-mathjax), or those of them
    named in ``libraries``, into ``out/_static`` (once); return that folder."""
    import jupyter_server_mathjax
    import sphinx_revealjs

    static = os.path.join(out, "_static")
    sources = {"reveal": os.path.join(os.path.dirname(sphinx_revealjs.__file__), "_static", "revealjs"),
               "mathjax": os.path.join(os.path.dirname(jupyter_server_mathjax.__file__), "static")}
    for name in libraries:
        target = os.path.join(static, name)
        if not os.path.isdir(target):
            shutil.copytree(sources[name], target)
    return static


MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"


def build_slides(out: str, notebooks: str | None = None) -> list[str]:
    """Write one offline reveal.js deck per notebook into ``out`` (``0N_*.slides.html`` beside a shared
    ``_static`` folder); return the decks' paths."""
    from nbconvert import SlidesExporter
    from nbformat import reads
    from traitlets.config import Config

    os.makedirs(out, exist_ok=True)
    _copy_static(out)
    config = Config()
    config.SlidesExporter.reveal_url_prefix = "_static/reveal"
    config.SlidesExporter.reveal_scroll = True
    config.SlidesExporter.reveal_transition = "none"
    config.SlidesExporter.reveal_width = str(SLIDE_WIDTH)
    config.SlidesExporter.reveal_height = str(SLIDE_HEIGHT)
    config.SlidesExporter.exclude_input_prompt = True
    config.SlidesExporter.exclude_output_prompt = True
    config.SlidesExporter.reveal_number = "c/t"
    config.SlidesExporter.mathjax_url = f"_static/mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    config.SlidesExporter.extra_template_basedirs = [TEMPLATES]
    config.SlidesExporter.template_name = "course_slides"
    exporter = SlidesExporter(config=config)
    written = []
    for path in notebook_paths(notebooks):
        with open(path, encoding="utf-8") as fh:
            nb = reads(fh.read(), as_version=4)
        for cell in nb.cells:  # links between chapters lead from deck to deck
            if cell.cell_type == "markdown":
                cell.source = NOTEBOOK_LINK.sub(r"](\1.slides.html\2)", cell.source)
        nb.cells = deck_cells(nb.cells)
        for cell in nb.cells:
            _offline_html(cell.get("outputs", []))
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": _title(nb, path)}})
        target = os.path.join(out, os.path.basename(path).replace(".ipynb", ".slides.html"))
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(body)
        written.append(target)
    return written


NOTEBOOK_LINK = re.compile(r"\]\((\d\d_[\w-]+)\.ipynb(#[^)]*)?\)")
SLIDE_WIDTH, SLIDE_HEIGHT = 1280, 800  # reveal.js's canvas (scaled to the screen)
TEXT_LINE_PX, CODE_LINE_PX, CHARS_PER_LINE = 30, 21, 92  # at the template's 22 px text and 16 px code
BUDGET_PX = 660  # what fits under a slide's margins (checked with benchmarks/slide_check.py)
FIGURE_PX = (280, 600)  # the template's least and largest figure height ...
FIGURE_MIN_WIDTH = 0.6  # ... and least width, as a share of the slide: small figures are enlarged
CAPTION_PX = 2 * CODE_LINE_PX + 10  # two printed lines before a figure stay with it


def _text_height(text: str) -> float:
    """A slide's estimated height in pixels for Markdown ``text`` (display math counts as two lines)."""
    lines = 0.0
    for line in text.splitlines():
        if line.lstrip().startswith("|"):  # a table row: its widest cell wraps in a column of about half width
            lines += 0.3 + max(1, max(len(cell) for cell in line.split("|")) // (CHARS_PER_LINE // 2))
        else:
            lines += 1 + len(line) // CHARS_PER_LINE if line.strip() else 0.5
    return TEXT_LINE_PX * (lines + 2.5 * text.count("$$") / 2)


def _split_table(par: str) -> list[str]:
    """A Markdown table too tall for a slide, as several tables of consecutive rows under the same header."""
    rows = par.splitlines()
    header, body = rows[:2], rows[2:]
    pieces = [[]]
    for row in body:
        if pieces[-1] and _text_height("\n".join(header + pieces[-1] + [row])) > BUDGET_PX:
            pieces.append([])
        pieces[-1].append(row)
    return ["\n".join(header + piece) for piece in pieces]


def _markdown_chunks(text: str) -> list[str]:
    """``text`` cut into pieces of at most ``BUDGET_PX`` estimated height each: at blank lines, and where
    a display equation ends inside a paragraph (never inside display math or a code fence); a table too
    tall for a slide is cut between rows. Joined back with the separators they were cut at, the pieces
    are ``text`` (up to blank lines at the ends and the repeated table headers)."""
    pieces, current, fence, math = [], [], False, False  # pieces: (text, the separator before the next)
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
        was_math = math
        math ^= line.count("$$") % 2 == 1
        if not line.strip() and not fence and not math and current:
            pieces.append(["\n".join(current), "\n\n"])
            current = []
        elif not line.strip() and not current and pieces:
            pieces[-1][1] = "\n\n"  # a blank line after an equation that ended a piece
        elif line.strip() or current:
            current.append(line)
            closes_math = (was_math and not math) or (line.strip().startswith("$$") and line.strip().endswith("$$")
                                                       and len(line.strip()) > 4)
            if closes_math and not fence:
                pieces.append(["\n".join(current), "\n"])
                current = []
    if current:
        pieces.append(["\n".join(current), "\n\n"])
    split = []
    for par, sep in pieces:
        rows = par.splitlines()
        if len(rows) > 2 and all(r.lstrip().startswith("|") for r in rows) and _text_height(par) > BUDGET_PX:
            split += [[table, "\n\n"] for table in _split_table(par)]
        else:
            split.append([par, sep])
    chunks = []  # [text, separator after it]
    for par, sep in split:
        if chunks:
            last = chunks[-1][0].strip()
            only_headings = all(re.match(r"#{1,6} ", line) for line in last.splitlines() if line.strip())
            lead_in = last.endswith(":")  # "... as follows:" stays with what follows
            new_section = re.match(r"#{1,6} ", par) is not None  # a heading starts a slide of its own
            fits = _text_height(chunks[-1][0] + chunks[-1][1] + par) <= BUDGET_PX
        if chunks and (only_headings or lead_in or (fits and not new_section)):
            chunks[-1] = [chunks[-1][0] + chunks[-1][1] + par, sep]
        else:
            chunks.append([par, sep])
    return [c[0] for c in chunks] or [text]


def _png_height(data: str) -> float:
    import base64
    import struct

    head = base64.b64decode(data[:64])
    width, height = struct.unpack(">II", head[16:24])
    shown = min(SLIDE_WIDTH - 100, max(width, FIGURE_MIN_WIDTH * (SLIDE_WIDTH - 100)))  # the template's CSS
    return min(FIGURE_PX[1], max(FIGURE_PX[0], height * shown / width))


def _output_height(outputs) -> float:
    h = 0.0
    for out in outputs:
        data = out.get("data", {})
        if "image/png" in data:
            h += _png_height(data["image/png"]) + 10
        elif "text/html" in data:
            h += 300
        else:
            text = out.get("text", "") or data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            h += CODE_LINE_PX * (1 + len(text.splitlines())) + 10
    return h


def deck_cells(cells):
    """The cells of a deck (nbformat nodes, from a notebook with slide metadata): what fits on a slide
    stays as it is; a Markdown cell is cut before each heading inside it (a slide for ``##``, a sub-slide
    otherwise) and, where taller than a slide, into sub-slides at paragraph breaks (a heading or a line
    ending in ":" stays with what follows it); a code cell whose code and outputs do not fit together is
    shown as sub-slides, the code, then its outputs a slide's worth at a time; code longer than
    ``LONG_CODE_LINES`` lines shows its outputs only (it is in the notebook). Hidden code is marked as
    nbconvert expects, ``metadata.transient.remove_source``."""
    out = []
    for cell in cells:
        kind = cell.get("metadata", {}).get("slideshow", {}).get("slide_type", "-")
        if kind in ("skip", "notes"):
            out.append(cell)
        elif cell.cell_type == "markdown" and len(_markdown_chunks(cell.source)) > 1:
            for k, chunk in enumerate(_markdown_chunks(cell.source)):
                piece = copy.deepcopy(cell)
                piece.source = chunk
                piece.id = f"{cell.id}-{k}"
                if k:
                    kind = "slide" if re.match(r"#{1,2} ", chunk) else "subslide"
                    piece.metadata["slideshow"] = {"slide_type": kind}
                out.append(piece)
        elif cell.cell_type == "code":
            n_lines = len(cell.source.splitlines())
            heights = [_output_height([o]) for o in cell.outputs]
            show_code = n_lines <= LONG_CODE_LINES or not cell.outputs
            if show_code and CODE_LINE_PX * n_lines + 30 + sum(heights) <= BUDGET_PX:
                out.append(cell)
                continue
            if show_code:
                code_only = copy.deepcopy(cell)
                code_only.outputs = []
                out.append(code_only)
            groups, height = [[]], 0.0  # the outputs, a slide's worth at a time
            for output, h in zip(cell.outputs, heights):
                caption = all(o.get("output_type") == "stream" for o in groups[-1]) and height <= CAPTION_PX
                if groups[-1] and height + h > BUDGET_PX + (CAPTION_PX if caption else 0):
                    carried = []  # a line printed just before a figure is its caption: it moves with it
                    if len(groups[-1]) > 1 and groups[-1][-1].get("output_type") == "stream":
                        carried = [groups[-1].pop()]
                    groups.append(carried)
                    height = sum(_output_height([o]) for o in carried)
                groups[-1].append(output)
                height += h
            for k, group in enumerate(groups):
                piece = copy.deepcopy(cell)
                piece.outputs = group
                piece.metadata["transient"] = {"remove_source": True}
                if show_code or k:
                    piece.id = f"{cell.id}-output{k}"
                    piece.metadata["slideshow"] = {"slide_type": "subslide"}
                out.append(piece)
        else:
            out.append(cell)
    return out


def _title(nb, path) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown" and _src(cell).lstrip().startswith("# "):
            return _src(cell).lstrip()[2:].splitlines()[0].strip()
    return os.path.splitext(os.path.basename(path))[0]


SITE_CONF = '''# Sphinx configuration of the course's site, written by course_utils.publish (do not edit the copy)
project = "Diffusion models, from Neural ODEs to latent diffusion"
extensions = ["myst_nb"]
nb_execution_mode = "off"  # the stored outputs are the content
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {{
    "repository_url": "{repository}",
    "repository_branch": "{branch}",
    "path_to_docs": "notebooks",
    "use_repository_button": True,
    "launch_buttons": {{"colab_url": "https://colab.research.google.com", "binderhub_url": "https://mybinder.org"}},
}}
html_static_path = ["_static"]
html_css_files = ["course.css"]
mathjax_path = "mathjax/MathJax.js?config={config}"
mathjax2_config = {{
    "tex2jax": {{"inlineMath": [["\\\\(", "\\\\)"]], "displayMath": [["\\\\[", "\\\\]"]],
                "processClass": "math|tex2jax_process", "ignoreClass": "tex2jax_ignore"}},
    "HTML-CSS": {{"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web", "webFont": "STIX-Web",
                  "imageFont": None,
                  "linebreaks": {{"automatic": True}}}},
    "TeX": {{"equationNumbers": {{"autoNumber": "AMS"}}}},
    "messageStyle": "none",
}}
nb_ipywidgets_js = {{}}  # no widget state is stored: nothing to fetch from a CDN
myst_dmath_double_inline = True  # the notebooks' $$...$$ may open inside a paragraph, as Jupyter allows
exclude_patterns = ["_build"]
'''


DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.S)
REMOTE_LINK = re.compile(r"<link[^>]+href=\"(?:https?:)?//[^\"]*\"[^>]*>\n?")


def _offline_html(outputs) -> None:
    """Drop, in place, the style sheets that HTML outputs fetch from the web (matplotlib's animations link
    Font Awesome for their buttons' icons): the decks and the site must not depend on the network."""
    for out in outputs:
        data = out.get("data", {})
        if "text/html" in data:
            html = data["text/html"]
            html = "".join(html) if isinstance(html, list) else html
            data["text/html"] = REMOTE_LINK.sub("", html)


def build_site(out: str, notebooks: str | None = None, edition: str = "student") -> str:
    """Build the static site into ``out`` from the stored notebooks (no execution) and the instructor's
    guide; warnings (a broken cross-reference among them) are errors. ``edition``: "student" (the default:
    the site is what students are sent to, so the exercises' solutions are left out, as in the student
    edition) or "instructor" (everything). Returns the path of its index."""
    if edition not in ("student", "instructor"):
        raise ValueError(f"edition must be 'student' or 'instructor', got {edition!r}")
    paths = notebook_paths(notebooks)
    with tempfile.TemporaryDirectory() as src:
        static = _copy_static(src, libraries=("mathjax",))
        with open(os.path.join(static, "course.css"), "w", encoding="utf-8") as fh:
            fh.write("div.math, .MathJax_Display { overflow-x: auto; overflow-y: hidden; }\n")
        with open(os.path.join(src, "conf.py"), "w", encoding="utf-8") as fh:
            fh.write(SITE_CONF.format(config=MATHJAX_CONFIG, repository=launch.REPOSITORY, branch=launch.BRANCH))
        names = []
        for path in paths:
            with open(path, encoding="utf-8") as fh:
                nb = json.load(fh)
            if edition == "student":
                nb = student_notebook(nb)
            # the theme's launch buttons replace the badges; the Colab set-up cell stays, for the downloads
            nb["cells"] = [c for c in nb["cells"] if not (launch.MARKER in _src(c) and c["cell_type"] == "markdown")]
            for cell in nb["cells"]:
                if cell["cell_type"] == "markdown":  # Jupyter reads $$...$$ before Markdown, MyST after: keep
                    # display math on one line so that a line of it starting with "+" is not a list item
                    cell["source"] = DISPLAY_MATH.sub(lambda m: m.group(0).replace("\n", " "), _src(cell))
                _offline_html(cell.get("outputs", []))
                # widgets need a kernel: the static figure above them is what the site shows
                cell["outputs"] = [o for o in cell.get("outputs", [])
                                   if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
            name = os.path.basename(path)
            with open(os.path.join(src, name), "w", encoding="utf-8") as fh:
                json.dump(nb, fh)
            names.append(os.path.splitext(name)[0])
        guide = os.path.join(REPO_ROOT, "docs", "teaching.md")
        shutil.copy(guide, os.path.join(src, "teaching.md"))
        readme = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
        intro = readme.split("\n## ", 1)[0].strip()
        with open(os.path.join(src, "index.md"), "w", encoding="utf-8") as fh:
            fh.write(intro + "\n\n```{toctree}\n:maxdepth: 2\n:caption: Chapters\n\n" + "\n".join(names)
                     + "\n```\n\n```{toctree}\n:maxdepth: 1\n:caption: For lecturers\n\nteaching\n```\n")
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", src, out]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the site did not build (sphinx exit {result.returncode}):\n{result.stderr[-4000:]}")
    return os.path.join(out, "index.html")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["slides", "site", "metadata"])
    parser.add_argument("--out", default=None, help="output folder (default: build/slides or build/site)")
    parser.add_argument("--notebooks", default=None, help="folder of the notebooks (default: notebooks/)")
    parser.add_argument("--edition", default="student", choices=["student", "instructor"],
                        help="site only: leave the exercises' solutions out (student, the default) or in")
    args = parser.parse_args(argv)
    if args.what == "metadata":
        for path in refresh_metadata(args.notebooks):
            print("updated", path)
        return 0
    out = args.out or os.path.join("build", args.what)
    if args.what == "slides":
        for path in build_slides(out, args.notebooks):
            print(path)
    else:
        print(build_site(out, args.notebooks, args.edition))
    return 0


if __name__ == "__main__":
    sys.exit(main())
