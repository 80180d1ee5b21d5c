"""The learning loop's retrain: `python -m api retrain` (and `make retrain`).

1. Export the consented submissions that exist now (`api.learning.submission_export`: files of deleted ones go).
2. Keep a fixed share of them out of training, chosen by a hash of the submission id (`is_held_out`):
   the same submission is held out in every run, whatever else was submitted or deleted.
3. Fine-tune the active model (every member of an ensemble, `ml.training.finetune`) on the shared data's
   training split plus the other submissions, whose loss weight is a setting.
4. Evaluate the active model and the candidate side by side, on the fixed validation split of the
   shared data and on the held-out submissions, with a paired bootstrap of each MAE difference.
5. Register the candidate and promote it by `decide` (the README's rule), or record it rejected with
   its figures; then retire every other version trained on a submission since deleted (`forget_deleted`).

Everything a run writes lives in `<data_dir>/retrain/`: `submissions/` (the export, and its `train/`
and `held-out/` parts) and `runs/<version>/` (the split, the members' training runs with their plots,
`comparison.png`, `summary.txt`, `summary.json`); the chip cache in `<data_dir>/chips/`. The model
itself is copied to the registry's models folder as `<version>.onnx` and `.safetensors`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.settings import Settings
from api.learning import registry
from api.learning.submission_export import EXPORTED, export_submissions, file_name
from api.privacy import audit
from api.storage.tables import Submission
from ml.bands import band_names
from ml.paths import SPLIT_FILE
from ml.training.data import load_split, scan
from ml.training.evaluate import Metrics, PairedDifference, metrics, paired_difference, predict

# --- choosing the held-out submissions ---------------------------------------------------------


def is_held_out(submission_id: uuid.UUID, share: float) -> bool:
    """Whether a submission is kept out of training, for evaluation: a hash of its id alone decides,
    so it stays on the same side in every run."""
    digest = hashlib.sha256(b"whatsmyage held-out:" + submission_id.bytes).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


# --- the promotion rule ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    promoted: bool
    why: str


def decide(validation: PairedDifference, held_out: PairedDifference, *, min_held_out: int) -> Decision:
    """The rule (README, "The learning loop"): promote only a candidate that is
    - not worse on the validation split beyond noise: its MAE minus the active one's is at most the
      95% half-width of that difference over bootstrap resamples of the faces, and
    - better on the held-out submissions beyond noise: at least that half-width lower there, on at
      least `min_held_out` of them.
    Each difference is candidate minus active on the same faces (`ml.training.evaluate.paired_difference`)."""
    val = (f"validation MAE {validation.mae_b:.2f} against {validation.mae_a:.2f} "
           f"({validation.difference:+.2f}, noise ±{validation.noise:.2f}, {validation.n} faces)")
    held = (f"held-out submissions MAE {held_out.mae_b:.2f} against {held_out.mae_a:.2f} "
            f"({held_out.difference:+.2f}, noise ±{held_out.noise:.2f}, {held_out.n} faces)")
    if held_out.n < min_held_out:
        return Decision(False, f"only {held_out.n} held-out submissions with a face: at least {min_held_out} "
                               "are needed to show that it is better")
    if not validation.difference <= validation.noise:  # also refuses NaN (no validation faces)
        return Decision(False, f"worse on validation beyond noise: {val}")
    if not held_out.difference < -held_out.noise:
        return Decision(False, f"not better on the held-out submissions beyond noise: {held}")
    return Decision(True, f"not worse on validation ({val}) and better on the held-out submissions ({held})")


# --- settings of a run ------------------------------------------------------------------------------


@dataclass
class RetrainOptions:
    data: list[Path]  # the shared UTKFace-style folders
    split_file: Path = SPLIT_FILE  # their recorded split: its validation side is the fixed validation split
    epochs: int = 1
    submission_weight: float = 5.0  # loss weight of a submission against a shared image's 1
    held_out_share: float = 0.2
    min_held_out: int = 5
    shared_images: int | None = None  # train on this many of the shared training images (a stable subset)
    lr: float = 3e-4
    ema: float = 0.0  # weight averaging during the fine-tune (ml.training.train's --ema); 0 = off
    batch: int = 128
    seed: int = 0
    device: str = "auto"  # cuda when present
    workers: int = 2  # chip extraction processes

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RetrainOptions:
        options = cls(data=list(settings.retrain_data), epochs=settings.retrain_epochs,
                      submission_weight=settings.retrain_submission_weight,
                      held_out_share=settings.retrain_held_out_share, min_held_out=settings.retrain_min_held_out)
        for k, v in overrides.items():
            if v is not None:
                setattr(options, k, v)
        return options


class RetrainError(Exception):
    """A retrain that cannot run (no training weights for the active model, no shared data, ...)."""


# --- the submissions' folders -------------------------------------------------------------------------


@dataclass
class SubmissionSets:
    train: Path
    held_out: Path
    train_ids: list[str]
    held_out_ids: list[str]
    newest: datetime | None


def _mirror(folder: Path, files: dict[str, Path]) -> None:
    """Make `folder` hold exactly `files` (name -> source): hard links, copies where links fail."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name not in files:
            path.unlink()
    for name, source in files.items():
        target = folder / name
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)


