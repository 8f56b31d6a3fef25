"""Predict: ``python -m imgcls.infer --model X --pretrained_model P --image a.jpg [b.jpg ...] --topk 5``.

Without ``--image`` it predicts the val list of ``--data_dir`` (or the built-in set). Per image: the top-k class
ids, softmax scores and readable names (``--label_path``; default ImageNet's 1000 names for 1000 classes, else the
dataset's or the checkpoint's names). ``--save_inference=True`` exports a deployable model (BN folded; TorchScript
and ONNX plus inference.json) and ``--inference_model DIR`` predicts with one.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from imgcls.cli_args import add_bool, add_model_args, fail, positive_int
from imgcls.cli_setup import prepare, resolve_data, saved_run_args
from imgcls.data import DatasetSpec, make_reader
from imgcls.data.read_report import printable
from imgcls.data.reader import BatchReader
from imgcls.data.transforms import AugConfig
from imgcls.eval import load_for_inference
from imgcls.export import Preprocess, export_inference, load_inference

DEFAULT_EXPORT_DIR = "inference_model"


def get_args_parser() -> argparse.ArgumentParser:
    """Flags: the model/data/preprocessing ones every CLI shares, plus images, top-k, labels and export."""
    p = argparse.ArgumentParser("imgcls.infer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(p)
    p.add_argument("--image", nargs="+", default=None, help="image files to classify (default: the val list)")
    p.add_argument("--topk", type=positive_int, default=1, help="classes shown per image")
    p.add_argument("--label_path", default=None, help="readable class names, one per line in index order")
    p.add_argument("--batch_size", type=positive_int, default=16)
    add_bool(p, "save_inference", False, "export the model (TorchScript + ONNX, BN folded)")
    p.add_argument("--inference_dir", default=None, help=f"export folder (default {DEFAULT_EXPORT_DIR}/<model>)")
    p.add_argument("--inference_model", default=None, help="predict with an exported folder instead")
    p.add_argument("--inference_backend", default="torchscript", choices=["torchscript", "onnx"])
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
) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[str] | None, Preprocess, DatasetSpec | None, torch.device]:
    """(model callable, label names or None, Preprocess, dataset or None, device) from the flags."""
    if args.inference_model:
        try:
            model, pre = load_inference(args.inference_model, args.inference_backend)
        except (OSError, ValueError, RuntimeError) as e:
            fail(f"--inference_model: {e}")
        spec = resolve_data(args) if not args.image else None
        names = read_label_names(args, pre.num_classes, list(pre.label_names) if pre.label_names else None)
        return model, names, pre, spec, torch.device("cpu")
    spec = resolve_data(args) if (args.data_dir or not args.image) else None
    saved = saved_run_args(args.pretrained_model)
    if spec is None and args.class_dim is None:
        args.class_dim = saved.get("class_dim") or classifier_width(args.pretrained_model, args.model) or 1000
    spec, cfg, device = prepare(args, train=False, spec=spec, need_data=False, saved=saved)
    model = load_for_inference(args, cfg, args.class_dim, device)
    names = read_label_names(args, args.class_dim, (spec.label_names if spec else None) or saved.get("label_names"))
    pre = Preprocess(
        cfg.name,
        args.class_dim,
        args.crop_size,
        args.resize_short_size,
        args.image_mean,
        args.image_std,
        args.interpolation,
        tuple(names) if names else None,
    )
    if args.save_inference:
        out = export_inference(model, args.inference_dir or Path(DEFAULT_EXPORT_DIR) / cfg.name, pre)
        print(f"saved inference model (BN folded): {out}/model.ts, model.onnx, inference.json")
    return model, names, pre, spec, device


def image_reader(args: argparse.Namespace, pre: Preprocess) -> BatchReader:
    """The ``--reader`` the loaders use, in eval mode (resize short side, center crop) with the model's sizes."""
    try:
        return make_reader(
            args.reader,
            train=False,
            size=pre.input_size,
            resize_short=pre.resize_short,
            aug=AugConfig(interpolation=pre.interpolation),
            num_threads=args.reader_thread or os.cpu_count() or 1,
            apply_exif=args.apply_exif,
        )
    except (RuntimeError, ValueError) as e:
        fail(str(e))


def load_batch(paths: list[str], pre: Preprocess, reader: BatchReader) -> tuple[torch.Tensor, list[str]]:
    """Read (the reader's checks: missing, corrupt, truncated) + normalize; unreadable files are reported and
    left out."""
    pixels = np.empty((len(paths), pre.input_size, pre.input_size, 3), dtype=np.uint8)
    warned: list[tuple[str, str]] = []
    errors = reader.read_batch(paths, [0] * len(paths), pixels, warned)  # eval transform: the seeds are unused
    for path, warning in warned:
        print(f"warning {printable(path)}: decoded in spite of damage ({printable(warning)})")
    keep = [i for i, err in enumerate(errors) if err is None]
    for path, err in zip(paths, errors):
        if err is not None:
            print(f"skipped {printable(path)}: {printable(err)}")
    x = torch.from_numpy(pixels[keep]).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(), [paths[i] for i in keep]


@torch.no_grad()
def main(args: argparse.Namespace) -> list[tuple[str, list[tuple[int, float, str]]]]:
    """Predict; returns [(path, [(class id, score, name), ...])] and prints one line per image."""
    model, names, pre, spec, device = build_predictor(args)
    paths = args.image or [s.path for s in spec.val]
    reader = image_reader(args, pre)
    results = []
    for start in range(0, len(paths), args.batch_size):
        images, kept = load_batch(paths[start : start + args.batch_size], pre, reader)
        if not kept:
            continue
        probs = torch.softmax(model(images.to(device)).float(), dim=1).cpu()
        scores, ids = probs.topk(min(args.topk, probs.shape[1]), dim=1)
        for path, row_ids, row_scores in zip(kept, ids.tolist(), scores.tolist()):
            top = [(i, s, names[i] if names else str(i)) for i, s in zip(row_ids, row_scores)]
            results.append((path, top))
            print(f"{printable(path)}: " + ", ".join(f"{i} {n} ({s:.4f})" for i, s, n in top))
    if hasattr(reader, "close"):
        reader.close()
    if not results:
        fail(f"none of the {len(paths)} images could be read (see the 'skipped' lines); nothing was predicted")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
