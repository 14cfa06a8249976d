"""ONNX Runtime backend: run an exported STDD graph, the spec read back from its metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from stdd_fast.graphs.spec import INPUT_NAME, OUTPUT_NAMES, ExportSpec, spec_from_metadata
from stdd_fast.predict import onnx_session


class OnnxRuntimeRunner:
    """Runs an ONNX file written by :func:`stdd_fast.export.export_onnx`.

    ``runner(frames)`` takes [B, T, 3, S, S] CLIP-normalised float frames (or, for a graph exported
    with ``uint8_input``, [B, T, S, S, 3] uint8) as a torch tensor on any device, and returns
    ``(scores [B, K], embeddings [B, T, D])`` float32 torch tensors on the device of ``frames``.
    ``spec`` holds class names, classifier fingerprint, input layout and precision.
    """

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        session_options: object | None = None,
    ) -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        options = session_options or onnx_session.session_options(threads)
        self.session = onnx_session.open_session(self.path, self.device, options)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.spec: ExportSpec = spec_from_metadata(dict(meta), str(self.path))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.spec.check_frames(frames)
        x = frames.detach().to("cpu", self.spec.input_dtype).contiguous().numpy()
        scores, emb = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return torch.from_numpy(scores).to(frames.device), torch.from_numpy(emb).to(frames.device)

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"OnnxRuntimeRunner({str(self.path)!r}, {s.arch}, {s.num_classes} classes, input "
            f"[{', '.join(map(str, s.input_shape()))}] {s.input_dtype}, providers={self.session.get_providers()})"
        )
