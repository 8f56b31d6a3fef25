"""The generated tables of docs/: every command's flags (from its argument parser) and the model zoo (from the
registry). ``python -m imgcls.cli.doc_tables --write`` refreshes them in place; tests/test_docs.py checks that the
files hold what these functions generate.

A table sits between ``<!-- generated:NAME:start -->`` and ``<!-- generated:NAME:end -->`` in its markdown file.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def marker(name: str, end: bool = False) -> str:
    return f"<!-- generated:{name}:{'end' if end else 'start'} -->"


def _default_text(action: argparse.Action) -> str:
    value = action.default
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def flags_table(parser: argparse.ArgumentParser) -> str:
    """Markdown: flag (with its aliases and choices), default ('-': resolved at run time, see the meaning), meaning."""
    rows = ["| flag | default | meaning |", "|-|-|-|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(f"`{name}`" for name in action.option_strings)
        meaning = action.help or ""
        if action.choices and not all(str(c) in meaning for c in action.choices):
            meaning += f" ({', '.join(map(str, action.choices))})"
        rows.append(f"| {names} | {_default_text(action)} | {_markdown_text(meaning)} |")
    return "\n".join(rows)


def _markdown_text(text: str) -> str:
    """Plain help text made safe for a markdown table cell (no HTML tags, emphasis or column breaks)."""
    for char, escaped in (("|", "\\|"), ("*", "\\*"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text


def _parser(module: str) -> Callable[[], str]:
    def table() -> str:
        import importlib

        return flags_table(importlib.import_module(module).get_args_parser())

    return table


def _models() -> str:
    from imgcls.models.table import model_table

    return model_table()


# file (relative to the repository) -> {table name: its generator}
TABLES: dict[str, dict[str, Callable[[], str]]] = {
    "docs/training.md": {
        "train-flags": _parser("imgcls.train"),
        "eval-flags": _parser("imgcls.eval"),
        "infer-flags": _parser("imgcls.infer"),
    },
    "docs/models.md": {"model-table": _models},
}


def read_block(text: str, name: str) -> str:
    """The text between the markers of ``name``; ValueError when they are missing."""
    pattern = re.compile(re.escape(marker(name)) + r"\n(.*?)\n?" + re.escape(marker(name, end=True)), re.S)
    found = pattern.search(text)
    if found is None:
        raise ValueError(f"no {marker(name)} ... {marker(name, end=True)} block")
    return found.group(1).strip()


def replace_block(text: str, name: str, table: str) -> str:
    """``text`` with the block of ``name`` replaced by ``table``."""
    read_block(text, name)
    pattern = re.compile(re.escape(marker(name)) + ".*?" + re.escape(marker(name, end=True)), re.S)
    return pattern.sub(lambda _: f"{marker(name)}\n{table}\n{marker(name, end=True)}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the files in place (default: print them)")
    args = parser.parse_args()
    for relative, tables in TABLES.items():
        path = REPO / relative
        text = path.read_text()
        for name, generate in tables.items():
            table = generate()
            if not args.write:
                print(f"{relative} [{name}]\n{table}\n")
            text = replace_block(text, name, table)
        if args.write:
            path.write_text(text)
            print(f"updated {relative}")


if __name__ == "__main__":
    main()
