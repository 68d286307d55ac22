"""The native FP8 linears' state outside their parameters (megatron_video/model/fp8/state.py): a
model's weight copies go stale after its own optimizer's steps only, and delayed scaling's amax
histories, saved and loaded, make a resumed model compute bit for bit what the uninterrupted one does."""
import copy

import pytest
import torch

from megatron_video.model.config import VideoDiTConfig
from megatron_video.model.fp8.settings import Fp8Settings
from megatron_video.model.fp8.state import (
    amax_histories,
    load_amax_histories,
    native_operands,
    refresh_weights_after_steps,
)
from megatron_video.model.model import build_model

CFG = VideoDiTConfig(in_channels=8, hidden=64, layers=2, heads=4, mlp_ratio=2.0, text_dim=24)


def _fp8_model(seed: int, scaling: str = "delayed"):
    torch.manual_seed(seed)
    model = build_model(CFG, fp8=Fp8Settings("native", scaling))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    refresh_weights_after_steps(optimizer, [model])
    return model, optimizer


def _train_step(model, optimizer, inputs) -> torch.Tensor:
    out = model(*inputs)
    out.square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    return out.detach()


def _cached_weights(model) -> list:
    return [operands._weight for operands in native_operands([model]).values()]


def test_two_models_in_one_process_refresh_only_their_own_fp8_weights(megatron_single, tiny_inputs):
    first, first_opt = _fp8_model(0)
    second, second_opt = _fp8_model(1)
    inputs = tiny_inputs(CFG)
    _train_step(first, first_opt, inputs)
    _train_step(second, second_opt, inputs)
    second(*inputs)  # quantises second's stepped weights
    second_cache = _cached_weights(second)
    for _ in range(2):  # another model's optimizer steps: second's copies are still current
        _train_step(first, first_opt, inputs)
        second(*inputs)
        assert all(a is b for a, b in zip(_cached_weights(second), second_cache, strict=True))
    # second's own step marks its copies stale: the next forward quantises the new weights.
    _train_step(second, second_opt, inputs)
    second(*inputs)
    assert all(a is not b for a, b in zip(_cached_weights(second), second_cache, strict=True))
    # A plain optimizer nobody registered touches no model's copies.
    stray = torch.nn.Parameter(torch.ones(4))
    stray.grad = torch.ones(4)
    fresh = _cached_weights(second)
    torch.optim.SGD([stray], lr=0.1).step()
    second(*inputs)
    assert all(a is b for a, b in zip(_cached_weights(second), fresh, strict=True))


def test_no_hook_without_native_fp8_linears(megatron_single):
    model = build_model(CFG)
    assert refresh_weights_after_steps(torch.optim.SGD(model.parameters(), lr=0.1), [model]) is None


@pytest.mark.parametrize("restore", [True, False])
def test_a_model_resumed_with_its_amax_histories_repeats_the_uninterrupted_one(restore, megatron_single,
                                                                                tiny_inputs):
    """Three steps, a checkpoint (parameters, optimizer, amax histories), two more steps; a fresh
    model loaded from the checkpoint repeats the last two exactly, and only with the histories
    (without them its first calls scale by their own amax: the control)."""
    batches = [tiny_inputs(CFG, seed=seed) for seed in range(5)]
    # Magnitudes that grow: each call's delayed scale differs from its current one.
    batches = [(x * 2.0 ** i, *rest) for i, (x, *rest) in enumerate(batches)]
    model, optimizer = _fp8_model(0)
    for batch in batches[:3]:
        _train_step(model, optimizer, batch)
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "fp8": amax_histories([model])})
    assert saved["fp8"] and all(state["input"]["calls"] == 3 for state in saved["fp8"].values())
    straight = [_train_step(model, optimizer, batch) for batch in batches[3:]]

    resumed, resumed_opt = _fp8_model(7)
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["optimizer"])
    if restore:
        load_amax_histories([resumed], saved["fp8"])
    again = [_train_step(resumed, resumed_opt, batch) for batch in batches[3:]]
    same = all(torch.equal(a, b) for a, b in zip(straight, again, strict=True))
    assert same == restore


def test_amax_histories_load_only_onto_the_same_linears(megatron_single):
    model, _ = _fp8_model(0)
    histories = amax_histories([model])
    assert amax_histories([_fp8_model(0, "tensor")[0]]) == {}
    with pytest.raises(ValueError, match="other linears"):
        load_amax_histories([model], {name: state for name, state in list(histories.items())[1:]})
