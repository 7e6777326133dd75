"""Slides, the site and the launch links (course_utils.publish, course_utils.launch)."""
import base64
import json
import os
import re
import struct

import pytest

from course_utils import REPO_ROOT, launch
from course_utils.publish import (
    BUDGET_PX,
    LONG_CODE_LINES,
    _markdown_chunks,
    _text_height,
    build_site,
    build_slides,
    deck_cells,
    notebook_paths,
    slide_type,
    stored_run_time,
    with_launch_cells,
    with_run_times_table,
    with_slide_metadata,
)


def _load(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _md(text, **meta):
    return {"cell_type": "markdown", "metadata": dict(meta), "source": text}


def _png_start(width, height):
    """The first bytes of a PNG image of the given size, base64-encoded, as a notebook stores it."""
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height)
    return base64.b64encode(head + bytes(40)).decode()


def _code(text, outputs=(), **meta):
    return {"cell_type": "code", "metadata": dict(meta), "source": text, "outputs": list(outputs),
            "execution_count": None}


def test_slide_types_follow_the_notebook_structure():
    assert slide_type(_md("# Chapter 3"), True) == "slide"
    assert slide_type(_md("## 2. The forward process\ntext"), False) == "slide"
    assert slide_type(_md("### Q1. Why?"), False) == "subslide"
    assert slide_type(_md("**Check.** more text"), False) == "subslide"
    assert slide_type(_md("<details>...</details>", tags=["solution"]), False) == "skip"
    assert slide_type(_code("import torch"), True) == "skip"  # set-up code before the first section
    assert slide_type(_code("x = 1"), False) == "subslide"
    assert slide_type(_code("# Check: the claim\nassert x == 1"), False) == "notes"
    assert slide_type(_code("# NBVAL_CHECK_OUTPUT\n# Check: the claim\nassert x == 1"), False) == "notes"
    assert slide_type(_code("# NBVAL_CHECK_OUTPUT\nprint(x)"), False) == "subslide"
    assert slide_type(_code('print(f"notebook ran in {time.time() - T_START:.0f} s")'), False) == "skip"
    assert slide_type(_code(f"# {launch.MARKER}: ..."), False) == "skip"
    nb = {"cells": [_md("# T"), _code("import torch"), _md("## 1. A"), _code("import torch")], "metadata": {}}
    types = [c["metadata"]["slideshow"]["slide_type"] for c in with_slide_metadata(nb)["cells"]]
    assert types == ["slide", "skip", "slide", "subslide"]
    with pytest.raises(ValueError, match="nb must be a notebook"):
        with_slide_metadata([])


def test_stored_notebooks_carry_current_slide_metadata_and_launch_cells():
    # `python -m course_utils.publish metadata` would change nothing: run it after editing a notebook
    for path in notebook_paths():
        nb = _load(path)
        name = os.path.basename(path)
        assert with_slide_metadata(with_launch_cells(nb, name)) == nb, f"{name}: rerun publish metadata"
        assert nb["metadata"]["rise"]["scroll"] is True
        types = {c["metadata"]["slideshow"]["slide_type"] for c in nb["cells"]}
        assert {"slide", "subslide", "skip"} <= types
        links = "".join(nb["cells"][1]["source"])
        assert launch.colab_url(name) in links and launch.binder_url(name) in links
        assert launch.REPOSITORY in "".join(nb["cells"][2]["source"])
        assert sum(launch.MARKER in "".join(c["source"]) for c in nb["cells"]) == 2
        for cell in nb["cells"]:  # a section's heading opens its cell, so the section opens a slide (also in RISE)
            text = "".join(cell["source"]).strip()
            if cell["cell_type"] == "markdown" and "solution" not in cell["metadata"].get("tags", []):
                assert not re.search(r"\n#{1,2} ", text), f"{name}: split the cell before {text[:60]!r}"


def test_readme_links_come_from_the_one_repository_url():
    readme = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
    names = [os.path.basename(p) for p in notebook_paths()]
    assert launch.with_readme_table(readme, names) == readme, "rerun python -m course_utils.publish metadata"
    for name in names:
        assert launch.colab_url(name) in readme and launch.binder_url(name) in readme
    assert launch.colab_url("03_ddpm_ddim.ipynb", "https://github.com/me/fork", "dev") == \
        "https://colab.research.google.com/github/me/fork/blob/dev/notebooks/03_ddpm_ddim.ipynb"
    assert launch.binder_url("03_ddpm_ddim.ipynb", "https://github.com/me/fork.git") == \
        "https://mybinder.org/v2/gh/me/fork/main?labpath=notebooks%2F03_ddpm_ddim.ipynb"
    with pytest.raises(ValueError, match="repository must be a GitHub URL"):
        launch.colab_url("03_ddpm_ddim.ipynb", "https://gitlab.com/me/fork")
    with pytest.raises(ValueError, match="name must be a notebook file name"):
        launch.binder_url("../x.py")
    with pytest.raises(ValueError, match="launch table"):
        launch.with_readme_table("no markers", names)


