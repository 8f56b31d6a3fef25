"""Top-k counting, the progress bar's redraw schedule, and the training loop's non-finite loss stop."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from imgcls import metrics
from imgcls.engine import train_one_epoch
from imgcls.metrics import ProgressBar, topk_hits
from imgcls.optim import LRSchedule


@pytest.mark.parametrize("classes", [1, 3, 10])
def test_topk_hits_counts_like_a_plain_loop(classes: int) -> None:
    rng = np.random.default_rng()
    logits = rng.standard_normal((37, classes))
    labels = rng.integers(0, classes, 37)
    ks = (1, 2, 5)
    want = []
    for k in ks:
        top = np.argsort(-logits, axis=1)[:, :k]  # k past the class count takes every class
        want.append(int(sum(label in row for label, row in zip(labels, top))))
    got = topk_hits(torch.from_numpy(logits), torch.from_numpy(labels), ks)
    assert got.tolist() == want


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_nothing_without_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(20, "x", stream=stream)
    assert not any(bar.due(done) for done in range(1, 21))
    bar.update(20, 20, loss=1.0)
    bar.close()
    assert stream.getvalue() == ""


def test_progress_bar_on_a_terminal_shows_values_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
    stream = Terminal()
    bar = ProgressBar(10, "epoch 1/3", stream=stream)
    assert bar.due(1)
    now[0] += 0.5
    bar.update(1, 64, loss=2.5)
    now[0] += metrics.REDRAW_SECONDS / 2
    assert not bar.due(2)
    now[0] += metrics.REDRAW_SECONDS
    assert bar.due(2)
    assert bar.due(10)  # the last step always shows
    bar.update(10, 640, loss=0.5)
    bar.close()
    last = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("epoch 1/3: 100%") and "10/10 [" in last, last
    assert "loss 0.5000" in last and "img/s" in last and "<00:00" in last, last  # tqdm's elapsed<remaining


def test_training_without_a_terminal_logs_one_line_per_epoch(tmp_path, capsys) -> None:
    from tests.cli_helpers import run_train, tiny_shapes, tiny_train

    data = tiny_shapes(tmp_path / "data")
    run_train(*tiny_train(data, tmp_path / "out", "--num_epochs=2"))
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "ETA" not in captured.err and "it/s" not in captured.err, captured.err
    epochs = [line for line in (captured.out + captured.err).splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"], epochs


@pytest.mark.parametrize("bad_batch", [0, 1])
def test_non_finite_loss_stops_training_with_advice(bad_batch: int) -> None:
    """The message names the exact iteration and global step (not just the last one shown) and the lr there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    batches = [(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])) for _ in range(3)]
    batches[bad_batch][0][0, 0, 0, 0] = float("inf")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError) as e:
        train_one_epoch(
            model, batches, optimizer, LRSchedule("linear_decay", 0.1, 3, 2), 1,
            device=torch.device("cpu"), start_step=3,
        )  # fmt: skip
    step = 3 + bad_batch
    text = str(e.value)
    assert f"at epoch 2 iteration {bad_batch + 1} (global step {step}, lr {0.1 * (1 - step / 6):.4g} there)" in text
    assert "lower --lr" in text and "before any weight update" not in text


def test_non_finite_loss_at_the_first_step_does_not_blame_the_lr() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    batches = [(torch.full((4, 3, 2, 2), float("nan")), torch.tensor([0, 1, 2, 0]))]
    with pytest.raises(FloatingPointError, match="before any weight update, so not the lr") as e:
        train_one_epoch(
            model, batches, torch.optim.SGD(model.parameters(), lr=0.1), LRSchedule("piecewise_decay", 0.1, 1, 1), 0,
            device=torch.device("cpu"), start_step=0,
        )  # fmt: skip
    assert "lower --lr" not in str(e.value)


def test_fresh_run_starts_fresh_tb_and_csv_resume_keeps_them(tmp_path) -> None:
    row = dict(epoch=0, train_loss=1.0, train_top1=10.0, val_top1=20.0, val_top5=50.0, lr=0.1, images_per_sec=5.0)
    for _ in range(2):  # two fresh runs in the same folder
        log = metrics.MetricsLog(tmp_path, tensorboard=True)
        log.append(row)
        log.close()
    assert len(list((tmp_path / "tb").iterdir())) == 1
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 2  # header + one row
    log = metrics.MetricsLog(tmp_path, tensorboard=True, keep_before_epoch=1)  # a resume after epoch 0
    log.append(dict(row, epoch=1))
    log.close()
    assert len(list((tmp_path / "tb").iterdir())) == 2
    assert [line.split(",")[0] for line in (tmp_path / "metrics.csv").read_text().splitlines()] == ["epoch", "0", "1"]


def test_infer_draws_a_bar_on_a_terminal_below_whole_result_lines(tmp_path, monkeypatch, capsys) -> None:
    from imgcls import infer as infer_cli
    from imgcls.models import create_model
    from tests.cli_helpers import MODEL, tiny_shapes

    data = tiny_shapes(tmp_path / "data", num_train=10, num_val=12)
    torch.save(create_model(MODEL, num_classes=10).state_dict(), tmp_path / "w.pt")
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    flags = [f"--model={MODEL}", f"--data_dir={data}", f"--pretrained_model={tmp_path / 'w.pt'}", "--reader=opencv"]
    infer_cli.main(infer_cli.get_args_parser().parse_args([*flags, "--image_shape=3,32,32", "--batch_size=5"]))
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith(str(data))]) == 12, out
    assert "infer: 100%" in terminal.getvalue() and "3/3 [" in terminal.getvalue(), terminal.getvalue()
