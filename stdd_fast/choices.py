"""Every closed choice of the public API, as ``Literal`` types and their tuples of valid values.

Torch-free on purpose: the command line lists valid values in its help without importing torch
(``stdd --help`` stays fast), and one table here keeps the API, the CLI and the docs in agreement.
"""

from __future__ import annotations

from typing import Literal, get_args

# STCA implementation (stdd_fast.ops): "auto" = triton on CUDA, fused on CPU
Impl = Literal["reference", "fused", "triton", "auto"]
IMPLS: tuple[str, ...] = get_args(Impl)

# What turns clips into scores (stdd_fast.predict.contract); "auto": the fastest exact path on the device
Backend = Literal["auto", "torch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = get_args(Backend)

# Model dtypes by name (torch dtypes are accepted too); "fp8": bf16 weights, the STCA blocks' linears as fp8 GEMMs
DTYPE_NAMES: tuple[str, ...] = ("float32", "fp32", "float16", "fp16", "bfloat16", "bf16", "fp8")

# The format of the STCA blocks' linear layers (stdd_fast.fp8): None = the model's dtype
LINEAR_FORMATS: tuple[str | None, ...] = (None, "fp8")

# What the triton path's linear layers run (stdd_fast.triton_ops): the PyTorch piece (cuBLAS), the Triton GEMM
GEMMS: tuple[str, ...] = ("cublas", "triton")

# Opt-in quantisation of the ONNX Runtime CPU path's MatMul weights
QUANTIZE: tuple[str, ...] = ("int8",)

# torch.compile modes; compile=True means "default"
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)

# STCA eval-time shuffle (stdd_fast.config.STCAConfig)
ShuffleMode = Literal["none", "seeded", "official"]
SHUFFLE_MODES: tuple[str, ...] = get_args(ShuffleMode)

# Frame sampling protocol (stdd_fast.video.sampling)
SamplingMode = Literal["official", "uniform"]
SAMPLING_MODES: tuple[str, ...] = get_args(SamplingMode)

# Video decoders; an Engine also takes "auto" (DALI on a GPU for the codecs NVDEC decodes, else PyAV)
DecodeBackend = Literal["pyav", "dali"]
DECODE_BACKENDS: tuple[str, ...] = get_args(DecodeBackend)
DecodeChoice = Literal["auto", "pyav", "dali"]
DECODE_CHOICES: tuple[str, ...] = get_args(DecodeChoice)

# PyAV's YUV -> RGB conversion (stdd_fast.video.pyav)
YuvToRgb = Literal["default", "accurate"]
YUV_TO_RGB: tuple[str, ...] = get_args(YuvToRgb)

# Stream slow-consumer policy (stdd_fast.stream)
Backpressure = Literal["block", "drop"]
BACKPRESSURE: tuple[str, ...] = get_args(Backpressure)

# Engine.embed: a failing video raises, or its error takes its place
OnError = Literal["raise", "return"]
ON_ERRORS: tuple[str, ...] = get_args(OnError)

# Classifier building (stdd_fast.classifier / prompts)
Reduce = Literal["auto", "mean", "none"]
REDUCES: tuple[str, ...] = get_args(Reduce)
Match = Literal["position", "key"]
MATCHES: tuple[str, ...] = get_args(Match)
