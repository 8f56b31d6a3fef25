"""The README's generated parts are current."""

from __future__ import annotations

from imgcls.models.table import END, START, model_table

from .conftest import REPO


def test_readme_model_table_is_current() -> None:
    text = (REPO / "README.md").read_text()
    block = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == model_table(), "run: python -m imgcls.models.table --write README.md"


def test_readme_names_the_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert "bash .ci/setup && .venv/bin/python -m pytest" in text
    assert "python -m imgcls.train --model ShuffleNetV2_swish --fused" in text
    assert "bash .ci/setup && .venv/bin/python -m pytest" in (REPO / ".ci" / "run").read_text()
