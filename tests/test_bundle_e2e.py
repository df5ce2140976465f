"""The Gradescope bundle end to end: unpack it into a fake /autograder tree, run its setup.sh in a fresh
virtual environment (which installs cnnspec from the bundle alone), then its run_autograder on a submission.

The scripts say /autograder; the test points them at a temporary tree of the same shape. pip needs the
package registry (or its cache) for cnnspec's dependencies, as on Gradescope.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from cnnspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
BN = ROOT / "specs" / "assignments" / "bn_pool_ce.yaml"


def test_bundle_installs_and_grades_in_a_fresh_virtualenv(tmp_path, capsys):
    zip_path = tmp_path / "autograder.zip"
    assert main(["assignment", "bundle", str(BN), "-o", str(zip_path)]) == 0
    capsys.readouterr()
    ag = tmp_path / "autograder"
    for folder in ("source", "submission", "results"):
        (ag / folder).mkdir(parents=True)
    zipfile.ZipFile(zip_path).extractall(ag / "source")
    for script in ("setup.sh", "run_autograder"):
        p = ag / "source" / script
        p.write_text(p.read_text().replace("/autograder", str(ag)))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    setup = subprocess.run(["bash", str(ag / "source" / "setup.sh")], env=env, capture_output=True, text=True,
                           cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=900)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import cnnspec, grader; print(cnnspec.__file__)"],
                               env=env, capture_output=True, text=True, cwd=tmp_path)
    assert str(venv) in installed.stdout  # the bundle's own copy, not this checkout
    # Gradescope's metadata names the submitter; their variant is graded whatever the file claims.
    (ag / "submission_metadata.json").write_text(json.dumps({"users": [{"sid": "s9", "email": "s9@x"}]}))
    assert main(["assignment", "solution", str(BN), "--student", "s9", "-o",
                 str(ag / "submission" / "answers.yaml")]) == 0
    graded = subprocess.run(["bash", str(ag / "source" / "run_autograder")], env=env, capture_output=True,
                            text=True, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=300)
    assert graded.returncode == 0, graded.stderr
    results = json.loads((ag / "results" / "results.json").read_text())
    visible = sum(t["max_score"] for t in results["tests"] if t["visibility"] == "visible")
    assert results["score"] == visible and all(t["status"] == "passed" for t in results["tests"]), results
