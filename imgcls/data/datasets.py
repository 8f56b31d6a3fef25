"""Where the images are: Paddle's list format, a class-per-folder tree, or the built-in demo set.

List format (Paddle's ``train_list.txt`` / ``val_list.txt`` under the data dir)::

    train/n02483708/n02483708_2436.jpeg 369
    val/ILSVRC2012_val_00000001.jpeg 65

paths relative to the data dir, a space, an integer label in 0..K-1; blank lines and ``#`` comments are skipped.
List files are UTF-8 (a BOM is dropped); a byte that is not UTF-8 stays that byte of the file name (surrogate
escape, as ``os.fsdecode``), so a list can name any file the disk holds. A NUL byte (a UTF-16 file) is an error.
The class count is the largest label + 1: a label of ``MAX_INFERRED_CLASSES`` (100,000) or more is an error naming
its file and line unless ``--class_dim`` allows it (with ``--class_dim K``, any label outside 0..K-1 is), so a
mistyped label never sizes a model by itself.
Folder tree: ``train/<class>/*`` and ``val/<class>/*``, classes sorted by name, label = position. The images are the
files directly in a class folder whose extension is one of ``IMAGE_EXTENSIONS`` (every format the readers decode);
hidden files (``.DS_Store``) pass unnoticed, other files are left out and listed in ``DatasetSpec.left_out``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imgcls.limits import MAX_INFERRED_CLASSES

IMAGENET_LABELS_PATH = Path(__file__).with_name("imagenet_labels.txt")
DEFAULT_DATA_DIR = Path("data") / "ILSVRC2012"
LIST_FILES = {"train": "train_list.txt", "val": "val_list.txt"}
LABELS_FILE = "labels.txt"
# Every format the readers decode (image_header.KNOWN_FORMATS), by the extensions OpenCV gives them.
IMAGE_EXTENSIONS = {
    *(".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif"),
    *(".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".pam", ".pfm", ".ras", ".sr", ".jp2", ".j2k", ".hdr", ".pic", ".avif"),
}
IMAGENET_NUM_CLASSES = 1000
UTF8_BOM = b"\xef\xbb\xbf"


class DataError(ValueError):
    """A dataset that cannot be used as given; the message says what to fix."""


@dataclass(frozen=True)
class Sample:
    """One image: its path (data dir already joined) and its integer label."""

    path: str
    label: int


@dataclass
class DatasetSpec:
    """A resolved dataset: both splits, the class count and (when known) readable class names."""

    root: Path
    train: list[Sample]
    val: list[Sample]
    num_classes: int
    label_names: list[str] | None
    builtin: bool
    left_out: list[str] = field(default_factory=list)  # files in class folders that are not images by extension
    # Set instead of train / val when the data is tar shards (imgcls.data.shards.ShardSet).
    train_shards: object | None = None
    val_shards: object | None = None

    @property
    def num_train(self) -> int:
        """Train images (samples of the train shards, when the data is shards)."""
        return len(self.train_shards) if self.train_shards is not None else len(self.train)

    @property
    def num_val(self) -> int:
        """Val images (samples of the val shards, when the data is shards)."""
        return len(self.val_shards) if self.val_shards is not None else len(self.val)


def load_labels(path: str | os.PathLike) -> list[str]:
    """Readable class names, one per line in class-index order (blank lines are an error, not skipped); UTF-8."""
    lines = []
    for number, raw in enumerate(Path(path).read_bytes().removeprefix(UTF8_BOM).splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{number}: not UTF-8 text (byte {e.start + 1} of the line); save it as UTF-8"
            ) from None
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{path}:{number}: empty label name (one readable name per class, in index order)")
    return [line.strip() for line in lines]


def parse_list_line(line: str, where: str, class_dim: int | None = None) -> tuple[str, int] | None:
    """``relative/path label`` -> (path, label); None for a blank or comment line; ValueError otherwise, and for a
    label outside 0..class_dim-1 (given) or of ``MAX_INFERRED_CLASSES`` or more (not given)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if "\x00" in text:
        raise ValueError(f"{where}: NUL byte in the line (a UTF-16 file?); list files are UTF-8 text")
    # rsplit: the label is the last field, so a path may contain spaces.
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
        raise ValueError(f"{where}: expected '<relative/path> <label>', got {line.rstrip()!r}")
    path, label_text = parts
    try:
        label = int(label_text)
    except ValueError:
        raise ValueError(f"{where}: label {label_text!r} is not an integer in {line.rstrip()!r}") from None
    if label < 0:
        raise ValueError(f"{where}: negative label {label} in {line.rstrip()!r}; labels are 0..K-1")
    if class_dim is not None and label >= class_dim:
        raise ValueError(f"{where}: label {label} is outside 0..{class_dim - 1} (--class_dim {class_dim})")
    if class_dim is None and label >= MAX_INFERRED_CLASSES:
        raise ValueError(
            f"{where}: label {label} would make a model of {label + 1} classes, more than the {MAX_INFERRED_CLASSES} "
            "a list may give by itself (a mistyped label? pass --class_dim to allow more)"
        )
    return path, label


