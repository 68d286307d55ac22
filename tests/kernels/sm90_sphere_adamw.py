"""Compile every launch of a fused SphereAdamW plan for sm_90 and check it (run by
test_compile_sm90.py in a process without TRITON_INTERPRET; exits 1 listing the failures).

The plan covers rows of the 1B preset's lengths (192, 1536, 4096, 7680), a row longer than one
block (16384), rows of an odd length (1531), rows cut by a shard boundary, bf16 parameters and
unconstrained tensors, one of odd length. For each distinct kernel variant: registers at most
MAX_REGISTERS where the plan sets that cap (the vector variants) and no stack (spills); with
VECTOR > 1 every store is a vector one in the PTX and so is every load of the four arrays (the
scalar 32-bit loads left are the step scalars of each row a thread covers and a cut row's partial
sum); with VECTOR == 1 no access is.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import sphere_adamw as fused
from megatron_video.optim.rows import RowGeometry, RowSlice

SCALAR_LOADS = 8  # at most, per row a thread covers: the step scalars and a cut row's partial sum
TYPES = ["*i64", "i32", "*i64", "*fp32", "*fp32", "*fp32"]  # table, items, addresses, scalars, dots, norms
CPU = torch.device("cpu")


def item(shape, dtype=torch.float32):
    param = torch.zeros(shape, dtype=dtype)
    return param, param.clone(), {"exp_avg": torch.zeros(shape), "exp_avg_sq": torch.zeros(shape)}, {}


def planned_launches() -> list:
    sphere = [item((2, n)) for n in (192, 1536, 4096, 7680, 16384, 1531)] + [item((2, 1536), torch.bfloat16)]
    adamw = [item((4608,)), item((2,)), item((1536,), torch.bfloat16)]
    geometry = RowGeometry.for_whole_matrices([p for p, *_ in sphere])
    launches = fused._plan(sphere, adamw, geometry, [True] * len(sphere + adamw), CPU)
    # A shard starting half way into a row of 1536: its first and last rows are cut.
    shard = item((3 * 1536,))
    cut = RowGeometry({id(shard[0]): RowSlice(1536, 768, 0)}, 4, 0, CPU)
    return launches + fused._plan([shard], [], cut, [True], CPU)


def check(launch, seen: set) -> list[str]:
    constants = {k: v for k, v in launch.constants.items() if k not in ("num_warps", "maxnreg")}
    name = f"{launch.kernel.fn.__name__} {constants}"
    if name in seen:
        return []
    seen.add(name)
    signature = {p: TYPES[i] if i < len(TYPES) else "constexpr" for i, p in enumerate(launch.kernel.arg_names)}
    options = {k: v for k, v in launch.constants.items() if k in ("num_warps", "maxnreg")}
    try:
        kernel = triton.compile(ASTSource(launch.kernel, signature=signature, constexprs=constants),
                                target=GPUTarget("cuda", 90, 32), options=options)
    except Exception as err:  # noqa: BLE001 - every failure is reported
        return [f"{name}: {type(err).__name__}: {err}"]
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([cuobjdump, "-res-usage", cubin.name], capture_output=True, text=True, check=True).stdout
    registers, stack = (int(re.search(rf"{key}:(\d+)", usage).group(1)) for key in ("REG", "STACK"))
    accesses = collections.Counter(re.findall(r"\b(?:ld|st)\.global(?:\.v[24])?\.b\d+", kernel.asm["ptx"]))
    print(name, options, f"{registers} registers", dict(accesses))
    failures = []
    if registers > options.get("maxnreg", 255) or stack:
        failures.append(f"{name}: {registers} registers, {stack} bytes of stack")
    vector = sum(n for op, n in accesses.items() if ".v" in op)
    scalar = (accesses["ld.global.b16"] + accesses["st.global.b16"] + accesses["st.global.b32"]
              + max(0, accesses["ld.global.b32"] - SCALAR_LOADS * constants.get("ROWS", 1)))
    if constants["VECTOR"] > 1 and (not vector or scalar):
        failures.append(f"{name}: {vector} vector and {scalar} scalar accesses to the arrays")
    if constants["VECTOR"] == 1 and vector:
        failures.append(f"{name}: vector accesses in the unaligned variant")
    return failures


if __name__ == "__main__":
    seen: set = set()
    failures = [failure for launch in planned_launches() for failure in check(launch, seen)]
    print("\n".join(failures))
    sys.exit(1 if failures else 0)
