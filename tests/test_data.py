"""The data layer: list/folder datasets and their errors, the built-in set, augmentation geometry, reader, loader."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from imgcls.data import builtin, datasets
from imgcls.data.datasets import DataError, Sample, load_dataset, load_labels, parse_list_file, resolve_dataset
from imgcls.data.loader import Loader, epoch_order
from imgcls.data.preprocess import PreprocessSpec, normalize
from imgcls.data.readers import OpenCVReader, make_reader
from imgcls.data.transforms import (
    AugConfig,
    TrainParams,
    color_jitter,
    random_crop_box,
    rotate,
    sample_train_params,
    train_transform,
    val_transform,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE, SHORT = 32, 37


def write_jpeg(path: Path, rng: np.random.Generator, height: int = 40, width: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_list_dataset(root: Path, train: list[int], val: list[int], rng: np.random.Generator | None = None) -> None:
    """A list-format data dir with one random JPEG per label."""
    rng = rng or np.random.default_rng(0)
    for split, labels in (("train", train), ("val", val)):
        lines = []
        for i, label in enumerate(labels):
            write_jpeg(root / split / f"img_{i}.jpg", rng)
            lines.append(f"{split}/img_{i}.jpg {label}\n")
        (root / f"{split}_list.txt").write_text("".join(lines))


@pytest.fixture(scope="module")
def small_builtin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in dataset (60 train / 20 val) in a private cache folder."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_CACHE", str(cache))
        return builtin.builtin_dataset_dir(num_train=60, num_val=20)


def spec_for(aug: AugConfig = AugConfig(), size: int = SIZE, resize_short: int = SHORT) -> PreprocessSpec:
    return PreprocessSpec(size, resize_short, MEAN, STD, aug)


def loader_for(samples: list[Sample], aug: AugConfig = AugConfig(), **kw):
    args = dict(train=True, batch_size=8, preprocess=spec_for(aug))
    args.update(random_seed=3, num_workers=2, prefetch=2, reader="opencv")
    args.update(kw)
    return Loader(samples, **args)


# ---------------------------------------------------------------- datasets


def test_list_format_parsing(tmp_path: Path) -> None:
    make_list_dataset(tmp_path, [0, 2, 1], [1, 0])
    text = (tmp_path / "train_list.txt").read_text()
    (tmp_path / "train_list.txt").write_text("# a comment\n\n" + text + "   \n")
    spec = load_dataset(tmp_path)
    assert spec.num_classes == 3 and not spec.builtin and spec.label_names is None
    assert [s.label for s in spec.train] == [0, 2, 1]
    assert spec.train[0].path == str(tmp_path / "train" / "img_0.jpg")
    assert [s.label for s in spec.val] == [1, 0]
    (tmp_path / "extra.txt").write_text("dir with space/a b.jpg\t3\n")  # the label is the last field
    assert parse_list_file(tmp_path / "extra.txt", "/data") == [Sample("/data/dir with space/a b.jpg", 3)]


def test_malformed_line_names_file_line_and_text(tmp_path: Path) -> None:
    make_list_dataset(tmp_path, [0, 1], [0])
    with open(tmp_path / "val_list.txt", "a") as f:
        f.write("val/broken.jpg seven\n")
    with pytest.raises(DataError, match=r"val_list\.txt:2: .*seven"):
        load_dataset(tmp_path)
    (tmp_path / "val_list.txt").write_text("just_a_path.jpg\n")
    with pytest.raises(DataError, match=r"val_list\.txt:1: expected '<relative/path> <label>', got 'just_a_path.jpg'"):
        load_dataset(tmp_path)
    (tmp_path / "val_list.txt").write_text("a.jpg -1\n")
    with pytest.raises(DataError, match="negative label"):
        load_dataset(tmp_path)


def test_missing_dir_and_missing_list(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        resolve_dataset(str(tmp_path / "nowhere"))
    make_list_dataset(tmp_path, [0, 1], [0])
    (tmp_path / "val_list.txt").unlink()
    with pytest.raises(DataError, match=r"val_list\.txt not found"):
        resolve_dataset(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"train_list\.txt not found"):
        resolve_dataset(str(empty))


def test_class_dim_and_total_images_must_match(tmp_path: Path) -> None:
    make_list_dataset(tmp_path, [0, 1, 4, 2], [3])
    spec = resolve_dataset(str(tmp_path), class_dim=5, total_images=4)
    assert spec.num_classes == 5 and len(spec.train) == 4
    with pytest.raises(DataError, match=r"--class_dim 1000 .* 5 classes"):
        resolve_dataset(str(tmp_path), class_dim=1000)
    with pytest.raises(DataError, match=r"--total_images 1281167 .* 4 images"):
        resolve_dataset(str(tmp_path), total_images=1281167)


def test_labels_file(tmp_path: Path) -> None:
    make_list_dataset(tmp_path, [0, 1], [1])
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    assert load_dataset(tmp_path).label_names == ["cat", "dog"]
    (tmp_path / "labels.txt").write_text("cat\n")
    with pytest.raises(DataError, match="names 1 classes"):
        load_dataset(tmp_path)


def test_folder_tree(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for split, names in (("train", ["zebra", "ant", "ant", "moth"]), ("val", ["moth", "zebra"])):
        for i, name in enumerate(names):
            write_jpeg(tmp_path / split / name / f"{i}.jpg", rng)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    spec = load_dataset(tmp_path)
    assert spec.label_names == ["ant", "moth", "zebra"] and spec.num_classes == 3
    assert sorted(s.label for s in spec.train) == [0, 0, 1, 2]
    assert {(Path(s.path).parent.name, s.label) for s in spec.val} == {("moth", 1), ("zebra", 2)}
    write_jpeg(tmp_path / "val" / "bee" / "0.jpg", rng)
    with pytest.raises(DataError, match="bee"):
        load_dataset(tmp_path)


def test_imagenet_labels() -> None:
    labels = load_labels(datasets.IMAGENET_LABELS_PATH)
    assert len(labels) == 1000 and labels[134] == labels[517] == "crane"  # ImageNet's one repeated name: bird, machine
    assert len(set(labels)) == 999
    assert labels[0].startswith("tench") and labels[1].startswith("goldfish")
    assert labels[2].startswith("great white shark") and labels[999].startswith("toilet tissue")


def test_imagenet_sized_lists_get_imagenet_names(tmp_path: Path) -> None:
    make_list_dataset(tmp_path, [0, 999], [5])
    spec = load_dataset(tmp_path)
    assert spec.num_classes == 1000 and spec.label_names[999].startswith("toilet tissue")


# ---------------------------------------------------------------- built-in dataset


def test_builtin_materializes_once(small_builtin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_dataset(small_builtin)
    assert len(spec.train) == 60 and len(spec.val) == 20 and spec.num_classes == 10
    assert spec.label_names == list(builtin.BUILTIN_CLASSES)
    assert np.bincount([s.label for s in spec.train]).tolist() == [6] * 10
    img = cv2.imread(spec.val[0].path)
    assert img is not None and builtin.BUILTIN_MIN_SIDE <= min(img.shape[:2]) <= builtin.BUILTIN_MAX_SIDE
    # held out: no val image equals a train image
    train_pixels = {cv2.imread(s.path).tobytes() for s in spec.train}
    assert not any(cv2.imread(s.path).tobytes() in train_pixels for s in spec.val)
    # a second call finds the folder and generates nothing
    monkeypatch.setenv("IMGCLS_CACHE", str(small_builtin.parent))
    monkeypatch.setattr(builtin, "generate", lambda *a: pytest.fail("regenerated a cached dataset"))
    assert builtin.builtin_dataset_dir(num_train=60, num_val=20) == small_builtin


def test_builtin_generation_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path))

    def fail_midway(root: Path, num_train: int, num_val: int) -> None:
        builtin.write_split(root, "train", 3)
        raise OSError("disk full")

    monkeypatch.setattr(builtin, "generate", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        builtin.builtin_dataset_dir(num_train=3, num_val=2)
    assert list(tmp_path.iterdir()) == []  # neither a half dataset nor a leftover temp folder


def test_builtin_rendering_is_deterministic() -> None:
    a = builtin.render_image(3, np.random.default_rng([1, 0, 7]))
    b = builtin.render_image(3, np.random.default_rng([1, 0, 7]))
    c = builtin.render_image(3, np.random.default_rng([1, 0, 8]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_resolve_default_uses_builtin_then_imagenet_dir(
    small_builtin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtin, "builtin_dataset_dir", lambda: small_builtin)
    spec = resolve_dataset(None)
    assert spec.builtin and spec.root == small_builtin and len(spec.train) == 60
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and str(small_builtin) in out and "built-in" in out
    with pytest.raises(DataError, match="--class_dim 1000"):
        resolve_dataset(None, class_dim=1000)
    make_list_dataset(tmp_path / "data" / "ILSVRC2012", [0, 1], [1])
    spec = resolve_dataset(None)
    assert not spec.builtin and len(spec.train) == 2


# ---------------------------------------------------------------- augmentation geometry


@pytest.mark.parametrize("height,width", [(375, 500), (333, 101), (1, 57), (64, 1), (1, 1), (7, 9)])
def test_crop_box_inside_and_within_bounds(height: int, width: int) -> None:
    cfg = AugConfig(lower_scale=0.08, lower_ratio=3 / 4, upper_ratio=4 / 3)
    boxes = set()
    for seed in range(300):
        x, y, w, h = random_crop_box(height, width, seed, cfg)
        assert random_crop_box(height, width, seed, cfg) == (x, y, w, h)
        assert 0 <= x and 0 <= y and 1 <= w and 1 <= h and x + w <= width and y + h <= height
        boxes.add((x, y, w, h))
        if min(height, width) >= 100:  # big enough that pixel rounding is a small error
            assert cfg.lower_ratio * 0.97 <= w / h <= cfg.upper_ratio * 1.03
            assert (w + 1) * (h + 1) >= cfg.lower_scale * height * width
    if min(height, width) >= 7:
        assert len(boxes) > 100  # different seeds give different boxes
    elif height * width > 1:
        assert len(boxes) > 10  # a sliver: the aspect bound forces tiny boxes, but their offsets still vary


def test_train_transform_flip_and_determinism() -> None:
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    cfg, no_flip = AugConfig(), AugConfig(flip=False)
    flips = []
    for seed in range(20):
        out = train_transform(img, seed, 16, cfg)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
        assert np.array_equal(out, train_transform(img, seed, 16, cfg))
        flipped = sample_train_params(37, 53, seed, cfg).flip
        flips.append(flipped)
        expected = train_transform(img, seed, 16, no_flip)
        assert np.array_equal(out, expected[:, ::-1] if flipped else expected)
    assert 0 < sum(flips) < 20


def jitter(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0) -> TrainParams:
    return TrainParams(0, 0, 1, 1, False, 0.0, brightness, contrast, saturation, hue)


def test_rotation_by_90_degrees_is_a_counter_clockwise_quarter_turn() -> None:
    img = np.arange(7 * 7 * 3, dtype=np.uint8).reshape(7, 7, 3)  # every pixel distinct: a wrong map shows
    assert np.array_equal(rotate(img, 90.0), np.rot90(img, 1))
    assert np.array_equal(rotate(img, -90.0), np.rot90(img, -1))
    assert np.array_equal(rotate(img, 180.0), img[::-1, ::-1])


def test_brightness_and_contrast_against_hand_values() -> None:
    flat = np.full((4, 4, 3), 100, np.uint8)
    assert np.all(color_jitter(flat, jitter(brightness=1.5)) == 150)
    assert np.all(color_jitter(flat, jitter(brightness=3.0)) == 255)  # clipped
    assert np.all(color_jitter(flat, jitter(contrast=0.3)) == 100)  # a flat image is its own mean
    two = np.zeros((2, 2, 3), np.uint8)
    two[0], two[1] = 50, 150  # gray rows, mean gray 100
    out = color_jitter(two, jitter(contrast=0.5))
    assert np.all(out[0] == 75) and np.all(out[1] == 125)  # halfway to the mean


def test_saturation_and_hue_of_pure_colors() -> None:
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    luma = 0.299 * 255  # 76.245
    assert color_jitter(red, jitter(saturation=0.0)).tolist() == [[[76, 76, 76]]]
    assert color_jitter(red, jitter(saturation=1.2)).tolist() == [[[255, 0, 0]]]  # 255 + 0.2 * (255 - 76.2) clips
    # Half a turn in the YIQ chroma plane negates I and Q: x' = 2 Y - x per channel (gray is (Y, Y, Y))
    want = np.clip(np.rint(2 * luma - red[0, 0].astype(float)), 0, 255)
    assert color_jitter(red, jitter(hue=0.5))[0, 0].tolist() == want.tolist() == [0, 152, 152]
    gray = np.full((1, 1, 3), 90, np.uint8)
    assert color_jitter(gray, jitter(hue=0.3)).tolist() == gray.tolist()  # no chroma, nothing to turn
    rng = np.random.default_rng(1)
    img = rng.integers(60, 200, (8, 8, 3), dtype=np.uint8)
    assert np.abs(color_jitter(img, jitter(hue=1.0)).astype(int) - img).max() <= 1  # a full turn: identity


def test_transforms_on_one_pixel_wide_images() -> None:
    for shape in [(1, 50, 3), (50, 1, 3), (1, 1, 3)]:
        img = np.full(shape, 200, np.uint8)
        assert train_transform(img, 5, 8, AugConfig(rotate=10)).shape == (8, 8, 3)
        assert val_transform(img, 8, 9).shape == (8, 8, 3)


# ---------------------------------------------------------------- reader


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(2)
    good = tmp_path / "good.jpg"
    write_jpeg(good, rng, 45, 61)
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a JPEG at all" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    names = ["good", "truncated", "corrupt", "empty", "missing"]
    return {name: str(tmp_path / f"{name}.jpg") for name in names}


@pytest.mark.parametrize("train", [True, False])
def test_reader_matches_transforms_and_reports_bad_files(bad_files: dict[str, str], train: bool) -> None:
    paths = list(bad_files.values()) + [bad_files["good"]]
    seeds = [11, 12, 13, 14, 15, 16]
    aug = AugConfig(rotate=5, brightness=0.2)
    reader = make_reader("opencv", spec_for(aug), train=train, num_threads=3)
    out = np.zeros((len(paths), SIZE, SIZE, 3), np.uint8)
    errors = reader.read_batch(paths, seeds, out)
    assert errors[0] is None and errors[5] is None
    assert all(isinstance(e, str) and e for e in errors[1:5])
    assert "truncated" in errors[1] and "FileNotFoundError" in errors[4]
    img = cv2.cvtColor(cv2.imread(bad_files["good"]), cv2.COLOR_BGR2RGB)
    for i, seed in ((0, 11), (5, 16)):
        expected = train_transform(img, seed, SIZE, aug) if train else val_transform(img, SIZE, SHORT)
        assert np.array_equal(out[i], expected)
    single = OpenCVReader(train, SIZE, SHORT, aug, num_threads=1)
    out1 = np.zeros_like(out)
    assert single.read_batch(paths, seeds, out1) == errors and np.array_equal(out1[[0, 5]], out[[0, 5]])


def test_make_reader_kinds() -> None:
    with pytest.raises(ValueError, match="unknown reader"):
        make_reader("magic", spec_for(size=8, resize_short=9), train=True)
    assert isinstance(make_reader("opencv", spec_for(size=8, resize_short=9), train=True), OpenCVReader)


# ---------------------------------------------------------------- loader


def collect(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_batches_independent_of_workers(small_builtin: Path) -> None:
    spec = load_dataset(small_builtin)
    runs = []
    for workers in (0, 1, 3):
        loader = loader_for(spec.train, num_workers=workers, aug=AugConfig(rotate=10))
        loader.set_epoch(2)
        runs.append(collect(loader))
        assert len(runs[-1]) == len(loader) == 60 // 8
        loader.close()
    for other in runs[1:]:
        for (xa, ya), (xb, yb) in zip(runs[0], other):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    x, y = runs[0][0]
    assert x.shape == (8, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_loader_epochs_and_normalization(small_builtin: Path) -> None:
    spec = load_dataset(small_builtin)
    train = loader_for(spec.train)
    first = collect(train)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, collect(train)))  # same epoch -> same batches
    train.set_epoch(1)
    assert not torch.equal(first[0][1], collect(train)[0][1])  # another epoch -> another order
    val = loader_for(spec.val, train=False, batch_size=6)
    batches = collect(val)
    assert len(val) == len(batches) == 4 and [len(y) for _, y in batches] == [6, 6, 6, 2]  # val keeps the tail
    assert torch.cat([y for _, y in batches]).tolist() == [s.label for s in spec.val]  # val in list order
    reader = OpenCVReader(False, SIZE, SHORT, AugConfig())
    raw = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    reader.read_batch([spec.val[0].path], [0], raw)
    pixels = batches[0][0][0] * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    assert torch.allclose(pixels * 255, torch.from_numpy(raw[0]).permute(2, 0, 1).float(), atol=1e-3)


@pytest.mark.parametrize("mean,std", [(MEAN, STD), ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
def test_normalization_is_paddles(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Every pixel value of every channel normalizes as Paddle's reader does, (pixel / 255 - mean) / std, written
    out here in float64 (the library folds it into one scale and shift per channel)."""
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(1, 16, 16, 3).contiguous()
    got = normalize(pixels, *PreprocessSpec(SIZE, SHORT, mean, std).scale_shift())
    for c in range(3):
        want = (torch.arange(256, dtype=torch.float64).view(16, 16) / 255.0 - mean[c]) / std[c]
        torch.testing.assert_close(got[0, c].double(), want, rtol=0, atol=2e-6)


