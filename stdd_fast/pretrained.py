"""Weights by name: open_clip's pretrained names (``ViT-B-16/openai``) and Hugging Face repos (``hf-hub:org/repo``).

STCA adds no parameters, so OpenAI's CLIP ViT-B/16 is a working zero-shot STDD model as it is. A name
resolves to the file open_clip's pretrained table names for it (its ``hf_hub`` repo; open_clip's
safetensors file first, then its pickle, as open_clip looks for them), kept in the usual Hugging Face
cache (``~/.cache/huggingface/hub``; ``HF_HOME`` / ``HF_HUB_CACHE`` move it): read from there when it
is cached, downloaded there once when it is not, never downloaded while ``HF_HUB_OFFLINE=1`` (a name not
cached is then one :class:`~stdd_fast.errors.CheckpointError` line saying so). The file's sha256 is
computed, checked against the cache's content-addressed name for it, and said on stderr
(:mod:`stdd_fast.notices`); :func:`stdd_fast.load_model` records it in ``checkpoint_info``.

An existing path always wins: ``ViT-B-16/openai`` is a name only where no such file exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from stdd_fast.errors import CheckpointError
from stdd_fast.notices import notice

HUB_PREFIX = "hf-hub:"
# what open_clip keeps in a hub repo (open_clip.constants: HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, HF_CONFIG_NAME)
WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CONFIG_FILE = "open_clip_config.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class NamedWeights:
    """The file a name resolved to: ``repo`` / ``filename`` on the hub, its ``sha256``, and whether the model
    uses QuickGELU (None: the name does not say)."""

    name: str
    path: Path
    repo: str
    filename: str
    sha256: str
    quick_gelu: bool | None


def _open_clip_name(weights: str) -> tuple[str, str] | None:
    """(model, tag) when ``weights`` is ``<open_clip model>/<pretrained tag>`` (the tag may be unknown)."""
    import open_clip

    model, _, tag = weights.rpartition("/")
    return (model, tag) if model in open_clip.list_models() else None


def is_name(weights: object) -> bool:
    """Whether ``weights`` names pretrained weights rather than a file (an existing path is always a file)."""
    if not isinstance(weights, str) or Path(weights).exists():
        return False
    return weights.startswith(HUB_PREFIX) or _open_clip_name(weights) is not None


def _hub_files(weights: str) -> tuple[str, tuple[str, ...], bool | None]:
    """(repo, candidate files, QuickGELU or None) of a name."""
    import open_clip

    if weights.startswith(HUB_PREFIX):
        parts = weights.removeprefix(HUB_PREFIX).strip("/").split("/")
        if len(parts) < 2 or not all(parts):
            raise CheckpointError(f"{weights}: name a Hugging Face repo as hf-hub:ORG/REPO (or hf-hub:ORG/REPO/FILE)")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        return repo, _candidates(filename), None
    model, tag = _open_clip_name(weights)
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise CheckpointError(f"{weights}: no such file, and {tag!r} is no pretrained tag of {model}; its tags: {tags}")
    if not cfg.get("hf_hub"):
        raise CheckpointError(
            f"{weights}: open_clip has this model at a URL only, not on the Hugging Face hub ({cfg.get('url')}): "
            "download the file and pass its path"
        )
    repo, filename = cfg["hf_hub"].rstrip("/"), ""
    if repo.count("/") > 1:  # "org/repo/file.bin": open_clip names the file too
        repo, filename = repo.rsplit("/", 1)
    quick_gelu = bool(cfg.get("quick_gelu") or (open_clip.get_model_config(model) or {}).get("quick_gelu"))
    return repo, _candidates(filename), quick_gelu


def _candidates(filename: str) -> tuple[str, ...]:
    """The files to look for, safetensors first, as open_clip does (``pretrained._get_safe_alternatives``)."""
    if not filename or filename == WEIGHTS_FILES[1]:
        return WEIGHTS_FILES
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors", filename)
    return (filename,)


def _fetch(name: str, repo: str, files: tuple[str, ...]) -> tuple[Path, str]:
    """(the cached file, its name in the repo): from the cache, else downloaded into it (never while offline)."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    for filename in files:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found), filename
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(
            f"{name}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}: {repo}, {' or '.join(files)}) and "
            "HF_HUB_OFFLINE=1 forbids downloading it: run once without HF_HUB_OFFLINE, or pass the file's path"
        )
    notice(
        f"{name}: downloading {repo} from the Hugging Face hub into {constants.HF_HUB_CACHE} (once; later runs read it)"
    )
    for filename in files:
        try:
            return Path(hf_hub_download(repo, filename)), filename
        except EntryNotFoundError:
            continue  # the safetensors alternative is not in every repo
        except Exception as e:  # network, authentication, a missing repo: one line naming it
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{name}: could not download {repo}/{filename} ({type(e).__name__}: {first})"
            ) from None
    raise CheckpointError(f"{name}: the Hugging Face repo {repo} holds none of {', '.join(files)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_quick_gelu(repo: str) -> bool | None:
    """QuickGELU or not, from the repo's open_clip config when it is cached (None: not said)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, CONFIG_FILE)
    if not isinstance(found, str):
        return None
    try:
        cfg = json.loads(Path(found).read_text(encoding="utf-8")).get("model_cfg", {})
    except (OSError, ValueError, AttributeError):
        return None
    return bool(cfg.get("quick_gelu", False))


def resolve(name: str) -> NamedWeights:
    """The cached file of the pretrained weights ``name`` (downloaded first when online and not cached).

    CheckpointError (one line) when the name is unknown, not cached while offline, cannot be downloaded, or
    the cached file's bytes do not match its content address (a corrupt download: delete it and rerun).
    """
    repo, files, quick_gelu = _hub_files(name)
    path, filename = _fetch(name, repo, files)
    sha256 = _sha256(path)
    blob = path.resolve().name  # the cache stores large files under their sha256
    if _SHA256.fullmatch(blob) and blob != sha256:
        raise CheckpointError(
            f"{name}: the cached {path} does not match its sha256 {blob} (a corrupt download): delete it and rerun"
        )
    notice(f"weights {name}: {path} (sha256 {sha256})")
    return NamedWeights(
        name, path, repo, filename, sha256, quick_gelu if quick_gelu is not None else _hub_quick_gelu(repo)
    )
