"""The eval report: its numbers against plain loops over the predictions, its figures, the path without matplotlib,
bounded memory, and the merge of ranks' accumulators."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from imgcls.report import PredictionStats, ReportInfo, headline, write_report

REPO = Path(__file__).resolve().parents[1]
CLASSES = 7
EMPTY_CLASS = 5  # no image has this label
NEVER_PREDICTED = 6  # its logit is always far below the rest


def tiny_predictions(seed: int = 0, n: int = 90) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits float64 [n, 7], labels [n], images uint8 [n, 8, 8, 3]) with an empty class and a never-predicted one."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([c for c in range(CLASSES) if c != EMPTY_CLASS], size=n)
    logits = rng.standard_normal((n, CLASSES)) * 1.5
    logits[np.arange(n), labels] += 1.2
    logits[:, NEVER_PREDICTED] -= 30.0
    images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    return logits, labels, images


def feed(stats: PredictionStats, logits, labels, images, sizes=(13, 1, 40, 36)) -> None:
    """Uneven batches; the 'images' handed to the model are the uint8 pixels as float NCHW."""
    start = 0
    for size in sizes:
        end = min(len(labels), start + size)
        x = torch.from_numpy(images[start:end]).permute(0, 3, 1, 2).float()
        stats.update(torch.from_numpy(logits[start:end]), torch.from_numpy(labels[start:end]), x, range(start, end))
        start = end
    assert start == len(labels)


def pixels(x: torch.Tensor) -> np.ndarray:
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def expected_rows(logits: np.ndarray, labels: np.ndarray) -> list[dict]:
    """per_class.csv's rows, counted with plain loops."""
    pred = [int(max(range(CLASSES), key=lambda c: row[c])) for row in logits]
    rows = []
    for c in range(CLASSES):
        support = sum(1 for y in labels if y == c)
        predicted = sum(1 for p in pred if p == c)
        hits = sum(1 for y, p in zip(labels, pred) if y == c and p == c)
        top5 = sum(1 for y, row in zip(labels, logits) if y == c and sum(v > row[c] for v in row) < 5)
        wrong = {}
        for y, p in zip(labels, pred):
            if y == c and p != c:
                wrong[p] = wrong.get(p, 0) + 1
        worst = min(wrong, key=lambda k: (-wrong[k], k)) if wrong else None
        rows.append(
            {
                "support": support,
                "predicted": predicted,
                "top1": 100.0 * hits / support if support else None,
                "precision": 100.0 * hits / predicted if predicted else None,
                "top5": 100.0 * top5 / support if support else None,
                "worst": worst,
                "worst_count": wrong.get(worst, 0),
            }
        )
    return rows


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cell(text: str) -> float | None:
    return float(text) if text else None


def test_report_numbers_match_plain_loops(tmp_path: Path) -> None:
    logits, labels, images = tiny_predictions()
    stats = PredictionStats(CLASSES, top_mistakes=5, to_pixels=pixels)
    feed(stats, logits, labels, images)
    names = [f"c{i}" for i in range(CLASSES)]
    write_report(tmp_path, stats, names=names, paths=[f"img{i}.jpg" for i in range(len(labels))])
    got = read_csv(tmp_path / "per_class.csv")
    want = expected_rows(logits, labels)
    assert want[EMPTY_CLASS]["support"] == 0 and want[NEVER_PREDICTED]["predicted"] == 0 < want[6]["support"]
    for c, (g, w) in enumerate(zip(got, want)):
        assert (int(g["class"]), g["name"], int(g["support"]), int(g["predicted"])) == (
            c, names[c], w["support"], w["predicted"]
        )  # fmt: skip
        for key in ("top1", "precision", "top5"):
            assert cell(g[key]) == (None if w[key] is None else pytest.approx(w[key], abs=0.005)), (c, key)
        assert g["most_confused_with"] == ("" if w["worst"] is None else names[w["worst"]]), c
        assert int(g["confused_count"]) == w["worst_count"]
    # headline numbers
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    h = headline(stats)
    pred = logits.argmax(1)
    assert h["images"] == len(labels)
    assert h["top1"] == pytest.approx(100.0 * np.mean(pred == labels))
    assert h["loss"] == pytest.approx(float(np.mean(-np.log(probs[np.arange(len(labels)), labels]))), rel=1e-5)
    # the 5 most confident mistakes, their images and paths
    wrong = sorted((i for i in range(len(labels)) if pred[i] != labels[i]), key=lambda i: -probs[i, pred[i]])[:5]
    mistakes = read_csv(tmp_path / "mistakes.csv")
    assert [int(m["index"]) for m in mistakes] == wrong
    assert [m["path"] for m in mistakes] == [f"img{i}.jpg" for i in wrong]
    assert [float(m["probability"]) for m in mistakes] == pytest.approx([probs[i, pred[i]] for i in wrong], abs=1e-4)
    assert [(int(m["true"]), int(m["pred"])) for m in mistakes] == [(labels[i], pred[i]) for i in wrong]
    for m, i in zip(stats.worst_mistakes(), wrong):
        assert np.array_equal(m.image, images[i])
    summary = (tmp_path / "summary.md").read_text()
    assert f"top-1 {h['top1']:.2f}%" in summary and "(1 class without images)" in summary


