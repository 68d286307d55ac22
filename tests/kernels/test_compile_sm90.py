"""Every kernel compiles to an sm_90 (H100/H200) cubin with the installed Triton, without a GPU.

The CPU tests run the kernels interpreted, which skips Triton's compiler (types, layouts, register
allocation, ptxas); this compiles each kernel in each variant the code launches (every config of
an autotuned one), in a subprocess where TRITON_INTERPRET is unset. The fused SphereAdamW step is
compiled launch by launch as its planner makes them (sm90_sphere_adamw.py), with its register and
vector-access checks.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BF16, FP32 = "tl.bfloat16", "tl.float32"

# (module, kernel, pointer/int/float argument types (the rest are constexpr), constexpr values)
CASES = [
    ("adaln", "_forward", {"x": "*bf16", "shift": "*bf16", "scale": "*bf16", "y": "*bf16", "mean_out": "*fp32",
                           "rstd_out": "*fp32", "n_rows": "i32", "batch": "i32", "hidden": "i32",
                           "shift_stride": "i32", "scale_stride": "i32", "eps": "fp32"},
     {"ROWS": 2, "BLOCK": 2048, "DTYPE": BF16}),
    ("adaln", "_backward", {"dy": "*bf16", "x": "*bf16", "scale": "*bf16", "mean_in": "*fp32", "rstd_in": "*fp32",
                            "dx": "*bf16", "dscale_part": "*fp32", "dshift_part": "*fp32", "seq": "i32",
                            "batch": "i32", "hidden": "i32", "scale_stride": "i32"},
     {"ROWS": 64, "SUB": 4, "BLOCK": 2048, "DTYPE": BF16}),
    ("gated_residual", "_forward", {"x": "*bf16", "gate": "*bf16", "y": "*bf16", "out": "*bf16", "n_rows": "i32",
                                    "batch": "i32", "hidden": "i32", "gate_stride": "i32", "offset": "fp32"},
     {"ROWS": 4, "BLOCK": 1024, "DTYPE": BF16}),
    ("gated_residual", "_backward", {"dout": "*bf16", "gate": "*bf16", "y": "*bf16", "dy": "*bf16",
                                     "dgate_part": "*fp32", "seq": "i32", "batch": "i32", "hidden": "i32",
                                     "gate_stride": "i32", "offset": "fp32"},
     {"ROWS": 64, "SUB": 8, "BLOCK": 1024, "DTYPE": BF16}),
    *[("silu_gate", "_kernel", {"g": "*bf16", "u": "*bf16", "dm": "*bf16", "out": "*bf16", "dg": "*bf16",
                                "n_rows": "i32", "cols_n": "i32", "g_stride": "i32", "u_stride": "i32",
                                "dm_stride": "i32", "out_stride": "i32"},
       {"BACKWARD": backward, "DTYPE": BF16}) for backward in (False, True)],
    *[("value_mix", "_kernel", {"v": "*bf16", "vf": "*bf16", "lambdas": "*bf16", "dout": "*bf16", "out": "*bf16",
                                "dvf": "*bf16", "partial": "*fp32", "n_rows": "i32", "batch": "i32", "cols": "i32",
                                **{f"{t}_s{d}": "i64" for t in "vfdog" for d in "bhs"}},
       {"HEAD_DIM": 128, "BACKWARD": backward, "ROWS": 4, "DTYPE": BF16}) for backward in (False, True)],
    *[("rope", "_kernel", {"q": "*bf16", "k": "*bf16", "angles": "*fp32", "q_out": "*bf16", "k_out": "*bf16",
                           "heads": "i32", "seq": "i32", "half": "i32",
                           **{f"{t}_s{d}": "i64" for t in ("q", "k", "qo", "ko") for d in "bhs"}},
       {"SIGN": sign, "ROWS": 32, "BLOCK": 64, "DTYPE": BF16}) for sign in (1, -1)],
    *[("fp8_cast", "_amax_kernel", {"x": "*bf16", "tensor_amax": "*i32", "row_amax": "*i32", "col_amax": "*i32",
                                    "rows": "i32", "cols": "i32", "stride_r": "i64", "stride_c": "i64"},
       {"TENSOR_AMAX": tensor, "ROW_AMAX": not tensor, "COL_AMAX": not tensor, "BR": 128, "BC": 128})
      for tensor in (True, False)],
    *[("fp8_cast", "_cast_kernel", {"x": "*bf16", "out": "*u8", "out_t": "*u8", "row_amax": "*i32", "col_amax": "*i32",
                                    "inverse": "*fp32", "inverse_t": "*fp32", "history": "*i32", "rows": "i32",
                                    "cols": "i32", "padded_rows": "i32", "stride_r": "i64", "stride_c": "i64",
                                    "slot": "i32", "history_len": "i32"},
       {"SCALING": scaling, "WRITE": True, "WRITE_T": True, "BIAS": bias, "MANTISSA": mantissa,
        "MAX_BITS": max_bits, "HISTORY_BLOCK": 16, "BR": 128, "BC": 128})
      for scaling in (0, 1, 2) for bias, mantissa, max_bits in ((7, 3, 0x7E), (15, 2, 0x7B))],
]

SCRIPT = """
import importlib, inspect, sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

failures = []
for module, name, types, constants in CASES:
    fn = getattr(importlib.import_module("kernels." + module), name)
    configs = getattr(fn, "configs", [triton.Config({}, num_warps=8)])  # an autotuned kernel: each of its configs
    while not isinstance(fn, JITFunction):
        fn = fn.fn
    constants = {k: eval(v) if isinstance(v, str) else v for k, v in constants.items()}
    signature = {p: types.get(p, "constexpr") for p in inspect.signature(fn.fn).parameters}
    for config in configs:
        try:
            triton.compile(ASTSource(fn, signature=signature, constexprs={**constants, **config.kwargs}),
                           target=GPUTarget("cuda", 90, 32), options={"num_warps": config.num_warps})
        except Exception as err:
            failures.append(f"{module}.{name} {constants} {config}: {type(err).__name__}: {err}")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def _without_interpreter(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.mark.skipif(sys.platform != "linux", reason="Triton's bundled ptxas is a Linux binary")
def test_every_kernel_compiles_for_sm90():
    run = _without_interpreter("-c", f"CASES = {CASES!r}\n{SCRIPT}")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="Triton's bundled ptxas and cuobjdump are Linux binaries")
def test_sphere_adamw_launches_vectorise_within_their_register_budget_for_sm90():
    """Every launch the planner makes for the 1B preset's row lengths (and unaligned ones): compiled,
    at most MAX_REGISTERS registers and no spills, and the aligned launches' data accesses all
    16- or 8-byte vectors (PTX), which is what the hints are for."""
    run = _without_interpreter(str(pathlib.Path(__file__).with_name("sm90_sphere_adamw.py")))
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
