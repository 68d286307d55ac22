"""megatron-core's tensor/sequence-parallel layers on gloo through the CPU compatibility layer
equal a single-process float64 reference (forward and every gradient)."""
import torch

from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import run_distributed

TOLERANCE = 1e-10  # float64 end to end: only summation order differs


def _column_row_pair(seed: int) -> dict:
    from megatron.core import ModelParallelConfig
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.tensor_parallel.mappings import (
        gather_from_sequence_parallel_region,
        scatter_to_sequence_parallel_region,
    )

    torch.manual_seed(seed)
    w1, w2, x = torch.randn(32, 16).double(), torch.randn(16, 32).double(), torch.randn(6, 2, 16).double()
    tp, rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    config = ModelParallelConfig(tensor_model_parallel_size=tp, sequence_parallel=True,
                                 use_cpu_initialization=True, params_dtype=torch.float64)
    col = ColumnParallelLinear(16, 32, config=config, init_method=torch.nn.init.zeros_, bias=False,
                               gather_output=False)
    row = RowParallelLinear(32, 16, config=config, init_method=torch.nn.init.zeros_, bias=False,
                            input_is_parallel=True, skip_bias_add=True)
    with torch.no_grad():
        col.weight.copy_(w1.chunk(tp, 0)[rank])
        row.weight.copy_(w2.chunk(tp, 1)[rank])
    x = x.requires_grad_()
    hidden, _ = col(scatter_to_sequence_parallel_region(x))
    out, _ = row(hidden)
    out = gather_from_sequence_parallel_region(out, tensor_parallel_output_grad=False)
    (out ** 2).sum().backward()
    return {"out": out.detach(), "grad_w1": col.weight.grad, "grad_w2": row.weight.grad,
            "rank": rank, "tp": tp}


def test_tensor_and_sequence_parallel_layers_match_reference():
    results = run_distributed(_column_row_pair, 2, 0, parallel=ParallelConfig(tensor=2, sequence_parallel=True))
    torch.manual_seed(0)
    w1 = torch.randn(32, 16).double().requires_grad_()
    w2 = torch.randn(16, 32).double().requires_grad_()
    x = torch.randn(6, 2, 16).double()
    ref = (x @ w1.T) @ w2.T
    (ref ** 2).sum().backward()
    for res in results:
        rank, tp = res["rank"], res["tp"]
        torch.testing.assert_close(res["out"], ref.detach(), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(res["grad_w1"], w1.grad.chunk(tp, 0)[rank], atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(res["grad_w2"], w2.grad.chunk(tp, 1)[rank], atol=TOLERANCE, rtol=0)
