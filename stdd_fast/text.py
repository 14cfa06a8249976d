"""The text side: open_clip's tokenizer and the (frozen) CLIP text tower."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from stdd_fast.terminal import progress_bar

TEXT_TOWER_PREFIXES = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection")


@lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """CLIP BPE tokens (lower-cased, SOT/EOT, truncated to the context): LongTensor [len(texts), context]."""
    return _tokenizer(context_length)(list(texts))


@torch.no_grad()
def encode_texts(model: nn.Module, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """L2-normalised text embeddings: float32 [len(texts), embed_dim]. Each distinct string is encoded once."""
    unique = list(dict.fromkeys(texts))
    device = model.token_embedding.weight.device
    chunks = range(0, len(unique), batch_size)
    bar = progress_bar(len(chunks), progress, "encoding prompts", "batch")
    out = []
    for start in chunks:
        tokens = tokenize(unique[start : start + batch_size], model.context_length).to(device)
        out.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
        bar.update(1)
    bar.close()
    table = torch.cat(out) if out else torch.empty(0, model.text_projection.shape[1])
    position = {s: i for i, s in enumerate(unique)}
    return table[torch.tensor([position[s] for s in texts], dtype=torch.long, device=table.device)]


def text_tower_fingerprint(model: nn.Module) -> str:
    """sha256 (first 16 hex digits) of the text tower's weights in fp32: identifies what built a classifier."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(TEXT_TOWER_PREFIXES):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
