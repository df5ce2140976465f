"""`cnnspec serve --demo` from an installed package: the demo assignment ships inside grader/service (a wheel holds
only the packages' .py files, so that is where it lives), and the demo runs with no specs/ folder anywhere."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from service_helpers import LECTURE, ROOT, SLIPS, free_port, stop_process, wait_until  # noqa: E402


def test_the_shipped_demo_assignment_is_the_lecture_assignment_byte_for_byte():
    from grader.service import demo_assignment
    from grader.service.store import assignment_files

    files, main = assignment_files(LECTURE)
    assert demo_assignment.MAIN == main
    assert {p: t.encode() for p, t in demo_assignment.FILES.items()} == files
    assert demo_assignment.ANSWERS == SLIPS.read_text()


def installed_copy(dest: Path) -> Path:
    """What `pip install` of the wheel puts in site-packages: the packages' .py files, nothing else."""
    site = dest / "site-packages"
    for package in ("cnnspec", "grader"):
        for src in (ROOT / package).rglob("*.py"):
            if "__pycache__" in src.parts:
                continue
            target = site / src.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return site


def test_serve_demo_works_from_an_installed_package_without_the_specs_folder(tmp_path):
    site = installed_copy(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNSPEC_")}
    env.update(PYTHONPATH=str(site), PYTHONUNBUFFERED="1", NO_COLOR="1")
    where = subprocess.run([sys.executable, "-c", "import grader.service.demo as d; print(d.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where.stderr
    assert not any(p.name == "specs" for p in site.rglob("*"))
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "cnnspec", "serve", "--demo", "--data-dir", str(work / "data"),
                              "--port", str(port)], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            if p.poll() is not None:
                raise AssertionError(f"serve --demo exited with {p.returncode}: {log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 90, "the demo server to answer /healthz")
        printed = log.read_text()
        try_line = re.search(r"try: CNNSPEC_TOKEN=(\S+) cnnspec submit (\S+) (\S+) --server (\S+)", printed)
        assert try_line, printed
        token, target, answers, server = try_line.groups()
        assert Path(answers).read_text() == SLIPS.read_text() and server == base
        r = subprocess.run([sys.executable, "-m", "cnnspec", "submit", target, answers, "--server", server], cwd=work,
                           env={**env, "CNNSPEC_TOKEN": token}, capture_output=True, text=True, timeout=120)
        # The notes' two slips: some questions fail (exit 1), and the feedback names the "+1" one.
        assert r.returncode == 1, r.stdout + r.stderr
        assert "FAIL   1. conv1_shape" in r.stdout and "expected [98, 98, 6], got [97, 97, 6]" in r.stdout
    finally:
        stop_process(p)
