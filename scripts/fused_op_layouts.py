"""What the fused block ops receive, eager against torch.compile: shape, strides, storage offset,
dtype and 16-byte alignment of every input at every call (forward) and of the gradient each output
receives (backward), then the calls whose layouts differ.

    python3 scripts/fused_op_layouts.py                      # CPU: tiny model, kernels interpreted
    CUDA_LAUNCH_BLOCKING=1 python3 scripts/fused_op_layouts.py --preset 1b --latent 16 32 64 --batch 1

On a GPU each op is followed by a synchronisation, so a kernel that faults is named ("FAULT in
<op>") instead of the error surfacing at some later CUDA call; a fault after the last op listed lies
in the compiled code between the ops or in attention. On the CPU the blocks' ops are routed to the
Triton kernels (interpreted) although the tensors are not on a GPU.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are defined: before they are imported

import megatron_video.model.block as block_module
from megatron_video.model import VideoDiTConfig, block_ops, build_model, compile_model, load_preset
from megatron_video.parallel.state import ParallelConfig, init_distributed


def describe(t) -> str:
    if not isinstance(t, torch.Tensor):
        return repr(t)
    return (f"{tuple(t.shape)} stride={t.stride()} offset={t.storage_offset()} {t.dtype} "
            f"aligned16={t.data_ptr() % 16 == 0}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="a model preset (default: a 2-layer toy model)")
    parser.add_argument("--latent", type=int, nargs=3, default=[2, 4, 4], metavar=("T", "H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--block", default="parallel", choices=["parallel", "sequential"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    init_distributed(ParallelConfig(), device)
    records: dict[str, list] = collections.defaultdict(list)
    phase = ["eager"]

    @torch.compiler.disable
    def recorded(name, fused, first, *args):
        records[phase[0]].append((name, [describe(a) for a in (first, *args)]))
        print(f"{phase[0]} {name}", flush=True)
        out = block_ops._fused(name, first, *args)
        if device.type == "cuda":
            try:
                torch.cuda.synchronize()
            except RuntimeError as err:
                sys.exit(f"FAULT in {name} ({phase[0]} forward): {err}")
        for i, o in enumerate(out if isinstance(out, tuple) else (out,)):
            o.register_hook(lambda g, n=name, i=i, p=phase[0]: records[p].append((f"{n} dout{i}", [describe(g)])))
        return out

    block_module.block_op = recorded
    torch.manual_seed(0)
    if args.preset:
        cfg = load_preset(args.preset)
    else:
        cfg = VideoDiTConfig(in_channels=4, hidden=32, layers=2, heads=2, text_dim=16, block=args.block)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(cfg, params_dtype=dtype).to(device)
    x = torch.randn(args.batch, cfg.in_channels, *args.latent, device=device, dtype=dtype)
    t = torch.rand(args.batch, device=device)
    text = torch.randn(args.batch, cfg.max_text_len, cfg.text_dim, device=device, dtype=dtype)
    mask = torch.ones(args.batch, cfg.max_text_len, dtype=torch.bool, device=device)
    for name, forward in (("eager", model), ("compiled", compile_model(model))):
        phase[0] = name
        forward(x, t, text, mask).float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"{name}: forward + backward done", flush=True)
    differing = 0
    if len(records["eager"]) != len(records["compiled"]):
        print(f"eager made {len(records['eager'])} calls, compiled {len(records['compiled'])}")
    for (op, eager), (_, compiled) in zip(records["eager"], records["compiled"]):
        if eager != compiled:
            differing += 1
            print(op)
            for a, b in zip(eager, compiled, strict=True):
                print(f"  eager    {a}\n  compiled {b}" if a != b else f"  same     {a}")
    print(f"{differing} of {len(records['eager'])} calls differ in layout")


if __name__ == "__main__":
    main()