def test_merged_halves_equal_the_whole() -> None:
    logits, labels, images = tiny_predictions(seed=3)
    whole = PredictionStats(CLASSES, top_mistakes=4)
    feed(whole, logits, labels, images)
    halves = [PredictionStats(CLASSES, top_mistakes=4) for _ in range(2)]
    for part, rows in zip(halves, (slice(0, 45), slice(45, 90))):
        idx = range(rows.start, rows.stop)
        part.update(torch.from_numpy(logits[rows]), torch.from_numpy(labels[rows]), indices=idx)
    halves[0].merge(halves[1])
    assert np.array_equal(halves[0].matrix(), whole.matrix())
    assert torch.equal(halves[0].top5, whole.top5)
    assert [m.index for m in halves[0].worst_mistakes()] == [m.index for m in whole.worst_mistakes()]
    assert halves[0].loss_sum == pytest.approx(whole.loss_sum)


def png_shape(path: Path) -> tuple[int, int]:
    """(height, width) of a PNG that is not blank (several distinct gray levels) and not tiny."""
    assert path.stat().st_size > 5000, path
    image = cv2.imread(str(path))
    assert image is not None, path
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20, f"{path} is (nearly) blank"
    return image.shape[:2]


@pytest.mark.parametrize("classes", [CLASSES, 60])
def test_figures_are_written_and_not_blank(tmp_path: Path, classes: int) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, classes, 300)
    logits = rng.standard_normal((300, classes))
    logits[np.arange(300), labels] += 1.0
    images = rng.integers(0, 256, size=(300, 16, 16, 3), dtype=np.uint8)
    stats = PredictionStats(classes, top_mistakes=6, to_pixels=pixels)
    feed(stats, logits, labels, images, sizes=(300,))
    names = [f"a rather long class name {i}" for i in range(classes)]
    written = write_report(tmp_path, stats, names=names, info=ReportInfo(model="TinyNet"))
    assert {p.name for p in written} >= {"confusion.png", "mistakes.png", "per_class.csv", "summary.md"}
    height, width = png_shape(tmp_path / "confusion.png")
    assert height >= 300 and width >= 400
    height, width = png_shape(tmp_path / "mistakes.png")
    assert width > height  # 6 mistakes: 4 columns, 2 rows
    assert "![confusion.png](confusion.png)" in (tmp_path / "summary.md").read_text()


def without_matplotlib(tmp_path: Path) -> dict:
    """Environment of a subprocess in which ``import matplotlib`` fails, as when the extra is not installed."""
    fake = tmp_path / "no_matplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    path = os.pathsep.join([str(fake.parent), str(REPO), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


