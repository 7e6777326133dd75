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
    for name in ["torch", "numpy", "matplotlib", "jupyterlab", "nbval", "torchdiffeq", "-e ."]:
        assert re.search(rf"^{re.escape(name)}", req, re.M), name
