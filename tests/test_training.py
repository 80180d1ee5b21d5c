"""Training on a tiny folder made here: the split, one run of each architecture, calibration."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.training.agemodel import AgeModel, load_age_model
from ml.training.augment import Augmentation
from ml.training.data import Sample, load_split, make_split, parse_name, read_duplicate_groups, scan
from ml.training.evaluate import run as evaluate_folders
from ml.training.train import TrainConfig, train
from tests.utkfolder import make_folder, write_split


def test_utkface_names_are_parsed_and_bad_ones_skipped(tmp_path):
    assert parse_name("42_1_2_20170109150557335.jpg.chip.jpg") == (42, 1, 2)
    assert parse_name("61_1_20170109142408075.jpg.chip.jpg") == (61, 1, None)  # race missing
    assert parse_name("42_x_x_20261126101500123456_0123456789ab.jpg") == (42, None, None)  # exported
    for bad in ("face.jpg", "130_0_0_2017.jpg", "42_3_0_2017.jpg", "42_0_0_2017.gif"):
        assert parse_name(bad) is None
    for name in ("1_0_0_2017.jpg", "notes.jpg", "x_0_0_2017.jpg"):
        (tmp_path / name).write_bytes(b"")
    samples, skipped = scan([tmp_path])
    assert [s.age for s in samples] == [1] and skipped == 2


def test_split_keeps_duplicate_groups_together_and_drops_conflicting_ones(tmp_path):
    names = [f"{20 + i % 50}_0_0_2017{i:08d}.jpg" for i in range(400)]
    same = ["25_0_0_2017a1.jpg", "25_1_0_2017a2.jpg"]  # identical images, the same age
    conflicting = ["30_0_0_2017b1.jpg", "30_0_0_2017b2.jpg", "31_0_0_2017b3.jpg"]  # identical, ages disagree
    samples = [Sample(tmp_path / n, *parse_name(n)) for n in names + same + conflicting]
    with (tmp_path / "duplicates.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "file", "age"])
        for g, members in enumerate([same, conflicting]):
            for m in members:
                w.writerow([g, m, parse_name(m)[0]])
    split = make_split(samples, read_duplicate_groups([tmp_path]), seed=7)
    a = split.assignment
    assert [a[n] for n in conflicting] == ["dropped"] * 3
    assert sorted(a[n] for n in same)[0] == "dropped" and sorted(a[n] for n in same)[1] != "dropped"
    counts = split.counts()
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0
    # a file's side depends only on the seed and its group, not on what else is in the folder
    again = make_split(samples[100:], read_duplicate_groups([tmp_path]), seed=7)
    assert all(again.assignment[k] == v for k, v in a.items() if k in again.assignment)
    other_seed = make_split(samples, read_duplicate_groups([tmp_path]), seed=8)
    assert other_seed.assignment != a


def test_recorded_split_is_reused_and_extended(tmp_path):
    files = make_folder(tmp_path / "faces", 6)
    samples, _ = scan([tmp_path / "faces"])
    write_split(tmp_path / "split.csv", files, val_every=2)
    split = load_split(samples, [tmp_path / "faces"], split_file=tmp_path / "split.csv")
    assert [split.assignment[f.name] for f in sorted(files)] == ["val", "train"] * 3
    extra = make_folder(tmp_path / "more", 2)
    more, _ = scan([tmp_path / "faces", tmp_path / "more"])
    extended = load_split(more, [tmp_path / "faces", tmp_path / "more"], split_file=tmp_path / "split.csv")
    assert all(extended.assignment[f.name] == split.assignment[f.name] for f in files)
    assert all(extended.assignment[f.name] in ("train", "val", "test") for f in extra)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    files = make_folder(root / "faces", 16)
    write_split(root / "split.csv", files)
    return root / "faces", root / "split.csv"


@pytest.mark.parametrize("arch", ["resnet10", "vgg"])
def test_each_architecture_trains_and_its_loss_goes_down(tiny, tmp_path, arch):
    folder, split = tiny
    extra = {"input_size": 32, "lr": 1e-3} if arch == "vgg" else {"aux": 0.5, "sigma_slope": 0.05}
    cfg = TrainConfig.for_arch(arch, data=[str(folder)], out=str(tmp_path / arch), epochs=3, batch=4, workers=1,
                               cache=str(tmp_path / "cache"), split_file=str(split), device="cpu", **extra)
    model = train(cfg)
    rows = list(csv.DictReader((tmp_path / arch / "metrics.csv").read_text().splitlines()))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(losses) == 3 and losses[-1] < losses[0]
    for f in ("config.json", "summary.json", "model.safetensors", "last.pt", "learning_curve.png",
              "predicted_vs_true.png", "mae_by_band.png"):
        assert (tmp_path / arch / f).exists(), f
    served = load_age_model(tmp_path / arch / "model.safetensors")
    assert served.version == f"{arch}-{arch}" and served.arch == arch
    chips = np.zeros((2, 64, 64, 3), np.uint8)
    (a, b) = served.estimate(chips)
    assert a.low <= a.age <= a.high and np.isfinite(b.age)
    assert model.version == served.version


def _expected_ages(model, chips: np.ndarray) -> np.ndarray:
    probs = model.probabilities(chips, 1.0)
    return (probs @ model.net.ages).numpy()


def test_distillation_pulls_the_network_towards_its_teacher(tiny, tmp_path):
    """With the whole loss on the teacher's distributions, a network started from the imported
    weights ends closer to the shipped v2 network it learns from, and the teacher runs once."""
    from ml.paths import WEIGHTS_DIR
    from ml.training.train import build, load_data

    folder, split = tiny
    teacher_path = WEIGHTS_DIR / "resnet10-utkface-v2.safetensors"
    cfg = TrainConfig.for_arch("resnet10", data=[str(folder)], out=str(tmp_path / "kd"), epochs=4, batch=4,
                               workers=1, cache=str(tmp_path / "cache"), split_file=str(split), device="cpu",
                               augmentation=Augmentation.none().__dict__, teacher=str(teacher_path),
                               distill=1.0, distill_temperature=2.0, ema=0.0)
    train_set, _ = load_data(cfg)
    chips = train_set.centre(64)
    teacher = load_age_model(teacher_path, fold=False)
    target = _expected_ages(teacher, chips)
    start = AgeModel(nets=[build(cfg).eval()], version="start")
    before = np.abs(_expected_ages(start, chips) - target).mean()
    train(cfg)
    assert len(list((tmp_path / "cache").glob("teacher-resnet10-utkface-v2-*.npy"))) == 1
    last = torch.load(tmp_path / "kd" / "last.pt", weights_only=False)
    student = build(cfg)
    student.load_state_dict(last["net"])
    after = np.abs(_expected_ages(AgeModel(nets=[student.eval()], version="kd"), chips) - target).mean()
    assert after < 0.75 * before, (before, after)  # measured 2.97 -> 1.69; labels alone: 2.97 -> 8.9


def test_training_resumes_after_its_last_epoch(tiny, tmp_path):
    folder, split = tiny
    cfg = TrainConfig.for_arch("resnet10", data=[str(folder)], out=str(tmp_path / "run"), epochs=1, batch=8,
                               workers=1, cache=str(tmp_path / "cache"), split_file=str(split), device="cpu")
    train(cfg)
    cfg.epochs = 2
    train(cfg, resume=True)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_evaluate_compares_two_models_side_by_side(tiny, capsys):
    folder, split = tiny
    from ml.paths import DEFAULT_AGE_WEIGHTS, WEIGHTS_DIR

    weights = [WEIGHTS_DIR / "cydral-resnet10-v1.safetensors", DEFAULT_AGE_WEIGHTS]
    results = evaluate_folders([folder], weights, split="all", workers=1)
    out = capsys.readouterr().out
    assert "MAE, years" in out and "age 0-12" in out and "race White" in out and "80% interval covers" in out
    assert "covers, true age 20-39" in out and "mean width, true age 20-39" in out
    assert "covers, predicted age 20-39" in out and "mean width, predicted age 20-39" in out
    for m in results.values():
        assert m.n + m.missed == 16
        # the bands' coverage, weighted by their faces, is the overall coverage
        assert sum(n for n, _ in m.coverage_by_band.values()) == m.n
        assert sum(n * c for n, c in m.coverage_by_band.values()) / m.n == pytest.approx(m.coverage)
        assert sum(n * w for n, w in m.width_by_band.values()) / m.n == pytest.approx(m.mean_width)



def test_each_folder_weighs_its_images_and_a_cache_forgets_the_files_gone(tmp_path):
    from ml.training.chips import cached_training_chips, load_chipset
    from ml.training.train import sample_weights

    a = make_folder(tmp_path / "a", 2)
    b = make_folder(tmp_path / "b", 6)
    for same_name_as_a in b[:2]:
        same_name_as_a.unlink()
    b = b[2:]
    cfg = TrainConfig(data=[str(tmp_path / "a"), str(tmp_path / "b")], data_weights=[1.0, 3.0])
    names = np.array([p.name for p in [*a, *b]], dtype=object)
    assert sample_weights(cfg, names).tolist() == [1.0] * 2 + [3.0] * 4
    assert sample_weights(TrainConfig(data=cfg.data), names) is None  # all 1: no weighting at all

    samples, _ = scan([tmp_path / "b"])
    chips = cached_training_chips(samples, tmp_path / "cache", workers=1)
    assert len(chips) == 4
    (cache,) = (tmp_path / "cache").iterdir()
    b[0].unlink()  # a withdrawn submission's file, removed by the export
    again = cached_training_chips(scan([tmp_path / "b"])[0], tmp_path / "cache", workers=1)
    assert b[0].name not in set(again.names) and len(again) == 3
    assert b[0].name not in set(load_chipset(cache).names)  # gone from the disk too
