"""The README and docs/: the README stays a front door, the generated tables are current, links resolve."""

from __future__ import annotations

import re

from imgcls.cli.doc_tables import TABLES, read_block

from .conftest import REPO

README_MAX_LINES = 150


def test_generated_tables_are_current() -> None:
    for relative, tables in TABLES.items():
        text = (REPO / relative).read_text()
        for name, generate in tables.items():
            assert read_block(text, name) == generate(), (
                f"{relative} [{name}]: run python -m imgcls.cli.doc_tables --write"
            )


def test_readme_is_short_and_names_the_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for command in (
        "bash .ci/setup && .venv/bin/python -m imgcls.train --model ShuffleNetV2_swish --fused",
        "bash .ci/setup && .venv/bin/python -m pytest",
        "python -m imgcls.train --model ShuffleNetV2_swish --fused",
        "pytest bench/ --benchmark-only",
        "python setup.py build_ext",
    ):
        assert command in text, command
    assert "bash .ci/setup && .venv/bin/python -m pytest" in (REPO / ".ci" / "run").read_text()


def test_relative_links_resolve() -> None:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
