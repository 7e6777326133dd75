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
    with_launch_cells,
    with_slide_metadata,
)


def _load(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _md(text, **meta):
    return {"cell_type": "markdown", "metadata": dict(meta), "source": text}


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


def test_colab_cell_does_nothing_outside_colab():
    import sys

    code = "".join(launch.launch_cell("03_ddpm_ddim.ipynb")[1]["source"])
    before = (os.getcwd(), list(sys.path))
    exec(compile(code, "launch", "exec"), {})
    assert (os.getcwd(), list(sys.path)) == before
    assert f'"{launch.REPOSITORY}"' in code and '"google.colab" in sys.modules' in code


def test_binder_installs_what_the_requirements_install():
    def packages(path):
        names = set()
        for line in open(path, encoding="utf-8"):
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                names.add(re.split(r"[=<>~! \[]", line)[0].lower())
        return names

    assert packages(os.path.join(REPO_ROOT, "binder", "requirements.txt")) == \
        packages(os.path.join(REPO_ROOT, "requirements.txt"))
    assert "pip install --no-deps -e ." in open(os.path.join(REPO_ROOT, "binder", "postBuild")).read()


def test_deck_cells_split_what_does_not_fit_and_lose_nothing():
    from nbformat import from_dict

    paragraphs = [f"Paragraph {k}. " + "word " * 150 for k in range(8)]
    long_md = "\n\n".join(paragraphs[:3] + ["$$\na\n\n+ b\n$$"] + paragraphs[3:])
    assert _text_height(long_md) > BUDGET_PX
    chunks = _markdown_chunks(long_md)
    assert len(chunks) > 1 and all(_text_height(c) <= BUDGET_PX for c in chunks)
    assert "\n\n".join(chunks) == long_md  # cut at paragraph breaks only; display math kept whole
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 800, 500)
                           + bytes(40)).decode()  # the start of an 800 x 500 PNG
    figure = {"output_type": "display_data", "data": {"image/png": png}, "metadata": {}}
    cells = [from_dict(c) for c in [
        {**_md(long_md), "id": "m"},
        {**_code("\n".join(["x = 1"] * 12), [figure]), "id": "c"},             # code + figure: too tall
        {**_code("\n".join(["x = 1"] * (LONG_CODE_LINES + 1)), [figure]), "id": "l"},  # long code: output only
        {**_code("x = 1", [figure]), "id": "s"},                                  # fits as it is
        {**_code("# Check\nassert True"), "id": "n", "metadata": {"slideshow": {"slide_type": "notes"}}}]]
    out = deck_cells(cells)
    ids = [c.id for c in out]
    assert ids == [f"m-{k}" for k in range(len(chunks))] + ["c", "c-output", "l", "s", "n"]
    assert out[len(chunks)].outputs == [] and out[len(chunks) + 1].transient == {"remove_source": True}
    assert out[len(chunks) + 2].transient == {"remove_source": True} and "transient" not in out[-2]


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
        has_checks = any("".join(c["source"]).startswith("# Check") for c in _load(path)["cells"])
        assert ('<aside class="notes">' in html) == has_checks  # check cells become speaker notes


def test_site_builds_from_the_stored_notebooks(tmp_path):
    index = build_site(str(tmp_path / "site"))
    assert os.path.exists(index)
    for path in notebook_paths():
        page = open(tmp_path / "site" / os.path.basename(path).replace(".ipynb", ".html"), encoding="utf-8").read()
        assert "<img" in page and 'class="math' in page  # figures and formulas
        assert "https://" not in re.sub(r'href="[^"]*"', "", "".join(re.findall(r"<script[^>]*>", page)))
    assert os.path.exists(tmp_path / "site" / "teaching.html")


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
