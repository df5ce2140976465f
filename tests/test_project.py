"""The project's own promises: README commands, CI script, package layout."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_quickstart_has_exactly_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    assert "cnnspec compile specs/lecture_cnn.yaml" in commands[0] and "--verify" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert quickstart_commands()[1] in ci.splitlines()


def test_readme_explain_excerpt_is_what_explain_prints(capsys):
    from cnnspec.cli import main
    text = (ROOT / "README.md").read_text()
    excerpt = text.split("$ cnnspec explain specs/lecture_conv1.yaml\n", 1)[1].split("```", 1)[0]
    lines = [line for line in excerpt.splitlines() if line.strip() and line.strip() != "..."]
    assert main(["explain", str(ROOT / "specs" / "lecture_conv1.yaml")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert lines == printed[3:3 + len(lines)]


def test_docs_point_only_at_files_in_the_repository():
    """Every file a doc names with a relative link exists in this repository; nothing points at shared/."""
    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for doc in texts:
        text = doc.read_text()
        assert "shared/" not in text, f"{doc.name} points at shared/, which is not in the repository"
        for target in re.findall(r"\]\(([^)#:]+)\)", text):  # Markdown links
            assert (doc.parent / target).exists(), f"{doc.name}: link to missing {target}"
