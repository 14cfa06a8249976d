"""Zero-shot evaluation with the official protocol over one or several split files (STDD-SPEC §6-7).

Each video goes through :class:`stdd_fast.Engine` (official 3-view sampling, centre crop, the
engine's STCA path and scoring head, logits summed over views). Metrics per split: top-1 and
top-k accuracy, per-class accuracy and its mean, the confusion matrix; over the splits: mean and
standard deviation (population, ``ddof = 0``) of each, as in the UCF101 / HMDB51 / K600 protocol.
All accuracies are percentages. A video that cannot be read is skipped and listed; accuracies are
over the videos evaluated.

Sharding under torchrun: process r evaluates videos r, r + W, ... and the per-video logits are
gathered in list order. Each forward encodes one video's views (``batch_clips = views``), so a
video's logits are the same bits whatever the process count, and the sharded result is exactly
the single-process one (with deterministic STCA, i.e. ``shuffle`` "none" or "seeded").
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from stdd_fast.classifier import Classifier, build_classifier
from stdd_fast.devices import resolve_device
from stdd_fast.engine import Engine
from stdd_fast.errors import ClassifierError
from stdd_fast.model import STDDModel
from stdd_fast.predict.config import PredictorConfig
from stdd_fast.prompts import read_class_names
from stdd_fast.settings import settings
from stdd_fast.training import dist
from stdd_fast.training.data import VideoItem, read_video_list
from stdd_fast.video.config import DecodeConfig, SamplingConfig


def accuracy_metrics(labels: torch.Tensor, logits: torch.Tensor, classes: Sequence[str], top_k: int = 5) -> dict:
    """Accuracies of predictions. labels: LongTensor [N]; logits: [N, K] (valid rows only).

    Returns top1, top{k} (k capped at K), mean_class_accuracy (over classes with samples),
    per_class {name: percent or None without samples} and confusion [K][K] counts (row = true class).
    """
    num_classes = len(classes)
    k = min(top_k, num_classes)
    n = labels.numel()
    if n == 0:
        per_class = dict.fromkeys(classes)
        return {"top1": None, f"top{top_k}": None, "mean_class_accuracy": None, "per_class": per_class, "confusion": []}
    pred = logits.argmax(dim=-1)
    topk = logits.topk(k, dim=-1).indices  # [N, k]
    hit1 = pred == labels
    hitk = (topk == labels[:, None]).any(dim=-1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for c, name in enumerate(classes):
        count = int(confusion[c].sum())
        per_class[name] = 100.0 * int(confusion[c, c]) / count if count else None
    seen = [v for v in per_class.values() if v is not None]
    return {
        "top1": 100.0 * hit1.double().mean().item(),
        f"top{top_k}": 100.0 * hitk.double().mean().item(),
        "mean_class_accuracy": sum(seen) / len(seen),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation (ddof 0) of the non-None values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))


def plot_confusion(
    confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Save a row-normalised confusion matrix (true class down, predicted across) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    cm = torch.tensor(confusion, dtype=torch.float64)
    rows = cm.sum(dim=1, keepdim=True).clamp_min(1)
    k = len(classes)
    side = min(4 + 0.25 * k, 40)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow((cm / rows).numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 60:  # beyond that tick labels are unreadable
        ax.set_xticks(range(k), labels=classes, rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels=classes, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def classify_split(
    engine: Engine,
    items: Sequence[VideoItem],
    env: dist.DistEnv,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """View-summed logits of every video, sharded over processes and gathered in list order.

    Returns logits float32 [N, K] (NaN rows where a video failed), valid [N] bool, and the errors
    by list index.
    """
    mine = list(range(env.rank, len(items), env.world_size))
    results = engine.classify([items[i].path for i in mine], top_k=1, progress=progress and env.is_main)
    local = [
        (i, r.logits if r.ok else None, None if r.ok else f"{type(r.error).__name__}: {r.error}")
        for i, r in zip(mine, results, strict=True)
    ]
    num_classes = len(engine.classes)
    logits = torch.full((len(items), num_classes), float("nan"))
    valid = torch.zeros(len(items), dtype=torch.bool)
    errors = {}
    for part in dist.all_gather_objects(env, local):
        for i, row, error in part:
            if row is None:
                errors[i] = error
            else:
                logits[i] = row.float()
                valid[i] = True
    return logits, valid, errors


def load_split_classifier(
    model: STDDModel,
    classes_file: str | Path | None,
    classifier: str | Path | Classifier | None = None,
    xprompt: str | Path | None = None,
    askg: str | Path | None = None,
) -> Classifier:
    """The classifier of one split: a saved artifact (checked against the class list), or built
    from the class names with ``xprompt`` / ``askg`` prompts or the 8 STDD templates (model in fp32)."""
    names = read_class_names(classes_file) if classes_file is not None else None
    if classifier is not None:
        clf = classifier if isinstance(classifier, Classifier) else Classifier.load(classifier)
        if names is not None and clf.classes != names:
            raise ClassifierError(
                f"the classifier's {clf.num_classes} classes differ from the {len(names)} of {classes_file}; "
                "rebuild it for this class list or drop --classes-file"
            )
        return clf
    if names is None:
        raise ClassifierError("no class list: pass --classes-file index2cls.json (or --classifier ART)")
    with torch.no_grad():
        return build_classifier(model, names, xprompt=xprompt, askg=askg)


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def evaluate_splits(
    model: STDDModel,
    csvs: Sequence[str | Path],
    classes_files: Sequence[str | Path | None],
    prefix: str | Path = "",
    classifier: str | Path | Classifier | None = None,
    xprompt: str | Path | None = None,
    askg: str | Path | None = None,
    output_dir: str | Path | None = None,
    env: dist.DistEnv | None = None,
    top_k: int = 5,
    progress: bool = False,
    save_logits: bool = False,
    plot: bool = True,
    predictor: PredictorConfig | None = None,
    sampling: SamplingConfig | None = None,
    decode: DecodeConfig | None = None,
    **options: object,
) -> dict:
    """Evaluate ``model`` on each split file and summarise (mean ± std over the splits).

    csvs: one or more ``relative/path,label`` lists; classes_files: one index->class JSON for all,
    or one per split (K600 splits each have their own). ``predictor`` / ``sampling`` / ``decode``: the
    :class:`Engine`'s config objects, or their fields flat in ``options`` (device, dtype, impl,
    num_views, num_frames, sampling_rate, target_fps, decode_workers, batch_clips...; ``batch_clips``
    defaults to ``num_views``: one video per forward).
    Writes ``report.json``, ``confusion_<split>.png`` (and ``logits_<split>.pt`` with
    ``save_logits``) to ``output_dir`` on the main process. Returns the report dict.
    """
    chosen = settings(options, predictor=predictor, sampling=sampling, decode=decode)
    env = env or dist.DistEnv(device=resolve_device(chosen.predictor.device))
    config = dataclasses.replace(
        chosen.predictor,
        device=str(env.device),
        batch_clips=chosen.predictor.batch_clips or chosen.sampling.num_views,
    )
    csvs = [str(c) for c in csvs]
    if len(classes_files) not in (1, len(csvs)):
        raise ClassifierError(
            f"give one class list for all splits or one per split; got {len(classes_files)} for {len(csvs)} splits"
        )
    per_split = list(classes_files) * len(csvs) if len(classes_files) == 1 else list(classes_files)
    # Classifiers first, while the model is still fp32 (the engine may cast it).
    classifiers: dict[str, Classifier] = {}
    for cf in per_split:
        key = str(cf)
        if key not in classifiers:
            classifiers[key] = load_split_classifier(model, cf, classifier, xprompt, askg)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None and env.is_main:
        out.mkdir(parents=True, exist_ok=True)

    splits, engines = [], {}
    for i, (csv, cf) in enumerate(zip(csvs, per_split, strict=True)):
        clf = classifiers[str(cf)]
        if str(cf) not in engines:
            engines[str(cf)] = Engine(
                model, classifier=clf, predictor=config, sampling=chosen.sampling, decode=chosen.decode
            )
        engine = engines[str(cf)]
        items = read_video_list(csv, prefix, clf.num_classes)
        logits, valid, errors = classify_split(engine, items, env, progress)
        labels = torch.tensor([it.label for it in items], dtype=torch.long)
        name = f"split{i + 1}"
        metrics = accuracy_metrics(labels[valid], logits[valid], clf.classes, top_k)
        entry = {
            "name": name,
            "csv": csv,
            "classes_file": None if cf is None else str(cf),
            "classifier": clf.source,
            "num_classes": clf.num_classes,
            "videos": len(items),
            "evaluated": int(valid.sum()),
            "skipped": len(errors),
            "skipped_videos": [{"path": items[j].path, "error": e} for j, e in sorted(errors.items())],
            **metrics,
        }
        if out is not None and env.is_main:
            if plot and metrics["confusion"]:
                png = plot_confusion(metrics["confusion"], clf.classes, out / f"confusion_{name}.png", f"{name}: {csv}")
                entry["confusion_png"] = str(png)
            if save_logits:
                lf = out / f"logits_{name}.pt"
                paths = [it.path for it in items]
                torch.save({"logits": logits, "labels": labels, "valid": valid, "paths": paths}, lf)
                entry["logits_file"] = str(lf)
        splits.append(entry)

    summary_keys = ("top1", f"top{top_k}", "mean_class_accuracy")
    mean, std = {}, {}
    for key in summary_keys:
        mean[key], std[key] = mean_std([s[key] for s in splits])
    first = next(iter(engines.values()))
    report = {
        "splits": splits,
        "mean": mean,
        "std": std,
        "std_ddof": 0,
        "unit": "percent",
        "config": {
            "arch": model.arch.name,
            "checkpoint": getattr(getattr(model, "checkpoint_info", None), "path", None),
            "views": first.sampling.num_views,
            "frames": first.sampling.num_frames,
            "sampling_rate": first.sampling.sampling_rate,
            "target_fps": first.sampling.target_fps,
            "sampling": first.sampling.mode,
            "impl": model.impl,
            "device": str(env.device),
            "dtype": str(first.dtype),
            "world_size": env.world_size,
            "stca_shuffle": model.stca.shuffle if model.stca is not None else None,
        },
    }
    if out is not None and env.is_main:
        report["report_json"] = str(write_report(report, out / "report.json"))
    return report
