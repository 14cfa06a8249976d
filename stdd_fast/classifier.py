"""The text classifier: baked text embeddings W and everything that identifies them (ARCHITECTURE §4.7).

``W`` is [K, N, D] (prompt level: ASKG/xprompt prompts, or templates kept apart) or [K, D]
(template average), float32, L2-normalised along D. A classifier is built once from a model's text
tower and saved as safetensors with its class names, prompts, templates, text-tower fingerprint and
logit scale; engines and exports are built from that file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from stdd_fast import prompts as P
from stdd_fast.checks import check_int
from stdd_fast.choices import MATCHES, REDUCES
from stdd_fast.decisions import Calibration, Decider
from stdd_fast.errors import ClassifierError, OutputError, choice_error
from stdd_fast.text import encode_texts, text_tower_fingerprint

FORMAT_TAG = "stdd_fast.classifier"
FORMAT_VERSION = "1"  # weights, classes and their provenance
DECISIONS_VERSION = "2"  # also decisions: calibrated thresholds, background prompts, classes by example
READABLE_VERSIONS = (FORMAT_VERSION, DECISIONS_VERSION)


@dataclass
class Classifier:
    """Text embeddings of K classes and their provenance.

    weights: float32 [K, N, D] or [K, D], unit-norm rows. prompts: the K x N prompt strings (for a
    template average, the K x Ntpl prompts averaged). logit_scale: log(tau) of the model that built
    it (engines score with their checkpoint's own value, STDD-SPEC §3.3).

    What decides (:mod:`stdd_fast.decisions`; none of it changes the ranking): calibration, per-class
    thresholds (:mod:`stdd_fast.calibrate`); background, the "none of these" descriptions, with their
    weights background_weights [M, N, D] | [M, D] built like the classes'; examples, for each class
    described by example clips (:mod:`stdd_fast.examples`), the clips its prototypes came from.
    """

    weights: torch.Tensor
    classes: list[str]
    prompts: list[list[str]] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    source: str = "external"
    text_tower: str = ""
    arch: str = ""
    logit_scale: float = math.log(100.0)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    calibration: Calibration | None = None
    background: list[str] = field(default_factory=list)
    background_weights: torch.Tensor | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, torch.Tensor) or not self.weights.is_floating_point():
            raise ClassifierError(f"classifier weights must be a float tensor; got {type(self.weights).__name__}")
        if self.weights.ndim not in (2, 3):
            raise ClassifierError(f"classifier weights must be [K, D] or [K, N, D]; got {tuple(self.weights.shape)}")
        if not isinstance(self.classes, list | tuple) or self.weights.shape[0] != len(self.classes):
            raise ClassifierError(
                f"classifier has {self.weights.shape[0]} weight rows but {len(self.classes)} class names"
            )
        self.classes = P.check_class_names(list(self.classes), "classifier")
        if not bool(torch.isfinite(self.weights).all()):
            rows = (~torch.isfinite(self.weights)).flatten(1).any(-1).nonzero().flatten().tolist()
            raise ClassifierError(
                f"classifier weights hold NaN/Inf (classes {[self.classes[i] for i in rows[:5]]}); rebuild it with "
                "`stdd build-classifier` from finite weights"
            )
        if not (isinstance(self.logit_scale, int | float) and math.isfinite(self.logit_scale)):
            raise ClassifierError(f"classifier logit_scale={self.logit_scale!r}: must be a finite number")
        self._check_decisions()

    def _check_decisions(self) -> None:
        c, bg = self.calibration, self.background_weights
        if c is not None and c.thresholds.shape[0] != self.num_classes:
            raise ClassifierError(
                f"the calibration holds {c.thresholds.shape[0]} thresholds for {self.num_classes} classes; calibrate "
                "this classifier again (stdd calibrate)"
            )
        if (bg is None) != (not self.background):
            raise ClassifierError("background descriptions and their weights come together; rebuild the classifier")
        if bg is not None:
            if bg.ndim != self.weights.ndim or bg.shape[0] != len(self.background) or bg.shape[-1] != self.embed_dim:
                raise ClassifierError(
                    f"background weights {tuple(bg.shape)} do not fit {len(self.background)} descriptions and the "
                    f"classes' weights {tuple(self.weights.shape)}; rebuild the classifier"
                )
            if not bool(torch.isfinite(bg).all()):
                raise ClassifierError("background weights hold NaN/Inf; rebuild the classifier")
            P.check_class_names(self.background, "background descriptions")
        unknown = sorted(set(self.examples) - set(self.classes))
        if unknown:
            raise ClassifierError(f"examples name classes {unknown[:5]} the classifier does not have")

    @property
    def decides(self) -> bool:
        """Whether this classifier carries decisions (calibrated thresholds or background prompts)."""
        return self.calibration is not None or self.background_weights is not None

    def decider(self, logit_scale: torch.Tensor | float) -> Decider | None:
        """Its decisions for a model with ``logit_scale`` (None when it carries none)."""
        if not self.decides:
            return None
        return Decider(self.classes, logit_scale, self.calibration, self.background_weights)

    @property
    def num_classes(self) -> int:
        return self.weights.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.weights.shape[-1]

    def to(self, device: str | torch.device) -> Classifier:
        self.weights = self.weights.to(device)
        if self.background_weights is not None:
            self.background_weights = self.background_weights.to(device)
        return self

    def check_compatible(self, embed_dim: int, text_tower: str | None = None) -> None:
        """Raise ClassifierError if this classifier cannot score a model with these properties."""
        if embed_dim != self.embed_dim:
            raise ClassifierError(
                f"classifier embeddings are {self.embed_dim}-d but the model's are {embed_dim}-d; "
                "rebuild the classifier with this model (stdd build-classifier)"
            )
        if text_tower and self.text_tower and text_tower != self.text_tower:
            raise ClassifierError(
                f"classifier was built by text tower {self.text_tower}, the model's is {text_tower}; "
                "rebuild it with this model's weights (stdd build-classifier)"
            )

    def save(self, path: str | Path) -> Path:
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        path = Path(path)
        meta = {
            "format": FORMAT_TAG,
            "version": DECISIONS_VERSION if self.decides or self.examples else FORMAT_VERSION,
            "classes": json.dumps(self.classes),
            "prompts": json.dumps(self.prompts),
            "templates": json.dumps(self.templates),
            "source": self.source,
            "text_tower": self.text_tower,
            "arch": self.arch,
            "logit_scale": repr(float(self.logit_scale)),
            "skipped": json.dumps(self.skipped),
        }
        tensors = {"weights": self.weights}
        if self.decides or self.examples:
            meta.update(background=json.dumps(self.background), examples=json.dumps(self.examples))
        if self.background_weights is not None:
            tensors["background_weights"] = self.background_weights
        if self.calibration is not None:
            meta["calibration"] = json.dumps(self.calibration.provenance)
            tensors.update(thresholds=self.calibration.thresholds, quantiles=self.calibration.quantiles)
        tensors = {name: t.detach().float().contiguous().cpu() for name, t in tensors.items()}
        try:
            save_file(tensors, str(path), metadata=meta)
        except (SafetensorError, OSError) as e:
            raise OutputError(f"{path}: cannot write the classifier here ({e})") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise ClassifierError(f"{path}: no such classifier file; build one with `stdd build-classifier`")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT_TAG:
                    raise ClassifierError(
                        f"{path}: not a stdd_fast classifier (format {meta.get('format')!r}); "
                        "build one with `stdd build-classifier` or Classifier.from_feature_file"
                    )
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, OSError, ValueError) as e:
            raise ClassifierError(f"{path}: not a readable classifier file ({e})") from None
        if meta.get("version") not in READABLE_VERSIONS:
            raise ClassifierError(
                f"{path}: classifier format version {meta.get('version')!r}, expected one of {READABLE_VERSIONS}"
            )
        if "weights" not in tensors:
            raise ClassifierError(f"{path}: the classifier file holds no weights; rebuild it")
        try:
            fields = {
                "classes": json.loads(meta["classes"]),
                "prompts": json.loads(meta["prompts"]),
                "templates": json.loads(meta["templates"]),
                "source": meta["source"],
                "text_tower": meta["text_tower"],
                "arch": meta["arch"],
                "logit_scale": float(meta["logit_scale"]),
                "skipped": json.loads(meta["skipped"]),
                "background": json.loads(meta.get("background", "[]")),
                "examples": json.loads(meta.get("examples", "{}")),
            }
            calibration = None
            if "thresholds" in tensors or "calibration" in meta:
                provenance = json.loads(meta["calibration"])
                calibration = Calibration(tensors["thresholds"], tensors["quantiles"], provenance)
        except KeyError as e:
            raise ClassifierError(f"{path}: the classifier's metadata lacks {e.args[0]!r}; rebuild it") from None
        except (ValueError, TypeError, RecursionError) as e:
            raise ClassifierError(f"{path}: the classifier's metadata is malformed ({type(e).__name__}: {e})") from None
        except ClassifierError as e:  # e.g. thresholds edited to NaN
            raise ClassifierError(f"{path}: {e}") from None
        kinds = {"classes": list, "prompts": list, "templates": list, "skipped": dict}
        kinds.update(background=list, examples=dict)
        wrong = [k for k, kind in kinds.items() if not isinstance(fields[k], kind)]
        if wrong:
            raise ClassifierError(f"{path}: the metadata field {wrong[0]!r} has the wrong type; rebuild the classifier")
        try:
            return cls(
                weights=tensors["weights"],
                calibration=calibration,
                background_weights=tensors.get("background_weights"),
                **fields,
            )
        except ClassifierError as e:
            raise ClassifierError(f"{path}: {e}") from None

    @classmethod
    def from_feature_file(cls, path: str | Path, classes: Sequence[str]) -> Classifier:
        """Wrap an official text-feature ``.pt`` ([K, N, D] raw embeddings; normalised here, SPEC §3.1)."""
        path = Path(path)
        if not path.is_file():
            raise ClassifierError(f"{path}: no such text-feature file")
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable pickle is the same user error here
            raise ClassifierError(f"{path}: not a readable text-feature tensor ({type(e).__name__}: {e})") from None
        if not isinstance(feats, torch.Tensor):
            raise ClassifierError(f"{path}: holds a {type(feats).__name__}, expected a [K, N, D] tensor")
        return cls(F.normalize(feats.float(), dim=-1), list(classes), source=f"feature-file:{path.name}")


def build_classifier(
    model: torch.nn.Module,
    classes: Sequence[str] | None = None,
    xprompt: str | Path | None = None,
    askg: str | Path | None = None,
    templates: Sequence[str] | None = None,
    match: str = "position",
    reduce: str = "auto",
    batch_size: int = 256,
    progress: bool = False,
    background: bool | Sequence[str] = False,
) -> Classifier:
    """Encode class prompts with the model's text tower into a :class:`Classifier`.

    * ``xprompt``: an official ``classes_xprompt_*.yml`` -> prompt level W [K, Ntpl*Nmax, D];
    * ``askg``: an official ``classes_ASKG_*.yml``, rendered to clauses by fixed rules -> same;
    * neither: plain templates -> [K, D] (``reduce="mean"``, the released template average:
      normalise per template, average, renormalise) or [K, Ntpl, D] (``reduce="none"``).

    ``classes``: names in label order (None: the keys of the xprompt/ASKG file). ``match``:
    ``"position"`` pairs names with file entries in order (as released), ``"key"`` by name.
    ``templates``: default the 8 STDD templates. ``background``: also encode "none of these"
    descriptions a class must beat to be detected (:mod:`stdd_fast.decisions`): True, the default set
    (:data:`stdd_fast.prompts.DEFAULT_BACKGROUND`), or a list of yours added to it; encoded with the
    same templates and reduction as the classes.
    """
    if reduce not in REDUCES:
        raise choice_error("reduce", reduce, REDUCES)
    if match not in MATCHES:
        raise choice_error("match", match, MATCHES)
    check_int("batch_size", batch_size, hint="prompts per text-tower forward", error=ClassifierError)
    if isinstance(classes, str):
        raise ClassifierError(f"classes={classes!r} is one string: pass a list of names (e.g. {classes!r}.split(','))")
    if xprompt is not None and askg is not None:
        raise ClassifierError("pass either xprompt= or askg=, not both")
    templates = list(templates) if templates is not None else list(P.STDD_TEMPLATES)
    if not templates or not all("{}" in t for t in templates):
        raise ClassifierError(f"templates must be a non-empty list of strings containing '{{}}'; got {templates!r}")

    skipped: dict[str, list[str]] = {}
    if xprompt is not None or askg is not None:
        if xprompt is not None:
            entries, source = P.read_xprompt(xprompt), f"xprompt:{Path(xprompt).name}"
        else:
            entries, skipped = P.read_askg(askg)
            source = f"askg:{Path(askg).name}"
        names = list(entries) if classes is None else list(classes)
        clauses = P.match_classes(names, entries, match, source)
    else:
        if not classes:
            raise ClassifierError("no class names given: pass classes=[...] (or an xprompt/ASKG file)")
        names, clauses, source = list(classes), [[] for _ in classes], "templates"
    blank = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if blank:
        raise ClassifierError(
            f"class names must be non-empty strings; classes[{blank[0]}] is {names[blank[0]]!r} ({len(blank)} such)"
        )
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ClassifierError(f"duplicate class names {dupes[:5]}: each class must appear once")
    P.check_class_names(names, "classes")  # control characters

    grid = P.prompt_grid(names, clauses, templates)  # K x N strings
    k, n = len(grid), len(grid[0])
    flat = [p for row in grid for p in row]
    weights = encode_texts(model, flat, batch_size=batch_size, progress=progress).view(k, n, -1)  # [K, N, D]
    if reduce == "mean" or (reduce == "auto" and source == "templates"):
        weights = F.normalize(weights.mean(1), dim=-1)  # [K, D]
    described = _background(background)
    background_weights = None
    if described:
        bg_grid = P.prompt_grid(described, [[] for _ in described], templates)
        bg = encode_texts(model, [t for row in bg_grid for t in row], batch_size=batch_size).view(
            len(described), -1, weights.shape[-1]
        )
        background_weights = F.normalize(bg.mean(1), dim=-1) if weights.ndim == 2 else bg  # reduced as the classes
    arch = getattr(model, "arch", None)
    return Classifier(
        weights=weights.cpu(),
        classes=names,
        prompts=grid,
        templates=templates,
        source=source,
        text_tower=text_tower_fingerprint(model),
        arch=arch.name if arch else "",
        logit_scale=float(model.logit_scale.detach().float()),
        skipped=skipped,
        background=described,
        background_weights=None if background_weights is None else background_weights.cpu(),
    )


def _background(background: bool | Sequence[str]) -> list[str]:
    """The background descriptions ``build_classifier(background=...)`` asks for (checked)."""
    if background is False or background is None:
        return []
    if background is True:
        return list(P.DEFAULT_BACKGROUND)
    if isinstance(background, str) or not isinstance(background, Sequence):
        raise ClassifierError(f"background={background!r}: pass True (the default set) or a list of descriptions")
    extra = [b for b in background if b not in P.DEFAULT_BACKGROUND]
    return P.check_class_names([*P.DEFAULT_BACKGROUND, *extra], "background descriptions")