def parse_list_file(
    list_path: str | os.PathLike, root: str | os.PathLike | None = None, class_dim: int | None = None
) -> list[Sample]:
    """Read a list file; image paths are joined to ``root`` (default: the list file's folder); labels must be in
    0..class_dim-1 when it is given, else below ``MAX_INFERRED_CLASSES``."""
    list_path = Path(list_path)
    base = Path(root) if root is not None else list_path.parent
    samples = []
    # utf-8-sig drops a BOM; surrogateescape keeps a non-UTF-8 byte as that byte of the path (as os.fsdecode).
    with open(list_path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            parsed = parse_list_line(line, f"{list_path}:{number}", class_dim)
            if parsed is not None:
                samples.append(Sample(str(base / parsed[0]), parsed[1]))
    return samples


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def scan_class_folders(
    split_dir: Path, class_names: list[str] | None = None, left_out: list[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """``split_dir/<class>/*`` -> samples and the sorted class names (or the given ones, e.g. train's for val).
    Files that are neither images (by extension) nor hidden are appended to ``left_out``."""
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if class_names is None:
        class_names = found
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise DataError(f"{split_dir} has class folders the train split lacks: {', '.join(unknown[:5])}")
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for name in found:
        files = sorted(p for p in (split_dir / name).iterdir() if p.is_file() and not p.name.startswith("."))
        samples.extend(Sample(str(p), index[name]) for p in files if is_image_file(p))
        if left_out is not None:
            left_out.extend(str(p) for p in files if not is_image_file(p))
    return samples, class_names


def load_list_dataset(root: Path, class_dim: int | None = None) -> DatasetSpec:
    """Paddle's layout: ``train_list.txt`` and ``val_list.txt`` under ``root`` (labels checked against ``class_dim``
    as ``parse_list_line`` says)."""
    splits = {}
    for split, name in LIST_FILES.items():
        list_path = root / name
        if not list_path.is_file():
            raise DataError(
                f"{list_path} not found: {root} needs both {' and '.join(LIST_FILES.values())} "
                "(lines '<relative/path> <label>'), or train/<class>/ and val/<class>/ image folders"
            )
        try:
            splits[split] = parse_list_file(list_path, root, class_dim)
        except ValueError as e:
            raise DataError(str(e)) from None
    if not splits["train"]:
        raise DataError(f"{root / LIST_FILES['train']} lists no images")
    num_classes = max(s.label for s in splits["train"] + splits["val"]) + 1
    label_names = None
    if (root / LABELS_FILE).is_file():
        label_names = load_labels(root / LABELS_FILE)
        if len(label_names) != num_classes:
            raise DataError(
                f"{root / LABELS_FILE} names {len(label_names)} classes but the lists use labels 0..{num_classes - 1}"
            )
    elif num_classes == IMAGENET_NUM_CLASSES:
        # Paddle's ImageNet lists: the standard class order, so the ImageNet names apply.
        label_names = load_labels(IMAGENET_LABELS_PATH)
    return DatasetSpec(root, splits["train"], splits["val"], num_classes, label_names, builtin=False)


def load_folder_dataset(root: Path) -> DatasetSpec:
    """A class-per-folder tree: ``root/train/<class>/*`` and ``root/val/<class>/*``."""
    left_out: list[str] = []
    train, class_names = scan_class_folders(root / "train", left_out=left_out)
    if not train:
        raise DataError(f"{root / 'train'} has no images in class folders (train/<class>/*.jpg)")
    has_val = (root / "val").is_dir()
    val, _ = scan_class_folders(root / "val", class_names, left_out) if has_val else ([], class_names)
    if not val:
        raise DataError(f"{root / 'val'} is missing or empty: add val/<class>/*.jpg (the same class folder names)")
    return DatasetSpec(root, train, val, len(class_names), class_names, builtin=False, left_out=left_out)


def load_dataset(root: str | os.PathLike, class_dim: int | None = None) -> DatasetSpec:
    """Load a data dir in list format (preferred when a list file exists; labels checked against ``class_dim``) or
    as a folder tree."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data dir {root} does not exist: pass --data_dir pointing at a folder with train_list.txt and "
            "val_list.txt (or train/<class>/ and val/<class>/), or omit it to use the built-in demo dataset"
        )
    has_lists = any((root / name).exists() for name in LIST_FILES.values())
    if not has_lists and (root / "train").is_dir():
        return load_folder_dataset(root)
    return load_list_dataset(root, class_dim)


def check_expected(spec: DatasetSpec, class_dim: int | None, total_images: int | None) -> None:
    """Fail when the CLI's --class_dim / --total_images disagree with the data."""
    if class_dim is not None and class_dim != spec.num_classes:
        raise DataError(
            f"--class_dim {class_dim} disagrees with the data in {spec.root}: its labels give {spec.num_classes} "
            f"classes; pass --class_dim {spec.num_classes} (or leave it out)"
        )
    if total_images is not None and total_images != len(spec.train):
        raise DataError(
            f"--total_images {total_images} disagrees with the data in {spec.root}: its train split has "
            f"{len(spec.train)} images; pass --total_images {len(spec.train)} (or leave it out)"
        )


def resolve_dataset(
    data_dir: str | None,
    class_dim: int | None = None,
    total_images: int | None = None,
    log: Callable[[str], None] = print,
) -> DatasetSpec:
    """The dataset a CLI should use: ``data_dir``, else ./data/ILSVRC2012/ if present, else the built-in set.

    ``log`` says when the built-in set is used (the CLIs pass a rank-0-only print)."""
    if data_dir is None and DEFAULT_DATA_DIR.is_dir():
        data_dir = str(DEFAULT_DATA_DIR)
    if data_dir is None:
        from .builtin import BUILTIN_DESCRIPTION, builtin_dataset_dir

        root = builtin_dataset_dir()
        spec = load_list_dataset(root)
        spec.builtin = True
        log(
            f"imgcls: no --data_dir given and no ./{DEFAULT_DATA_DIR}/: using the built-in {BUILTIN_DESCRIPTION} "
            f"({spec.num_classes} classes, {len(spec.train)} train / {len(spec.val)} val images) at {root}"
        )
    else:
        spec = load_dataset(data_dir, class_dim)
    check_expected(spec, class_dim, total_images)
    return spec