async def split_submissions(session: AsyncSession, root: Path, share: float) -> SubmissionSets:
    """Export every stored submission into `root`, then mirror them into `root/train` and
    `root/held-out` by `is_held_out`. Only submissions both stored and exported now take part."""
    exported = root / "all"
    await export_submissions(session, exported)
    rows = (await session.exec(select(Submission.id, Submission.true_age, Submission.created_at))).all()
    present = {p.name for p in exported.iterdir() if EXPORTED.match(p.name)}
    train: dict[str, Path] = {}
    held: dict[str, Path] = {}
    train_ids: list[str] = []
    held_ids: list[str] = []
    newest = None
    for row in rows:
        name = file_name(row)  # type: ignore[arg-type]  # the row has the fields the name is made of
        if name not in present:
            continue  # stored after the export: the next run takes it
        if is_held_out(row.id, share):
            held[name] = exported / name
            held_ids.append(str(row.id))
        else:
            train[name] = exported / name
            train_ids.append(str(row.id))
        newest = max(newest, row.created_at) if newest else row.created_at
    await anyio.to_thread.run_sync(_mirror, root / "train", train)
    await anyio.to_thread.run_sync(_mirror, root / "held-out", held)
    return SubmissionSets(root / "train", root / "held-out", sorted(train_ids), sorted(held_ids), newest)


def write_split(path: Path, shared: list[Path], recorded: Path, submissions: Path,
                shared_images: int | None) -> dict[str, int]:
    """The run's split file: the shared folders' recorded split (validation as it is; training cut to
    a stable subset of `shared_images` when given) and every training submission on the training side."""
    samples, _ = scan(shared)
    split = load_split(samples, shared, split_file=recorded).assignment
    train = sorted((n for n, side in split.items() if side == "train"),
                   key=lambda n: hashlib.sha256(n.encode()).digest())
    if shared_images is not None:
        for name in train[shared_images:]:
            split[name] = "unused"  # not in this run
    subs = sorted(p.name for p in submissions.iterdir())
    split.update({n: "train" for n in subs})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "split"])
        w.writerows(sorted(split.items()))
    return {"shared_train": min(len(train), shared_images if shared_images is not None else len(train)),
            "validation": sum(side == "val" for side in split.values()), "submissions": len(subs)}


# --- training and evaluation (blocking, CPU or GPU) -----------------------------------------------


@dataclass
class Comparison:
    validation: dict[str, Metrics]  # "active", "candidate"
    held_out: dict[str, Metrics]
    validation_difference: PairedDifference
    held_out_difference: PairedDifference


