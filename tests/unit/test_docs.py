"""The documents the code cites are in the repository: every `docs/contract.md §N` names a section
of docs/contract.md, and nothing cites the design notes outside the repository."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO_ROOT

CITATION = re.compile(r"docs/contract\.md §(\d+)((?:, §\d+)*)")
OUTSIDE = re.compile(r"\bSPEC(\.md| section)\b")


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    files = {}
    for name in names.stdout.split():
        if name.endswith((".py", ".sql", ".md", ".tf", ".yml", ".toml", ".sh")):
            files[name] = (REPO_ROOT / name).read_text(errors="replace")
    return files


def test_every_contract_citation_names_a_section_that_exists():
    sections = set(
        re.findall(r"^## (\d+)\. ", (REPO_ROOT / "docs" / "contract.md").read_text(), re.M)
    )
    cited = {}
    for name, text in tracked_text_files().items():
        for first, more in CITATION.findall(text):
            for number in [first, *re.findall(r"\d+", more)]:
                cited.setdefault(number, name)
    assert len(cited) >= 5, "too few citations found: the pattern is outdated"
    missing = {number: name for number, name in cited.items() if number not in sections}
    assert not missing, f"docs/contract.md has no section {missing}"


def test_nothing_cites_the_design_notes_outside_the_repository():
    for name, text in tracked_text_files().items():
        assert not OUTSIDE.search(text), f"{name} cites SPEC; cite docs/contract.md §N instead"