def test_rank_sharding_covers_epoch_without_overlap(small_builtin: Path) -> None:
    for n, world in ((60, 4), (61, 3), (7, 2)):
        shards = [epoch_order(n, 5, 1, True, rank, world) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1
        joined = np.concatenate(shards)
        assert len(set(joined.tolist())) == len(joined) == n - n % world
    spec = load_dataset(small_builtin)
    seen = []
    for rank in range(3):
        loader = loader_for(spec.train, batch_size=4, rank=rank, world_size=3)
        assert len(loader) == 5
        seen += [y for _, y in collect(loader)]
    labels = torch.cat(seen)
    assert len(labels) == 60 and np.bincount(labels.numpy()).tolist() == [6] * 10


def test_loader_skips_bad_images(bad_files: dict[str, str]) -> None:
    samples = [Sample(path, label) for label, path in enumerate(bad_files.values())]
    samples.append(Sample(bad_files["good"], 7))
    loader = loader_for(samples, batch_size=6, shuffle=False)
    (x, y), *rest = collect(loader)
    assert not rest and y.tolist() == [0, 7] and x.shape[0] == 2
    assert sorted(Path(p).stem for p, _ in loader.skipped) == ["corrupt", "empty", "missing", "truncated"]
    assert all(reason for _, reason in loader.skipped)
    collect(loader)
    assert len(loader.skipped) == 4  # the last epoch's, not accumulated


def test_all_bad_batch_gets_a_stand_in_with_several_ranks(bad_files: dict[str, str]) -> None:
    # A rank with nothing to train on would leave the others waiting in DDP's all-reduce forever.
    bad = [Sample(path, 0) for name, path in bad_files.items() if name != "good"]
    samples = bad + [Sample(bad_files["good"], 7)]
    single = loader_for(samples, batch_size=len(bad), shuffle=False, drop_last=True)
    assert collect(single) == []
    ranked = loader_for(samples, batch_size=len(bad), shuffle=False, drop_last=True, rank=0, world_size=2)
    indices = np.arange(len(bad))  # the bad files only, as rank 0 might be handed them
    images, labels = ranked.load_batch(indices, epoch=0)
    assert labels.tolist() == [7] and images.shape[0] == 1
    only_bad = loader_for(bad, batch_size=2, shuffle=False, rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="no image of the dataset"):
        only_bad.load_batch(np.arange(2), epoch=0)


def live_loader_threads() -> int:
    return sum(t.name == "imgcls-loader" and t.is_alive() for t in threading.enumerate())


def test_loader_early_stop_and_errors(small_builtin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_dataset(small_builtin)
    loader = loader_for(spec.train, batch_size=4, prefetch=1)
    for _ in loader:
        break
    gc.collect()
    deadline = time.time() + 5
    while live_loader_threads() and time.time() < deadline:
        time.sleep(0.05)
    assert live_loader_threads() == 0
    assert len(collect(loader)) == len(loader)  # a fresh pass still works

    def broken(*args, **kwargs):
        raise RuntimeError("reader exploded")

    monkeypatch.setattr(loader.reader, "read_batch_normalized", broken)
    with pytest.raises(RuntimeError, match="reader exploded"):
        collect(loader)
    loader.close()
    assert live_loader_threads() == 0


def test_train_steps_per_epoch_are_floor_of_images_over_batch() -> None:
    """An epoch's steps: the train loader drops the last partial batch (floor), val keeps it (ceil). (The LR
    schedule counts Paddle's ceil(images / batch) per epoch: imgcls.optim.schedule_steps_per_epoch.)"""
    samples = [Sample(f"img{i}.jpg", 0) for i in range(70)]
    common = dict(batch_size=16, preprocess=spec_for(size=8, resize_short=9), random_seed=0)
    train = Loader(samples, train=True, num_workers=0, prefetch=2, reader="opencv", **common)
    val = Loader(samples, train=False, num_workers=0, prefetch=2, reader="opencv", **common)
    assert (len(train), len(val)) == (70 // 16, -(-70 // 16))
