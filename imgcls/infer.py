"""Predict: ``python -m imgcls.infer --model X --pretrained_model P --image a.jpg [b.jpg photos/ ...] --topk 5``.

A folder given to ``--image`` stands for every image file in it and its subfolders, sorted. Without ``--image`` it
predicts the val list of ``--data_dir`` (or the built-in set). Per image: the top-k class ids, softmax scores and
readable names (``--label_path``; default ImageNet's 1000 names for 1000 classes, else the dataset's or the
checkpoint's names). ``--save_inference=True`` exports a deployable model (BN folded; TorchScript
and ONNX plus inference.json) and ``--inference_model DIR`` predicts with one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from imgcls.cli.data import resolve_data
from imgcls.cli.flags import ArgumentParser, add_bool, add_model_args, fail, pick_device, positive_int, run_command
from imgcls.cli.layering import build_run_config, model_cfg, read_config
from imgcls.config import ReadConfig
from imgcls.data import BatchReader, DatasetSpec, make_reader
from imgcls.data.read_report import printable
from imgcls.eval import load_for_inference, saved_run_of
from imgcls.export import InferenceInfo, export_inference, load_inference
from imgcls.metrics import ProgressBar

DEFAULT_EXPORT_DIR = "inference_model"


def get_args_parser() -> argparse.ArgumentParser:
    """Flags: the model/data/preprocessing ones every CLI shares, plus images, top-k, labels and export."""
    p = ArgumentParser("imgcls.infer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(p)
    p.add_argument(
        "--image",
        nargs="+",
        default=None,
        help="image files or folders to classify (a folder: every image file in it and its subfolders, sorted; "
        "default: the val list)",
    )
    p.add_argument("--topk", type=positive_int, default=1, help="classes shown per image")
    p.add_argument(
        "--label_path",
        default=None,
        help="readable class names, one per line in index order "
        "(default: ImageNet's for 1000 classes, else the data's or the checkpoint's)",
    )
    p.add_argument("--batch_size", type=positive_int, default=16, help="images per forward pass")
    add_bool(p, "save_inference", False, "export the model (TorchScript + ONNX, BN folded)")
    p.add_argument("--inference_dir", default=None, help=f"export folder (default {DEFAULT_EXPORT_DIR}/<model>)")
    p.add_argument("--inference_model", default=None, help="predict with an exported folder instead")
    p.add_argument(
        "--inference_backend",
        default="torchscript",
        choices=["torchscript", "onnx"],
        help="runtime for --inference_model",
    )
    return p


def classifier_width(path: str | None, model_name: str) -> int | None:
    """Class count of a weights file: the length of its last bias (the classifier's)."""
    from imgcls.checkpoint import read_weights

    if not path:
        return None
    try:
        biases = [v for k, v in read_weights(path, model_name).items() if k.endswith("bias") and v.dim() == 1]
    except (OSError, ValueError, NotImplementedError) as e:
        fail(f"cannot load --pretrained_model {path}: {e}")
    return int(biases[-1].shape[0]) if biases else None


def expand_images(paths: list[str]) -> list[str]:
    """``--image`` as files: each folder gives the image files (by extension) in it and below, sorted; a folder
    without any is a one-line error. Other paths pass as given (the reader reports a missing one)."""
    from imgcls.data.datasets import IMAGE_EXTENSIONS, is_image_file

    files = []
    for given in paths:
        folder = Path(given)
        if not folder.is_dir():
            files.append(given)
            continue
        found = sorted(str(p) for p in folder.rglob("*") if is_image_file(p))
        if not found:
            fail(f"--image {given}: a folder without image files ({' '.join(sorted(IMAGE_EXTENSIONS))}) in it or below")
        files += found
    return files


def read_label_names(args: argparse.Namespace, num_classes: int, fallback: list[str] | None) -> list[str] | None:
    """``--label_path`` (checked against the class count), ImageNet's names for 1000 classes, else ``fallback``."""
    from imgcls.data import IMAGENET_LABELS_PATH, DataError, load_labels

    path = args.label_path or (IMAGENET_LABELS_PATH if fallback is None and num_classes == 1000 else None)
    if path is None:
        return fallback
    try:
        names = load_labels(path)
    except (OSError, DataError) as e:
        fail(f"--label_path: {e}")
    if len(names) != num_classes:
        fail(f"--label_path {path} has {len(names)} names but the model has {num_classes} classes")
    return names


def build_predictor(
    args: argparse.Namespace,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[str] | None, InferenceInfo, DatasetSpec | None, torch.device]:
    """(model callable, label names or None, what the model is and needs, dataset or None, device) from the flags."""
    if args.inference_model:
        try:
            model, info = load_inference(args.inference_model, args.inference_backend)
        except (OSError, ValueError, RuntimeError) as e:
            fail(f"--inference_model: {e}")
        dataset = resolve_data(args.data_dir, args.class_dim) if not args.image else None
        names = read_label_names(args, info.num_classes, list(info.label_names) if info.label_names else None)
        return model, names, info, dataset, torch.device("cpu")
    model_cfg(args.model)  # a bad model name fails before any data work
    dataset = resolve_data(args.data_dir, args.class_dim) if (args.data_dir or not args.image) else None
    saved = saved_run_of(args.pretrained_model)
    if dataset is not None:
        num_classes = dataset.num_classes
    else:
        saved_classes = saved.num_classes if saved else None
        num_classes = args.class_dim or saved_classes or classifier_width(args.pretrained_model, args.model) or 1000
    config = build_run_config(args, train=False, num_classes=num_classes, dataset=dataset, saved=saved)
    device = pick_device(args.use_gpu)
    model = load_for_inference(config, device)
    fallback = (dataset.label_names if dataset else None) or (saved.label_names if saved else None)
    names = read_label_names(args, num_classes, fallback)
    info = InferenceInfo(config.model, num_classes, config.preprocess, tuple(names) if names else None)
    if args.save_inference:
        out = export_inference(model, args.inference_dir or Path(DEFAULT_EXPORT_DIR) / config.model, info)
        print(f"saved inference model (BN folded): {out}/model.ts, model.onnx, inference.json")
    return model, names, info, dataset, device


def image_reader(read: ReadConfig, info: InferenceInfo) -> BatchReader:
    """The ``--reader`` the loaders use, in eval mode (resize short side, center crop) with the model's sizes."""
    try:
        return make_reader(
            read.reader,
            info.preprocess,
            train=False,
            num_threads=read.threads,
            apply_exif=read.apply_exif,
            max_pixels=read.max_pixels,
            dct_scaling=read.dct_scaling,
        )
    except (RuntimeError, ValueError) as e:
        fail(str(e))


def load_batch(paths: list[str], info: InferenceInfo, reader: BatchReader) -> tuple[torch.Tensor, list[str]]:
    """Read and normalize (the reader's checks: missing, corrupt, truncated); unreadable files are reported and
    left out."""
    size = info.preprocess.input_size
    images = np.empty((len(paths), 3, size, size), dtype=np.float32)
    scale, shift = info.preprocess.scale_shift()
    warned: list[tuple[str, str]] = []
    # The eval transform draws nothing: the seeds are unused.
    errors = reader.read_batch_normalized(paths, [0] * len(paths), images, scale.numpy(), shift.numpy(), warned)
    for path, warning in warned:
        print(f"warning {printable(path)}: decoded in spite of damage ({printable(warning)})")
    keep = [i for i, err in enumerate(errors) if err is None]
    for path, err in zip(paths, errors):
        if err is not None:
            print(f"skipped {printable(path)}: {printable(err)}")
    return torch.from_numpy(images[keep]), [paths[i] for i in keep]


@torch.no_grad()
def main(args: argparse.Namespace) -> list[tuple[str, list[tuple[int, float, str]]]]:
    """Predict; returns [(path, [(class id, score, name), ...])] and prints one line per image."""
    model, names, info, dataset, device = build_predictor(args)
    paths = expand_images(args.image) if args.image else [s.path for s in dataset.val]
    reader = image_reader(read_config(args), info)
    results, bar = [], ProgressBar(-(-len(paths) // args.batch_size), "infer")
    for step, start in enumerate(range(0, len(paths), args.batch_size), start=1):
        images, kept = load_batch(paths[start : start + args.batch_size], info, reader)
        if bar.due(step):
            bar.update(step, start + len(images))
        if not kept:
            continue
        probs = torch.softmax(model(images.to(device)).float(), dim=1).cpu()
        scores, ids = probs.topk(min(args.topk, probs.shape[1]), dim=1)
        for path, row_ids, row_scores in zip(kept, ids.tolist(), scores.tolist()):
            top = [(i, s, names[i] if names else str(i)) for i, s in zip(row_ids, row_scores)]
            results.append((path, top))
            bar.write(f"{printable(path)}: " + ", ".join(f"{i} {n} ({s:.4f})" for i, s, n in top))
    bar.close()
    reader.close()
    if not results:
        fail(f"none of the {len(paths)} images could be read (see the 'skipped' lines); nothing was predicted")
    return results


if __name__ == "__main__":
    run_command(main, get_args_parser(), "")
