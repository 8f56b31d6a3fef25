"""``python -m imgcls.data.shards --data_dir D --out O [--shard_size N]``: write D's train and val splits (list
files or class folders; the built-in demo set when --data_dir is left out) as WebDataset tar shards plus index.json
(see writer.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imgcls.cli.flags import ArgumentParser, fail, positive_int
from imgcls.data.datasets import DataError, resolve_dataset

from .writer import DEFAULT_SHARD_SIZE, write_dataset


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser("imgcls.data.shards", description=__doc__)
    p.add_argument("--data_dir", default=None, help="list files or class folders (default: the built-in demo set)")
    p.add_argument("--out", required=True, help="folder to write the shards and index.json into")
    p.add_argument(
        "--shard_size", type=positive_int, default=DEFAULT_SHARD_SIZE, help="samples per shard (the last is shorter)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train split's order across shards")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    try:
        dataset = resolve_dataset(args.data_dir, log=lambda m: print(m, file=sys.stderr))
    except DataError as e:
        fail(str(e))
    try:
        write_dataset(dataset, Path(args.out), args.shard_size, args.seed)
    except OSError as e:
        fail(f"cannot write shards to {args.out}: {e.strerror or e} (a shard or index only appears whole)")


if __name__ == "__main__":
    main()
