"""The README promises two commands; CI must run exactly the test one."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_ci_runs_the_readme_test_command():
    cmds = readme_commands()
    test_cmd = [c for c in cmds if "pytest" in c]
    assert len(test_cmd) == 1, f"README should give one test command, found {test_cmd}"
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert test_cmd[0] in ci.splitlines()


def test_requirements_list_the_course_stack():
    req = open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8").read()
    for name in ["torch", "torchvision", "numpy", "matplotlib", "jupyterlab", "nbval", "torchdiffeq", "torchmetrics",
                 "torch-fidelity", "-e ."]:
        assert re.search(rf"^{re.escape(name)}", req, re.M), name
    # torch and torchvision are pinned as a pair that imports together
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)", req, re.M))
    assert set(pins) == {"torch", "torchvision"}, pins


def test_readme_tour_runs():
    """The README's tour of course_utils is code a newcomer will paste: it must run as written."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.+?)\n```", text, re.S)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["x0"].shape == (500, 2)


def test_notebook_sources_hold_no_control_characters():
    """A LaTeX command written into a Python string without escaping ("\\bar", "\\times") turns into a
    backspace or a tab and renders as garbage; no cell may hold a control character other than newline."""
    import glob
    import json
    bad = []
    for path in sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))):
        for k, cell in enumerate(json.load(open(path, encoding="utf-8"))["cells"]):
            text = "".join(cell["source"])
            if re.search(r"[\x00-\x09\x0b-\x1f]", text):
                bad.append(f"{os.path.basename(path)} cell {k}")
    assert not bad, f"control characters in {bad}"