def test_without_matplotlib_the_csvs_are_written_and_one_line_says_how(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import torch
        from imgcls.report import PredictionStats, write_report
        stats = PredictionStats(3)
        stats.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]), torch.tensor([0, 2]))
        write_report({str(tmp_path / "r")!r}, stats)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=without_matplotlib(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["mistakes.csv", "per_class.csv", "summary.md"]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install imgcls[plots]" in lines[0], done.stderr
    rows = read_csv(tmp_path / "r" / "per_class.csv")
    assert [r["top1"] for r in rows] == ["100.00", "", "0.00"]


def test_without_matplotlib_training_keeps_metrics_and_says_how(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from imgcls.metrics import MetricsLog
        from imgcls.report.curves import plot_run
        log = MetricsLog(Path({str(tmp_path)!r}), tensorboard=False)
        log.append(dict(epoch=0, train_loss=1.0, train_top1=10.0, val_top1=20.0, val_top5=50.0, lr=0.1))
        print(plot_run(log.csv_path, Path({str(tmp_path / "curves.png")!r})))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=without_matplotlib(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no curves.png: it needs matplotlib (pip install imgcls[plots])" in done.stdout
    assert (tmp_path / "metrics.csv").exists() and not (tmp_path / "curves.png").exists()


def test_curves_png_is_drawn(tmp_path: Path) -> None:
    from imgcls.metrics import MetricsLog
    from imgcls.report.curves import curves_figure

    log = MetricsLog(tmp_path, tensorboard=False)
    for epoch in range(12):
        top1 = 90 * (1 - math.exp(-epoch / 4))
        log.append(dict(epoch=epoch, train_loss=2.3 * math.exp(-epoch / 5), train_top1=top1, val_top1=top1 - 5,
                        val_top5=min(100.0, top1 + 8), lr=0.1))  # fmt: skip
    height, width = png_shape(curves_figure(log.csv_path, tmp_path / "curves.png", "TinyNet: out/TinyNet"))
    assert width > 2 * height > 500


def test_memory_does_not_grow_with_the_image_count() -> None:
    """1000 classes: the accumulator's state after 50,000 images is what it was after 1,000 (8 MB of confusion
    and K images), never per-image storage."""
    torch.manual_seed(0)
    stats = PredictionStats(1000, top_mistakes=8, to_pixels=pixels)
    sizes = []
    for step in range(100):
        labels = torch.randint(0, 1000, (500,))
        stats.update(torch.randn(500, 1000), labels, torch.rand(500, 3, 4, 4) * 255)
        if step in (1, 99):
            sizes.append(stats.state_bytes())
    assert int(stats.matrix().sum()) == 50_000
    assert sizes[0] == sizes[1] == 1000 * 1000 * 8 + 1000 * 8 + 8 * 4 * 4 * 3


# The child's own peak (VmHWM): getrusage's ru_maxrss would carry the parent's peak across fork + exec.
PEAK_SCRIPT = """
import re, sys, torch
from imgcls.report import PredictionStats
torch.manual_seed(0)
stats = PredictionStats(1000, top_mistakes=16)
for _ in range(int(sys.argv[1])):
    stats.update(torch.randn(500, 1000), torch.randint(0, 1000, (500,)))
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from Linux's /proc")
def test_peak_memory_is_the_same_for_5000_and_50000_images(tmp_path: Path) -> None:
    """Peak RSS of a process that accumulates 10 vs 100 batches of 500 x 1000 logits: keeping every image's
    probabilities would add 50,000 x 1000 x 4 bytes = 200 MB; the accumulator adds nothing."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    peaks = []
    for batches in (10, 100):
        done = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, str(batches)], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stdout.split()[-1]))  # KiB
    assert peaks[1] - peaks[0] < 40 * 1024, peaks


