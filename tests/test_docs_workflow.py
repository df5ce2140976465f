"""The GitHub Actions workflow in docs/grading.md, run step by step as written: the student's repository
at the top, the course (this repository) checked out in ./course, a fresh virtual environment for Python."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from cnnspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
LECTURE = ROOT / "specs" / "assignments" / "lecture.yaml"


def workflow() -> dict:
    text = (ROOT / "docs" / "grading.md").read_text()
    block = re.search(r"```yaml\n(# \.github/workflows/grade\.yml\n.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)


def test_the_documented_github_workflow_runs_as_written(tmp_path, capsys):
    steps = workflow()["jobs"]["grade"]["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout", "actions/checkout", "actions/setup-python", "actions/upload-artifact"]
    work = tmp_path / "student"
    work.mkdir()
    shutil.copytree(ROOT, work / "course", ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info",
                                                                          "build", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    summary = tmp_path / "step_summary.md"
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "GITHUB_STEP_SUMMARY": str(summary), "CI": "true"}
    env.pop("PYTHONPATH", None)

    def run_steps(answers: Path) -> list[int]:
        shutil.copy(answers, work / "answers.yaml")
        codes = []
        for step in steps:
            if "run" in step:
                done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=work, env=env, capture_output=True,
                                      text=True, stdin=subprocess.DEVNULL, timeout=900)
                codes.append(done.returncode)
                assert "Traceback" not in done.stderr, done.stderr
        return codes

    assert main(["assignment", "solution", str(LECTURE), "-o", str(tmp_path / "right.yaml")]) == 0
    capsys.readouterr()
    assert run_steps(tmp_path / "right.yaml") == [0, 0]  # pip install, then grade: every question passes
    assert "| # | question | points | result |" in summary.read_text()
    assert (work / "grade.xml").read_text().startswith("<?xml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((tmp_path / "right.yaml").read_text().replace("y_hat: [[0.38]]", "y_hat: [[0.5]]"))
    assert wrong.read_text() != (tmp_path / "right.yaml").read_text()
    assert run_steps(wrong)[-1] == 1  # the job fails until every question passes