def test_teaching_guide_run_times_are_the_stored_notebooks():
    """docs/teaching.md's table of run times is the notebooks' stored runs: what each final cell printed and its
    slowest cell, beside the README's estimate."""
    guide = open(os.path.join(REPO_ROOT, "docs", "teaching.md"), encoding="utf-8").read()
    readme = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
    assert with_run_times_table(guide, notebook_paths(), readme) == guide, \
        "rerun python -m course_utils.publish metadata"


def test_stored_run_time_reads_the_final_line_and_the_slowest_cell(tmp_path):
    def code(i, seconds, text=""):
        start = f"2026-01-01T00:00:{i:02d}.000000Z"
        end = f"2026-01-01T00:{(i + seconds) // 60:02d}:{(i + seconds) % 60:02d}.500000Z"
        return {"cell_type": "code", "source": "x = 1", "metadata": {"execution": {
            "iopub.execute_input": start, "shell.execute_reply": end}},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": [text]}] if text else []}

    def md(text):
        return {"cell_type": "markdown", "source": text, "metadata": {}}
    nb = {"cells": [md("# Title"), code(0, 2), md("## 1. First"), code(1, 70), md("### 1.1 Sub"), code(2, 5),
                    md("## Exercises"), code(3, 90), md("## 2. Last"), code(4, 0, "notebook ran in 167 s\n")]}
    assert stored_run_time(nb) == dict(total=167, slowest=90.5, cell=7, section="'Exercises'")
    nb["cells"][7] = code(3, 9)
    assert stored_run_time(nb) == dict(total=167, slowest=70.5, cell=3, section="1")
    with pytest.raises(ValueError, match="final cell must print"):
        stored_run_time({"cells": nb["cells"][:-1]})
    with pytest.raises(ValueError, match="execution times"):
        stored_run_time({"cells": [md("## 1. A"), dict(code(0, 1, "notebook ran in 1 s"), metadata={})]})
    path = tmp_path / "07_x.ipynb"
    path.write_text(json.dumps(nb))
    readme = "| [`07_x.ipynb`](notebooks/07_x.ipynb) | topics | ~3 min (180 s) | none |"
    guide = "intro\n<!-- run-times:start -->\nold\n<!-- run-times:end -->\nrest"
    table = with_run_times_table(guide, [str(path)], readme)
    assert table.startswith("intro\n<!-- run-times:start -->\n| notebook |") and table.endswith("end -->\nrest")
    assert "| `07_x.ipynb` | ~3 min | 167 s | 70 s (cell 3, section 1) |" in table
    with pytest.raises(ValueError, match="readme must have a row for 07_x.ipynb"):
        with_run_times_table(guide, [str(path)], "no table")
    with pytest.raises(ValueError, match="run-times"):
        with_run_times_table("no markers", [str(path)], readme)


def test_colab_cell_installs_the_course_on_colab_and_does_nothing_elsewhere(monkeypatch, tmp_path):
    import subprocess
    import sys
    import types

    code = compile("".join(launch.launch_cell("03_ddpm_ddim.ipynb")[1]["source"]), "launch", "exec")
    before = (os.getcwd(), list(sys.path))
    exec(code, {})  # not on Colab: nothing happens
    assert (os.getcwd(), list(sys.path)) == before
    calls, dirs = [], []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setattr(os, "chdir", dirs.append)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(code, {})  # "on Colab": clone the repository, install course_utils, work in its notebooks folder
    assert calls[0][:2] == ["git", "clone"] and launch.REPOSITORY in calls[0] and "/content/course" in calls[0]
    assert calls[1][1:4] == ["-m", "pip", "install"] and "/content/course" in calls[1]
    assert dirs == ["/content/course/notebooks"] and sys.path[0] == "/content/course"


def test_binder_installs_what_the_requirements_install():
    def packages(path):
        names = set()
        for line in open(path, encoding="utf-8"):
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                names.add(re.split(r"[=<>~! \[]", line)[0].lower())
        return names

    binder, main = (os.path.join(REPO_ROOT, *p) for p in (("binder", "requirements.txt"), ("requirements.txt",)))
    assert packages(binder) == packages(main)

    def pins(path):
        return sorted(line.split("#")[0].strip() for line in open(path)
                      if line.startswith(("torch==", "torchvision==")))

    assert pins(binder) == pins(main) and len(pins(main)) == 2  # the same releases, from the CPU index
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in open(binder).read()
    assert open(os.path.join(REPO_ROOT, "binder", "runtime.txt")).read().startswith("python-3.")
    assert "pip install --no-deps -e ." in open(os.path.join(REPO_ROOT, "binder", "postBuild")).read()


def test_deck_cells_split_what_does_not_fit_and_lose_nothing():
    from nbformat import from_dict

    paragraphs = [f"Paragraph {k}. " + "word " * 150 for k in range(8)]
    long_md = "\n\n".join(paragraphs[:3] + ["$$\na\n\n+ b\n$$"] + paragraphs[3:])
    assert _text_height(long_md) > BUDGET_PX
    chunks = _markdown_chunks(long_md)
    assert len(chunks) > 1 and all(_text_height(c) <= BUDGET_PX for c in chunks)
    assert "\n\n".join(chunks) == long_md  # cut at paragraph breaks only; display math kept whole
    one_paragraph = ("word " * 300 + "\n$$\nF(\\theta) = 1 \\tag{2.1}\n$$\n" + "more " * 300).strip()
    pieces = _markdown_chunks(one_paragraph)  # no blank line at all: cut where the equation ends
    assert len(pieces) == 2 and pieces[0].endswith("$$") and "\n".join(pieces) == one_paragraph
    pieces = _markdown_chunks("## 8. Questions\n\n### Q1. Why?\nBecause.\n\n### Q2. How?\nAs follows:\n\n$$x = 1$$")
    assert pieces == ["## 8. Questions\n\n### Q1. Why?\nBecause.", "### Q2. How?\nAs follows:\n\n$$x = 1$$"]
    table = "| idea | measured |\n|---|---|\n" + "\n".join(f"| row {k} | " + "value " * 30 + "|" for k in range(40))
    pieces = _markdown_chunks("## Summary\n\n" + table)
    assert len(pieces) > 2 and all(_text_height(p) <= BUDGET_PX for p in pieces)
    rows = [r for p in pieces for r in p.splitlines() if r.startswith("| row")]
    assert rows == table.splitlines()[2:]  # every row once, in order, each piece under the same header
    assert all(p.splitlines()[-len([r for r in p.splitlines() if r.startswith("| row")]) - 2:][:2]
               == table.splitlines()[:2] for p in pieces)
    png = _png_start(800, 500)
    figure = {"output_type": "display_data", "data": {"image/png": png}, "metadata": {}}
    cells = [from_dict(c) for c in [
        {**_md(long_md), "id": "m"},
        {**_code("\n".join(["x = 1"] * 12), [figure]), "id": "c"},             # code + figure: too tall
        {**_code("\n".join(["x = 1"] * (LONG_CODE_LINES + 1)), [figure]), "id": "l"},  # long code: output only
        {**_code("x = 1", [figure]), "id": "s"},                                  # fits as it is
        {**_code("# Check\nassert True"), "id": "n", "metadata": {"slideshow": {"slide_type": "notes"}}}]]
    out = deck_cells(cells)
    ids = [c.id for c in out]
    assert ids == [f"m-{k}" for k in range(len(chunks))] + ["c", "c-output0", "l", "s", "n"]
    hidden = {"remove_source": True}
    assert out[len(chunks)].outputs == [] and out[len(chunks) + 1].metadata.transient == hidden
    assert out[len(chunks) + 2].metadata.transient == hidden and "transient" not in out[-2].metadata


def test_decks_show_long_code_as_output_only_and_split_code_from_tall_figures(tmp_path):
    png = _png_start(900, 600)
    figure = {"output_type": "display_data", "data": {"image/png": png, "text/plain": "<Figure>"}, "metadata": {}}
    long_code = "\n".join(f"long_variable_{k} = {k}" for k in range(LONG_CODE_LINES + 5))
    tall = "\n".join(f"tall_variable_{k} = {k}" for k in range(12))
    heading = "## 1. A section\n\n" + "\n\n".join(f"Paragraph {k}: " + "word " * (420 if k == 0 else 120)
                                                    for k in range(6))
    caption = {"output_type": "stream", "name": "stdout", "text": "the caption of figure two\n"}
    nb = {"cells": [_md("# A chapter"), _md(heading), _code(long_code, [figure]),
                    _code(tall, [figure, caption, figure])],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    for k, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell{k}"
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "00_a.ipynb").write_text(json.dumps(with_slide_metadata(nb)))
    html = open(build_slides(str(tmp_path / "decks"), str(folder))[0], encoding="utf-8").read()
    assert "long_variable_" not in html and html.count(png[:40]) == 3  # long code hidden, its figure shown
    assert html.count("tall_variable_3") == 1  # the code once, then its two figures on their own slides
    sections = re.findall(r"<section[^>]*>(.*?)</section>", html, re.S)
    assert all(png[:40] not in sec for sec in sections if "tall_variable_3" in sec)
    assert not any(sec.count(png[:40]) > 1 for sec in sections)  # 600 px figures: one per slide
    assert any("the caption of figure two" in sec and png[:40] in sec for sec in sections)  # kept together
    texts = [re.sub(r"<[^>]+>|¶", "", sec).strip() for sec in sections]
    assert "1. A section" in "".join(texts) and not any(text == "1. A section"
                                                        for text in texts)  # no heading alone on a slide


def test_slide_decks_build_offline_for_every_chapter(tmp_path):
    decks = build_slides(str(tmp_path))
    assert [os.path.basename(d) for d in decks] == [os.path.basename(p).replace(".ipynb", ".slides.html")
                                                     for p in notebook_paths()]
    for deck, path in zip(decks, notebook_paths()):
        html = open(deck, encoding="utf-8").read()
        sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
        assert sources and not [s for s in sources if s.startswith(("http:", "https:", "//"))], deck
        for src in sources:  # every script and style sheet the deck loads is in the folder
            assert os.path.exists(os.path.join(str(tmp_path), src.split("?")[0])), src
        assert html.count("<section") > 20 and "Reveal.initialize" in html
        targets = re.findall(r'href="(\d\d_[^"#]+)', html)
        for target in targets:  # links to other chapters lead to their decks
            assert target.endswith(".slides.html") and os.path.exists(os.path.join(str(tmp_path), target)), target
        if os.path.basename(path) == "03_ddpm_ddim.ipynb":
            assert "02_score_matching.slides.html" in targets  # chapter 3 links back to chapter 2
        n_checks = sum(c["metadata"]["slideshow"]["slide_type"] == "notes" for c in _load(path)["cells"])
        assert html.count('<aside class="notes">') == n_checks  # the check cells, as speaker notes


def test_site_builds_from_the_stored_notebooks(tmp_path):
    index = build_site(str(tmp_path / "site"))
    assert os.path.exists(index)
    for path in notebook_paths():
        page = open(tmp_path / "site" / os.path.basename(path).replace(".ipynb", ".html"), encoding="utf-8").read()
        assert "<img" in page and 'class="math' in page  # figures and formulas
        assert "https://" not in re.sub(r'href="[^"]*"', "", "".join(re.findall(r"<script[^>]*>", page)))
    assert os.path.exists(tmp_path / "site" / "teaching.html")
    ch3 = open(tmp_path / "site" / "03_ddpm_ddim.html", encoding="utf-8").read()
    assert 'href="02_score_matching.html"' in ch3  # the chapters' links to each other (checked by the -W build)
    ch4 = open(tmp_path / "site" / "04_langevin_ncsn_guidance.html", encoding="utf-8").read()
    assert "<summary>Solution" not in ch4 and "Exercise 2" in ch4  # the student edition by default ...
    assert "colab.research.google.com" in ch4 and "mybinder.org" in ch4  # the theme's launch buttons
    one = tmp_path / "one"
    one.mkdir()
    name = "00_neural_ode_ffjord.ipynb"  # links to no other chapter, so it builds alone
    (one / name).write_text(open(os.path.join(REPO_ROOT, "notebooks", name), encoding="utf-8").read())
    build_site(str(tmp_path / "instructor"), str(one), edition="instructor")  # ... and with them on request
    page = tmp_path / "instructor" / name.replace(".ipynb", ".html")
    assert "<summary>Solution" in open(page, encoding="utf-8").read()
    with pytest.raises(ValueError, match="edition must be"):
        build_site(str(tmp_path / "x"), edition="teacher")


def test_site_build_fails_on_a_broken_cross_reference(tmp_path):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    nb = {"cells": [_md("# A chapter\n\nSee [the next chapter](99_missing.ipynb).")], "metadata": {},
          "nbformat": 4, "nbformat_minor": 5}
    (notebooks / "00_a.ipynb").write_text(json.dumps(nb))
    with pytest.raises(RuntimeError, match="did not build"):
        build_site(str(tmp_path / "site"), str(notebooks))
    nb["cells"][0]["source"] = "# A chapter\n\nNo links."
    (notebooks / "00_a.ipynb").write_text(json.dumps(nb))
    assert os.path.exists(build_site(str(tmp_path / "site"), str(notebooks)))
