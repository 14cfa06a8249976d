"""Every Triton kernel launch compiled for a Hopper GPU (sm_90a) without one: its resources against the card's limits.

Triton compiles for a named target ahead of time; a GPU is only needed to load the binary. This
script runs each kernel launcher at ViT-B/16 and ViT-L/14 shapes (one frame batch, 8 frames), in each
dtype and for every launch shape its tuner may pick, with the launch replaced by compilation. It
reads each binary's shared memory (Triton's metadata: what the launch asks for), registers per
thread and stack (``cuobjdump``, which ships with Triton), and counts its tensor-core instructions.
A launch over the limits raises ``OutOfResources`` on the GPU, as the one-tile sparse kernel at
L/14 did on an H100 (491520 bytes of shared memory asked, 232448 allowed): this finds such
launches on a CPU machine.

    python benchmarks/kernel_resources.py [--dtypes fp32,bf16,fp16] [--defaults-only] [--json out.json]

Exit status 1 when a launch does not compile, or one a launcher makes by default (no tuning) exceeds
the limits (a tuned candidate over them is skipped by the tuner on the GPU). Spilling
(stack > 0) is reported, not failed: fp32 kernels run ``tl.dot`` on FMA units and spill by design.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not the interpreter: before stdd_fast.kernels

import torch
import torch.nn.functional as F
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

from stdd_fast import create_model, kernels
from stdd_fast.config import get_arch
from stdd_fast.kernels.linear import TILES as LINEAR_TILES
from stdd_fast.kernels.scatter_residual import TILES
from stdd_fast.kernels.sparse_attention import head_groups
from stdd_fast.stca.pieces import sparse_attention_inputs

SM90 = GPUTarget("cuda", 90, 32)
# H100 / H200 (compute capability 9.0): the opt-in shared memory per block and per SM, registers per SM
MAX_SHARED_PER_BLOCK = 232448
SHARED_PER_SM = 233472
REGISTERS_PER_SM = 65536
MAX_REGISTERS_PER_THREAD = 255
MAX_WARPS_PER_SM = 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@dataclasses.dataclass
class Launch:
    """One compiled launch and what it needs from an SM."""

    kernel: str
    arch: str
    dtype: str
    config: str
    default: bool  # what the launcher launches without tuning
    warps: int
    shared_bytes: int
    registers: int
    stack_bytes: int
    tensor_core_ops: int  # wgmma / mma instructions in the PTX (0: any tl.dot runs on FMA units)

    @property
    def fits(self) -> bool:
        threads = 32 * self.warps
        registers_ok = self.registers <= MAX_REGISTERS_PER_THREAD and self.registers * threads <= REGISTERS_PER_SM
        return self.shared_bytes <= MAX_SHARED_PER_BLOCK and registers_ok

    @property
    def blocks_per_sm(self) -> int:
        """Resident blocks per SM (register, shared memory and warp limits; allocation granularity ignored)."""
        by_regs = REGISTERS_PER_SM // max(1, self.registers * 32 * self.warps)
        by_shared = SHARED_PER_SM // (self.shared_bytes + 1024) if self.shared_bytes else 32
        return min(by_regs, by_shared, MAX_WARPS_PER_SM // self.warps, 32)


class _CompileOnlyDriver:
    """Just enough of Triton's active driver to compile for ``target`` on a machine with no GPU."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return self.target

    def is_active(self) -> bool:
        return True


