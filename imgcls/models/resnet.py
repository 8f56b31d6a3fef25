"""(family file: being written)."""