def shapes_with_a_broken_val_image(root: Path, layout: str) -> tuple[dict[str, int], list[str]]:
    """The built-in shapes (10 classes, 30 val images) as list files or class folders, with an unreadable image
    early in the val order; returns ({val path relative to root: label}, class names), read from the files."""
    from tests.cli_helpers import tiny_shapes

    data = tiny_shapes(root, num_train=10, num_val=30)
    lines = (data / "val_list.txt").read_text().splitlines()
    if layout == "lists":
        (data / "val" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        lines.insert(4, "val/broken.jpg 2")
        (data / "val_list.txt").write_text("\n".join(lines) + "\n")
        names = (data / "labels.txt").read_text().split()
        return {line.split()[0]: int(line.split()[1]) for line in lines if "broken" not in line}, names
    for name in ("train_list.txt", "val_list.txt", "labels.txt"):
        (data / name).unlink()
    names = sorted(p.name for p in (data / "val").iterdir())
    (data / "val" / names[0] / "00000_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return {line.split()[0]: names.index(Path(line.split()[0]).parent.name) for line in lines}, names


@pytest.mark.parametrize("layout", ["lists", "folders"])
def test_eval_cli_report_maps_mistakes_to_their_images(tmp_path: Path, capsys, layout: str) -> None:
    """``--report`` with an unreadable image early in the val order: the supports are the data's label counts, the
    names the data's, the headline is the CLI's, and each mistake's path carries the mistake's true label."""
    from imgcls import eval as eval_cli
    from imgcls.models import create_model
    from tests.cli_helpers import MODEL

    data = tmp_path / "data"
    label_of, names = shapes_with_a_broken_val_image(data, layout)
    torch.manual_seed(0)
    torch.save(create_model(MODEL, num_classes=10).state_dict(), tmp_path / "w.pt")
    flags = [f"--model={MODEL}", f"--data_dir={data}", "--reader=opencv", "--reader_thread=1", "--image_shape=3,32,32"]
    flags += [f"--pretrained_model={tmp_path / 'w.pt'}", "--batch_size=7", f"--report={tmp_path / 'report'}"]
    result = eval_cli.main(eval_cli.get_args_parser().parse_args(flags))
    assert f"report: {tmp_path / 'report' / 'summary.md'}" in capsys.readouterr().out
    rows = read_csv(tmp_path / "report" / "per_class.csv")
    counts = np.bincount(list(label_of.values()), minlength=10)
    assert [int(r["support"]) for r in rows] == counts.tolist()
    assert [r["name"] for r in rows] == names
    hits = sum(float(r["top1"]) * int(r["support"]) / 100 for r in rows)
    assert 100 * hits / result["images"] == pytest.approx(result["top1"], abs=0.01)
    mistakes = read_csv(tmp_path / "report" / "mistakes.csv")
    assert mistakes, "an untrained model makes mistakes"
    for m in mistakes:
        relative = Path(m["path"]).relative_to(data).as_posix()
        assert label_of[relative] == int(m["true"]) != int(m["pred"]) and m["true_name"] == names[int(m["true"])]
    assert png_shape(tmp_path / "report" / "mistakes.png")[0] > 200


GATHER_SCRIPT = """
import json, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[4])
from tests.test_report import tiny_predictions
from imgcls.report import PredictionStats
rank, world, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
logits, labels, _ = tiny_predictions(seed=5)
mine = np.arange(rank, len(labels), world)  # each rank evaluates every world-th image, as the val loader
stats = PredictionStats(7, top_mistakes=6)
stats.update(torch.from_numpy(logits[mine]), torch.from_numpy(labels[mine]), indices=mine.tolist())
stats.gather()
print(json.dumps({"matrix": stats.matrix().tolist(), "top5": stats.top5.tolist(), "loss": stats.loss_sum,
                  "mistakes": [m.index for m in stats.worst_mistakes()]}))
dist.destroy_process_group()
"""


def test_gather_over_two_gloo_ranks_equals_one_process(tmp_path: Path) -> None:
    import json

    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [str(tmp_path / "store"), str(REPO)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GATHER_SCRIPT, str(rank), "2", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    logits, labels, images = tiny_predictions(seed=5)
    whole = PredictionStats(CLASSES, top_mistakes=6)
    feed(whole, logits, labels, images)
    for out, _ in outs:  # every rank ends with the whole dataset's numbers
        got = json.loads(out.strip().splitlines()[-1])
        assert got["matrix"] == whole.matrix().tolist() and got["top5"] == whole.top5.tolist()
        assert got["mistakes"] == [m.index for m in whole.worst_mistakes()]
        assert got["loss"] == pytest.approx(whole.loss_sum)


def test_report_into_a_file_is_a_one_line_error_before_any_work(tmp_path: Path, capsys) -> None:
    from imgcls import eval as eval_cli
    from tests.cli_helpers import MODEL, one_line_error, tiny_shapes

    data = tiny_shapes(tmp_path / "data", num_train=10, num_val=10)
    (tmp_path / "taken").write_text("a file")
    flags = [f"--model={MODEL}", f"--data_dir={data}", "--pretrained_model=none.pt", f"--report={tmp_path / 'taken'}"]
    error = one_line_error(capsys, lambda: eval_cli.main(eval_cli.get_args_parser().parse_args(flags)))
    assert error == f"error: --report {tmp_path / 'taken'}: a file is in the way; give a folder"