@contextlib.contextmanager
def compile_only() -> Iterator[list[tuple[str, object]]]:
    """Inside, every ``kernel[grid](...)`` compiles for the active target instead of launching.

    Yields the (kernel name, CompiledKernel) list it fills. Needs :func:`install_compile_only_driver`
    on a machine without a GPU.
    """
    compiled: list[tuple[str, object]] = []
    launch = JITFunction.run

    def compile_instead(self, *args, grid, warmup, **kwargs):
        kernel = launch(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append((self.fn.__name__, kernel))
        return kernel

    JITFunction.run = compile_instead
    try:
        yield compiled
    finally:
        JITFunction.run = launch


def install_compile_only_driver(target: GPUTarget = SM90) -> None:
    """Make ``target`` this process's Triton target (for good: Triton cannot restore a GPU-less default)."""
    driver.set_active(_CompileOnlyDriver(target))


def binary_resources(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of a cubin, as ``cuobjdump --dump-resource-usage`` reads them."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True)
    found = re.search(r"REG:(\d+) STACK:(\d+)", text.stdout)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{text.stdout}{text.stderr}")
    return int(found.group(1)), int(found.group(2))


def one_block_arch(name: str):
    """``name``'s architecture with one vision layer: the kernels see its real widths, heads and grid."""
    return dataclasses.replace(get_arch(name), name=f"{name}-one-block", vision_layers=1, text_layers=1)


def kernel_calls(arch_name: str, dtype: torch.dtype, defaults_only: bool) -> Iterator[tuple[str, bool, Callable]]:
    """(config label, is the untuned default, call) for every launch the launchers may make at this shape."""
    model = create_model(one_block_arch(arch_name), seed=0)
    block = model.blocks[0].to(dtype)
    arch, frames = model.arch, 8
    width = arch.vision_width
    x = torch.randn(frames, arch.tokens_per_frame, width).to(dtype)
    vis, src = block.visible_tokens(1, frames, x.device), block.index.source_maps(frames, x.device)
    with torch.no_grad():
        qkv, x, mean, rstd, vis, src, proj, heads = sparse_attention_inputs(block, x, vis, src)
    sparse = (qkv, x, mean, rstd, vis, src, proj.const, proj.gain_sum, proj.head, heads)
    blocked = not kernels.fits_one_tile(vis.shape[2])  # as the triton path launches it
    ln = block.ln_1
    yield "plain", True, lambda: kernels.layer_norm(x, ln.weight, ln.bias, ln.eps)
    yield "residual", True, lambda: kernels.residual_layer_norm(x, x, ln.weight, ln.bias, ln.eps)
    # fp32 also takes the three-TF32 dots: a choice (triton_ops.use_fp32_sparse_attention), never a default
    dots = kernels.FP32_DOTS if dtype == torch.float32 and not defaults_only else ("ieee",)
    for fp32_dot in dots:
        groups = head_groups(heads, tf32x3_tile=fp32_dot == "tf32x3" and not blocked)
        for group in groups[:1] if defaults_only else groups:
            label = f"heads_per_program={group}" + (f",fp32_dot={fp32_dot}" if fp32_dot != "ieee" else "")
            yield (
                label,
                group == groups[0] and fp32_dot == "ieee",
                lambda g=group, p=fp32_dot: kernels.sparse_attention(
                    *sparse, blocked=blocked, heads_per_program=g, fp32_dot=p
                ),
            )
    sparse_proj = torch.randn(frames, vis.shape[2] + 1, width).to(dtype)
    for tile in TILES[:1] if defaults_only else TILES:
        label = ",".join(f"{k}={v}" for k, v in tile.items())
        yield label, tile == TILES[0], lambda t=tile: kernels.scatter_residual(x, x, x, sparse_proj, vis, src, tile=t)
    if dtype == torch.float32:  # the head computes in fp32 whatever the embeddings' dtype
        f = F.normalize(torch.randn(32, frames, arch.embed_dim), dim=-1)
        w = F.normalize(torch.randn(400, 224, arch.embed_dim), dim=-1)
        yield "K=400,N=224", True, lambda: kernels.score(f, w, 4.6)
    yield from linear_calls(block, x, defaults_only)


def linear_calls(block, x: torch.Tensor, defaults_only: bool) -> Iterator[tuple[str, bool, Callable]]:
    """The block's four GEMMs on rows like ``x`` (QKV, out-projection, MLP fc1 with its SiLU epilogue, fc2),
    at every launch shape :func:`kernels.linear` may be tuned to."""
    attn, mlp = block.attn, block.mlp
    gemms = (
        ("qkv", attn.in_proj_weight, attn.in_proj_bias, None),
        ("out_proj", attn.out_proj.weight, attn.out_proj.bias, None),
        ("fc1", mlp.c_fc.weight, mlp.c_fc.bias, "silu"),
        ("fc2", mlp.c_proj.weight, mlp.c_proj.bias, None),
    )
    tiles = LINEAR_TILES[x.dtype]
    for name, weight, bias, activation in gemms:
        rows = torch.randn(*x.shape[:-1], weight.shape[1]).to(x.dtype)  # [frames, L, K]
        for tile in tiles[:1] if defaults_only else tiles:
            label = f"{name} N={weight.shape[0]},K={weight.shape[1]}," + ",".join(f"{k}={v}" for k, v in tile.items())
            call = lambda a=rows, w=weight, b=bias, f=activation, t=tile: kernels.linear(a, w, b, f, tile=t)
            yield label, tile == tiles[0], call


def survey(arches: list[str], dtypes: list[str], defaults_only: bool) -> tuple[list[Launch], list[str]]:
    """Every launch compiled: (launches, failures: the launches that do not compile, with the compiler's words)."""
    launches, failures = [], []
    for arch in arches:
        for dname in dtypes:
            for config, default, call in kernel_calls(arch, DTYPES[dname], defaults_only):
                with compile_only() as compiled:
                    try:
                        call()
                    except Exception as e:  # a launch that cannot compile for sm_90 cannot run there either
                        failures.append(f"{arch} {dname} {config}: {type(e).__name__}: {str(e).strip()[-400:]}")
                        print(f"COMPILE ERROR {failures[-1]}", flush=True)
                        continue
                for name, kernel in compiled:
                    registers, stack = binary_resources(kernel.asm["cubin"])
                    md, ptx = kernel.metadata, kernel.asm["ptx"]
                    tensor_ops = ptx.count("wgmma.mma_async") + ptx.count("mma.sync")
                    launch = Launch(
                        name, arch, dname, config, default, md.num_warps, md.shared, registers, stack, tensor_ops
                    )
                    launches.append(launch)
                    print(
                        f"{name:<40} {arch:<9} {dname:<5} {config:<32} {'default' if default else 'tuned':<8}"
                        f"{md.num_warps:>3} warps {md.shared / 1024:7.1f} KB shared {registers:4d} regs "
                        f"{stack:6d} B stack {launch.blocks_per_sm:3d} blocks/SM {tensor_ops:4d} MMA  "
                        f"{'fits' if launch.fits else 'OVER'}",
                        flush=True,
                    )
    return launches, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arches", default="ViT-B-16,ViT-L-14")
    parser.add_argument("--dtypes", default="fp32,bf16,fp16")
    parser.add_argument("--defaults-only", action="store_true", help="only the launches made without tuning")
    parser.add_argument("--json", type=Path, help="write the launches here")
    args = parser.parse_args(argv)
    unknown = set(args.dtypes.split(",")) - set(DTYPES)
    if unknown:
        parser.error(f"--dtypes: unknown {sorted(unknown)}; choose from {sorted(DTYPES)}")
    install_compile_only_driver()
    start = time.perf_counter()
    launches, failures = survey(args.arches.split(","), args.dtypes.split(","), args.defaults_only)
    over = [launch for launch in launches if not launch.fits]
    blocking = [launch for launch in over if launch.default]
    if args.json:
        record = {
            "target": f"{SM90.backend} sm_{SM90.arch} (H100/H200 limits)",
            "triton": triton.__version__,
            "torch": torch.__version__,
            "limits": {"shared_bytes_per_block": MAX_SHARED_PER_BLOCK, "registers_per_sm": REGISTERS_PER_SM},
            "launches": [{**dataclasses.asdict(x), "fits": x.fits, "blocks_per_sm": x.blocks_per_sm} for x in launches],
            "compile_errors": failures,
        }
        args.json.write_text(json.dumps(record, indent=1))
    print(
        f"{len(launches)} launches compiled for sm_90a in {time.perf_counter() - start:.0f} s: {len(over)} over the "
        f"limits ({len(blocking)} of them default launches), {len(failures)} that do not compile"
    )
    return 1 if blocking or failures else 0


if __name__ == "__main__":
    sys.exit(main())
