"""ONNX Runtime backend: run an exported STDD graph, the spec read back from its metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from stdd_fast.deps import require
from stdd_fast.errors import BackendUnavailableError, ConfigError
from stdd_fast.export.spec import INPUT_NAME, OUTPUT_NAMES, ExportSpec, spec_from_metadata


def _providers(ort, device: torch.device) -> list:
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime {ort.__version__} here has no CUDA execution provider (has "
                f"{ort.get_available_providers()}); pip install onnxruntime-gpu, or use device='cpu'"
            )
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    raise ConfigError(f"OnnxRuntimeRunner device {str(device)!r}: use 'cpu' or 'cuda[:N]'")


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
        ort = require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such ONNX file; export one with `stdd-export --onnx`")
        self.device = torch.device(device)
        opts = session_options or ort.SessionOptions()
        if threads is not None and session_options is None:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=_providers(ort, self.device))
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise ConfigError(f"{self.path}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
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
