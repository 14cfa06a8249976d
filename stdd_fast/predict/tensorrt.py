"""TensorRT runtime: load a plan built by :func:`~stdd_fast.export.tensorrt_build.build_engine` and run it.

Device buffers are torch CUDA tensors; the engine is enqueued on torch's current stream of the
device, so outputs are ordered with whatever the caller does next on that stream.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from stdd_fast.deps import require
from stdd_fast.errors import ExportError, PlanMismatchError
from stdd_fast.graphs.plan import check_plan_compatible, gpu_info, read_sidecar, sidecar_spec
from stdd_fast.graphs.spec import INPUT_NAME, OUTPUT_NAMES, ExportSpec


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    for name, torch_dtype in (("bfloat16", torch.bfloat16), ("int64", torch.int64), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_dtype
    if dtype not in table:
        raise ExportError(f"the plan uses I/O dtype {dtype}, which stdd_fast does not map to torch")
    return table[dtype]


class TensorRTRunner:
    """Runs a TensorRT plan written by ``stdd-export --trt`` (with its ``.json`` sidecar beside it).

    ``runner(frames)``: frames [B, T, 3, S, S] CLIP-normalised float (or uint8 [B, T, S, S, 3] for
    a uint8-input export) on any device -> ``(scores [B, K], embeddings [B, T, D])`` float32 CUDA
    tensors on ``device``. Batches above the plan's max batch run in chunks; below its min batch
    they are zero-padded. Raises PlanMismatchError for a plan of another TensorRT version or GPU.
    """

    def __init__(self, plan: str | Path, device: str | torch.device = "cuda") -> None:
        self.plan_path = Path(plan)
        if not self.plan_path.is_file():
            raise PlanMismatchError(f"{self.plan_path}: no such plan; build one with `stdd-export --trt`")
        trt = require("tensorrt")  # before the sidecar: without TensorRT no plan can be served here
        self.sidecar = read_sidecar(self.plan_path)
        self.spec: ExportSpec = sidecar_spec(self.sidecar)
        device = torch.device(device)
        self.device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        check_plan_compatible(self.sidecar, trt.__version__, gpu_info(self.device), str(self.plan_path))
        data = self.plan_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sidecar.get("plan_sha256"):
            raise PlanMismatchError(
                f"{self.plan_path}: the plan does not match its sidecar (sha256 differs); "
                "rebuild both with stdd-export --trt"
            )
        with torch.cuda.device(self.device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            # A version-compatible or lean plan can embed host code that deserialising runs: never here.
            if hasattr(self._runtime, "engine_host_code_allowed"):
                self._runtime.engine_host_code_allowed = False
            self.engine = self._runtime.deserialize_cuda_engine(data)
            if self.engine is None:
                raise PlanMismatchError(
                    f"{self.plan_path}: TensorRT {trt.__version__} could not deserialize it (see its log); "
                    "rebuild it here with stdd-export --trt"
                )
            self.context = self.engine.create_execution_context()
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if names != {INPUT_NAME, *OUTPUT_NAMES}:
            raise PlanMismatchError(f"{self.plan_path}: I/O tensors {sorted(names)}, expected frames/scores/embeddings")
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        profile = self.sidecar["profile"]
        self.min_batch, self.max_batch = int(profile["min"]), int(profile["max"])

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.spec.check_frames(frames)
        parts = [self._run(chunk) for chunk in frames.split(self.max_batch)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _run(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = frames.shape[0]
        x = frames.to(self.device, self._dtypes[INPUT_NAME]).contiguous()
        if b < self.min_batch:
            pad = x.new_zeros((self.min_batch - b, *x.shape[1:]))
            x = torch.cat([x, pad])
        ctx = self.context
        if not ctx.set_input_shape(INPUT_NAME, tuple(x.shape)):
            raise ExportError(f"TensorRT rejected input shape {tuple(x.shape)} for {self.plan_path}")
        out = {
            n: torch.empty(tuple(ctx.get_tensor_shape(n)), dtype=self._dtypes[n], device=self.device)
            for n in OUTPUT_NAMES
        }
        ctx.set_tensor_address(INPUT_NAME, x.data_ptr())
        for n, t in out.items():
            ctx.set_tensor_address(n, t.data_ptr())
        # x and out stay referenced until this returns; later work on the same stream is ordered after.
        if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise ExportError(f"TensorRT failed to run {self.plan_path} (see its log)")
        return out["scores"][:b].float(), out["embeddings"][:b].float()

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"TensorRTRunner({str(self.plan_path)!r}, {s.arch}, {s.num_classes} classes, "
            f"{self.sidecar['precision']}, batch {self.min_batch}..{self.max_batch}, {self.device})"
        )