def compare(active_onnx: Path, candidate_onnx: Path, val: Any, held: Any, seed: int = 0) -> Comparison:
    """Both served models (ONNX Runtime, as the service runs them) on the same chips."""
    from ml.serving import runtime

    figures: dict[str, dict[str, Metrics]] = {"validation": {}, "held_out": {}}
    errors: dict[str, dict[str, np.ndarray]] = {"validation": {}, "held_out": {}}
    for name, path in (("active", active_onnx), ("candidate", candidate_onnx)):
        model = runtime.load_age_model(path)
        for where, chips in (("validation", val), ("held_out", held)):
            pred, low, high = predict(model, chips)
            figures[where][name] = metrics(pred, low, high, chips)
            errors[where][name] = np.abs(pred - chips.ages) if len(chips) else np.zeros(0)
    diffs = {where: paired_difference(e["active"], e["candidate"], seed=seed) for where, e in errors.items()}
    return Comparison(figures["validation"], figures["held_out"], diffs["validation"], diffs["held_out"])


def summary_table(c: Comparison) -> str:
    """Active against candidate, overall and by age band, on validation and on held-out submissions."""
    def cell(m: Metrics, band: str | None) -> str:
        if band is None:
            return f"{m.mae:.2f}" if m.n else "-"
        n, mae = m.by_band.get(band, (0, float("nan")))
        return f"{mae:.2f}" if n else "-"

    def diff(a: Metrics, b: Metrics, band: str | None) -> str:
        if band is None:
            return f"{b.mae - a.mae:+.2f}" if a.n else "-"
        (na, ma), (_, mb) = a.by_band.get(band, (0, 0.0)), b.by_band.get(band, (0, 0.0))
        return f"{mb - ma:+.2f}" if na else "-"

    va, vc, ha, hc = c.validation["active"], c.validation["candidate"], c.held_out["active"], c.held_out["candidate"]
    head = ["", "val n", "active", "candidate", "change", "held-out n", "active", "candidate", "change"]
    rows = [["MAE, years", str(va.n), cell(va, None), cell(vc, None), diff(va, vc, None),
             str(ha.n), cell(ha, None), cell(hc, None), diff(ha, hc, None)]]
    for band in band_names():
        if band in va.by_band or band in ha.by_band:
            rows.append([f"  age {band}", str(va.by_band.get(band, (0,))[0]), cell(va, band), cell(vc, band),
                         diff(va, vc, band), str(ha.by_band.get(band, (0,))[0]), cell(ha, band), cell(hc, band),
                         diff(ha, hc, band)])
    rows.append(["80% interval covers", "", f"{va.coverage:.1%}", f"{vc.coverage:.1%}", "", "",
                 f"{ha.coverage:.1%}" if ha.n else "-", f"{hc.coverage:.1%}" if hc.n else "-", ""])
    vd, hd = c.validation_difference, c.held_out_difference
    rows.append(["noise (95% half-width)", "", "", "", f"±{vd.noise:.2f}", "", "", "",
                 f"±{hd.noise:.2f}" if hd.n else "-"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in [head, *rows]]
    return "\n".join(lines)


def plot_comparison(path: Path, c: Comparison, title: str) -> None:
    """Bars of the MAE by age band, active beside candidate, on validation and on held-out submissions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (where, figs) in zip(axes, (("validation split", c.validation), ("held-out submissions", c.held_out)),
                                 strict=True):
        bands = [b for b in band_names() if b in figs["active"].by_band]
        x = np.arange(len(bands))
        for k, (name, m) in enumerate(figs.items()):
            ax.bar(x + (k - 0.5) * 0.4, [m.by_band[b][1] for b in bands], 0.4,
                   label=f"{name}: MAE {m.mae:.2f}" if m.n else name)
        ax.set_xticks(x, bands)
        ax.set_xlabel("true age")
        ax.set_ylabel("MAE (years)")
        ax.set_title(f"{where} ({figs['active'].n} faces)")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figures_json(m: Metrics) -> dict[str, Any]:
    """One model's figures in the shape `python -m ml evaluate --json` writes."""
    return asdict(m)


# --- deletion -----------------------------------------------------------------------------------------


async def forget_deleted(session: AsyncSession, settings: Settings) -> list[str]:
    """Retire every version other than the active one that was trained on a submission that no longer
    exists, and delete its weights files (retrained models only), so it can never be served again.
    Returns their versions. The active one is left serving until a retrain replaces it."""
    existing = {str(i) for i in (await session.exec(select(Submission.id))).all()}
    folder = registry.models_dir(settings).resolve()
    forgotten = []
    for row in await registry.all_versions(session):
        gone = [i for i in (row.trained_on or {}).get("submission_ids", []) if i not in existing]
        if row.state == "active" or not gone:
            continue
        onnx = registry.weights_file(row)
        files = [f for f in (onnx, onnx.with_suffix(".safetensors")) if f.resolve().is_relative_to(folder)]
        if row.state == "retired" and not any(f.exists() for f in files):
            continue  # done at an earlier run
        await registry.retire(session, row.version, reason=f"trained on {len(gone)} submission(s) since deleted; "
                                                           "its weights were deleted")
        for f in files:
            f.unlink(missing_ok=True)
        forgotten.append(row.version)
    return forgotten


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    version: str
    promoted: bool
    why: str
    table: str
    run: Path
    forgotten: list[str] = field(default_factory=list)


def check_inputs(options: RetrainOptions, active: str, init: Path) -> None:
    missing = [str(d) for d in options.data if not Path(d).is_dir()]
    if not options.data or missing:
        raise RetrainError(f"the shared data folders are missing: {', '.join(missing) or 'none given'}")
    if not init.is_file():
        raise RetrainError(f"the active model {active} has no training weights ({init.name}) beside its .onnx "
                           "file: there is nothing to fine-tune from")


def install(onnx: Path, weights: Path, served: Path) -> str:
    """Copy a run's model into the models folder as `served` (.onnx) and its .safetensors, never over
    another file (`RetrainError` then); return the .onnx file's SHA-256."""
    served.parent.mkdir(parents=True, exist_ok=True)
    try:
        for source, target in ((onnx, served), (weights, served.with_suffix(".safetensors"))):
            with source.open("rb") as src, target.open("xb") as dst:
                shutil.copyfileobj(src, dst)
    except FileExistsError as e:
        raise RetrainError(f"{e.filename} exists already: a model file is never overwritten") from None
    return registry.file_sha256(served)


def write_summary(run: Path, summary: dict[str, Any], text: str) -> None:
    (run / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (run / "summary.txt").write_text(text)


def new_version(now: datetime | None = None) -> str:
    return f"retrain-{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"


def data_label(folder: Path) -> str:
    """A shared folder's name in `trained_on`: UTKFace keeps its images in `.../utkface/images`."""
    return folder.parent.name if folder.name == "images" else folder.name


async def retrain(session: AsyncSession, settings: Settings, options: RetrainOptions,
                  version: str | None = None) -> Outcome:
    """One run of the loop (see the module's docstring); commits what it records."""
    from ml.training.chips import cached_training_chips
    from ml.training.finetune import FinetuneConfig, finetune

    await registry.ensure_shipped(session, settings.age_weights)  # a database the service never started
    active = await registry.active(session)
    active_onnx = registry.weights_file(active)
    init = active_onnx.with_suffix(".safetensors")
    await anyio.to_thread.run_sync(check_inputs, options, active.version, init)
    version = version or new_version()
    models = registry.models_dir(settings)
    if await registry.get(session, version) is not None:
        raise RetrainError(f"a model version named {version} exists already")
    home = settings.data_dir / "retrain"
    run = home / "runs" / version
    subs = await split_submissions(session, home / "submissions", options.held_out_share)
    await session.commit()
    print(f"{active.version} is active; {len(subs.train_ids)} submissions to train on, "
          f"{len(subs.held_out_ids)} held out")
    if len(subs.held_out_ids) < options.min_held_out:  # the rule could not promote what it would train
        raise RetrainError(f"{len(subs.held_out_ids)} submissions are held out, and a candidate needs "
                           f"{options.min_held_out} to be promoted: not training (wait for more submissions)")

    counts = await anyio.to_thread.run_sync(write_split, run / "split.csv", options.data, options.split_file,
                                            subs.train, options.shared_images)
    cfg = FinetuneConfig(init=init, data=[*options.data, subs.train],
                         data_weights=[1.0] * len(options.data) + [options.submission_weight], out=run,
                         version=version, split_file=run / "split.csv", epochs=options.epochs, lr=options.lr,
                         ema=options.ema, batch=options.batch, seed=options.seed, device=options.device,
                         workers=options.workers, cache=settings.data_dir / "chips")

    def train_and_compare() -> tuple[Path, Path, Comparison]:
        weights, onnx, val = finetune(cfg)
        held_samples, _ = scan([subs.held_out])
        held = cached_training_chips(held_samples, cfg.cache, options.workers) if held_samples else val.subset(set())
        return weights, onnx, compare(active_onnx, onnx, val, held, options.seed)

    weights, onnx, comparison = await anyio.to_thread.run_sync(train_and_compare)
    decision = decide(comparison.validation_difference, comparison.held_out_difference,
                      min_held_out=options.min_held_out)
    table = summary_table(comparison)
    await anyio.to_thread.run_sync(plot_comparison, run / "comparison.png", comparison,
                                   f"{version} (candidate) against {active.version} (active)")

    served = models / f"{version}.onnx"
    sha256 = await anyio.to_thread.run_sync(install, onnx, weights, served)

    # A submission deleted while the candidate trained: it learnt from it, so it is never served.
    existing = {str(i) for i in (await session.exec(select(Submission.id))).all()}
    deleted_meanwhile = [i for i in subs.train_ids if i not in existing]
    if deleted_meanwhile:
        decision = Decision(False, f"{len(deleted_meanwhile)} submission(s) it was trained on were deleted "
                                   "while it trained")
    now_active = (await registry.active(session)).version
    if decision.promoted and now_active != active.version:  # an admin chose another model meanwhile
        decision = Decision(False, f"{now_active} was activated while it trained: it was compared with "
                                   f"{active.version}, not with the model now served")
    rule = {"promoted": decision.promoted, "why": decision.why, "min_held_out": options.min_held_out,
            "validation": asdict(comparison.validation_difference),
            "held_out": asdict(comparison.held_out_difference)}
    trained_on = {"data": [data_label(Path(d)) for d in options.data] + (["submissions"] if subs.train_ids else []),
                  "submissions": len(subs.train_ids),
                  "newest_submission": subs.newest.isoformat() if subs.newest else None,
                  "submission_ids": subs.train_ids, "held_out_submissions": len(subs.held_out_ids),
                  "shared_images": counts["shared_train"], "submission_weight": options.submission_weight,
                  "epochs": options.epochs}
    evaluation = {"validation": figures_json(comparison.validation["candidate"]),
                  "held_out": figures_json(comparison.held_out["candidate"]) if comparison.held_out["candidate"].n
                  else None,
                  "active_validation": figures_json(comparison.validation["active"]),
                  "active_held_out": figures_json(comparison.held_out["active"]) if comparison.held_out["active"].n
                  else None,
                  "rule": rule}
    await registry.add_candidate(session, version=version, weights_path=str(served.resolve()), sha256=sha256,
                                 parent_version=active.version, created_by="retrain", trained_on=trained_on,
                                 evaluation=evaluation)
    audit.record(session, action=audit.MODEL_RETRAIN, actor="admin", model_version=version,
                 detail={"parent": active.version, "promoted": decision.promoted,
                         "submissions": len(subs.train_ids), "held_out": len(subs.held_out_ids)})
    if decision.promoted:
        await registry.activate(session, version, actor="system")
    else:
        await registry.reject(session, version, reason=decision.why)
    forgotten = await forget_deleted(session, settings)
    await session.commit()

    summary = {"version": version, "parent": active.version, "promoted": decision.promoted, "why": decision.why,
               "trained_on": {k: v for k, v in trained_on.items() if k != "submission_ids"},
               "evaluation": evaluation, "forgotten": forgotten}
    verdict = "promoted" if decision.promoted else "rejected"
    text = f"{version} against {active.version}\n{table}\n\n{verdict}: {decision.why}\n"
    await anyio.to_thread.run_sync(write_summary, run, summary, text)
    return Outcome(version, decision.promoted, decision.why, table, run, forgotten)

