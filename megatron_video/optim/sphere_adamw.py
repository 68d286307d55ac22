"""SphereAdamW (Summer-22B 4.3): AdamW whose constrained matrices keep unit-norm rows.

For each row w_i of a constrained matrix (param groups with `sphere=True`):
    g_i <- g_i - <w_i, g_i> w_i                       tangent projection
    m, v <- Adam moments of the projected g (fp32)     with bias correction
    w_i <- w_i - lr * m_hat / (sqrt(v_hat) + eps)
    w_i <- w_i / ||w_i||                               retraction; no weight decay
Groups with `sphere=False` follow torch.optim.AdamW exactly (decoupled weight decay).

Both kinds live in one torch optimizer because megatron's distributed optimizer owns all parameters
of a model chunk through one inner optimizer. State is fp32 whatever the parameter dtype; under
megatron's mixed-precision optimizers the tensors updated here are already the fp32 main params.
Row sums go through a RowGeometry (rows.py), which completes rows split across TP or DP ranks.

`fused` picks the implementation: the Triton kernels of kernels/sphere_adamw.py (a few launches
for all tensors) or this file's PyTorch code, the reference they are tested against. None (the
default) takes the kernels for CUDA tensors and the reference elsewhere; True forces the kernels
(on CPU they need TRITON_INTERPRET=1, as in tests/kernels).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from megatron_video.optim.rows import RowGeometry


class SphereAdamW(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.0, sphere: bool = False, fused: bool | None = None):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "sphere": sphere}
        super().__init__(params, defaults)
        self.row_geometry: RowGeometry | None = None
        self.fused = fused
        self._fused_step = None  # kernels.sphere_adamw.FusedSphereStep, made on first use
        self._whole_geometry: tuple[tuple, RowGeometry] | None = None

    @classmethod
    def over_groups(cls, param_groups: list[dict], fused: bool | None = None, **defaults) -> SphereAdamW:
        """Adopt param groups megatron has already built. They may hold DP-shard views of model
        params, which are not leaf tensors and which torch's add_param_group refuses; megatron
        assigns param_groups directly for its own Adam for that reason, and so do we."""
        optimizer = cls([torch.zeros(1, requires_grad=True)], fused=fused, **defaults)  # replaced just below
        optimizer.param_groups = param_groups
        for group in param_groups:
            for key, value in optimizer.defaults.items():
                group.setdefault(key, value)
        return optimizer

    def set_row_geometry(self, geometry: RowGeometry) -> None:
        """Use `geometry` for row sums (set by the builder for sharded or TP-split matrices)."""
        self.row_geometry = geometry

    def init_state(self) -> None:
        """Create every parameter's state (step 0, zero moments): what a checkpoint loads into."""
        for group in self.param_groups:
            for param in group["params"]:
                self._state_for(param)

    def _state_for(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        if "step" not in state:
            state["step"] = torch.tensor(0.0)
        # megatron's init_state_fn (checkpoint loading) may have created the moments already.
        for key in ("exp_avg", "exp_avg_sq"):
            if key not in state:
                state[key] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.preserve_format)
        return state

    def _adam_update(self, items: list[tuple[torch.Tensor, dict]], weights: list[torch.Tensor],
                     grads: list[torch.Tensor], decoupled_decay: bool) -> None:
        """w <- w * (1 - lr * weight_decay) - lr * m_hat / (sqrt(v_hat) + eps) for the fp32 vectors
        `weights` (in place) of the parameters of `items` with gradients `grads`, through torch's fused
        AdamW kernel (one pass over weight, gradient and moments instead of one per operation of the
        equation), a launch per param group, whose LR, betas and weight decay apply to all its members.
        Without `decoupled_decay`, weight_decay is 0 whatever the groups say."""
        for group, positions in _by_group(items):
            beta1, beta2 = group["betas"]
            states = [self._state_for(items[i][0]) for i in positions]
            for state in states:  # a new tensor: megatron's distributed optimizer loads one step tensor shared by all
                state["step"] = state["step"] + 1
            device = weights[positions[0]].device
            torch._fused_adamw_([weights[i] for i in positions], [grads[i] for i in positions],
                                [state["exp_avg"].view(-1) for state in states],
                                [state["exp_avg_sq"].view(-1) for state in states], [],
                                [state["step"].to(device) for state in states], lr=group["lr"], beta1=beta1,
                                beta2=beta2, weight_decay=group["weight_decay"] if decoupled_decay else 0.0,
                                eps=group["eps"], amsgrad=False, maximize=False)

    def _adamw_step(self, items: list[tuple[torch.Tensor, dict]]) -> None:
        weights = [p.detach().view(-1).float() for p, _ in items]  # the parameters themselves when fp32
        grads = [p.grad.view(-1).float() for p, _ in items]
        self._adam_update(items, weights, grads, decoupled_decay=True)
        _copy_back([p for p, _ in items], weights)

    def _geometry(self, items: list[tuple[torch.Tensor, dict]]) -> RowGeometry:
        if self.row_geometry is not None:
            return self.row_geometry
        key = tuple((id(p), p.shape) for p, _ in items)  # kept across steps: the kernels plan by it
        if self._whole_geometry is None or self._whole_geometry[0] != key:
            self._whole_geometry = key, RowGeometry.for_whole_matrices([p for p, _ in items])
        return self._whole_geometry[1]

    def _sphere_step(self, items: list[tuple[torch.Tensor, dict]]) -> None:
        geometry = self._geometry(items)
        weights = [p.detach().view(-1).float() for p, _ in items]  # in place when fp32
        grads = [p.grad.view(-1).float() for p, _ in items]
        dots = geometry.row_totals([(p, w * g) for (p, _), w, g in zip(items, weights, grads)])
        tangents = [torch.addcmul(g, dot, w, value=-1) for w, g, dot in zip(weights, grads, dots)]
        self._adam_update(items, weights, tangents, decoupled_decay=False)
        norms_sq = geometry.row_totals([(p, w * w) for (p, _), w in zip(items, weights)])
        for weight, norm_sq in zip(weights, norms_sq):
            weight.div_(norm_sq.sqrt_())
        _copy_back([p for p, _ in items], weights)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sphere_items, adamw_items = [], []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    (sphere_items if group["sphere"] else adamw_items).append((param, group))
        if self._use_kernels(sphere_items + adamw_items):
            self._kernel_step(sphere_items, adamw_items)
            return loss
        if adamw_items:
            self._adamw_step(adamw_items)
        # With a shared geometry every rank joins the row all-reduces, holding rows or not.
        if sphere_items or (self.row_geometry is not None and self.row_geometry.total_rows):
            self._sphere_step(sphere_items)
        return loss

    def _use_kernels(self, items: list[tuple[torch.Tensor, dict]]) -> bool:
        if self.fused is not None:
            return self.fused
        device = items[0][0].device if items else (self.row_geometry.device if self.row_geometry else None)
        return device is not None and device.type == "cuda"

    def _kernel_step(self, sphere_items: list[tuple[torch.Tensor, dict]],
                     adamw_items: list[tuple[torch.Tensor, dict]]) -> None:
        """The same step through kernels/sphere_adamw.py: every tensor in a few launches."""
        if self._fused_step is None:
            from kernels.sphere_adamw import FusedSphereStep  # Triton: imported only when used

            self._fused_step = FusedSphereStep()

        # Parameters at the same step share the next step's tensor, a new one (see _adam_direction):
        # from the second step on, one new tensor a step rather than an addition per parameter.
        stepped: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id of an old step -> (it, new)
        by_value: dict[float, torch.Tensor] = {}

        def prepared(items):
            out = []
            for param, group in items:
                if not param.is_contiguous():
                    raise ValueError(f"the fused SphereAdamW updates parameters in place: a tensor of shape "
                                     f"{tuple(param.shape)} is not contiguous (use fused=False)")
                state = self._state_for(param)
                old = state["step"]
                if id(old) not in stepped:  # the old tensor is kept: ids stay unique during the step
                    value = float(old)
                    if value not in by_value:
                        by_value[value] = old.new_tensor(value + 1)
                    stepped[id(old)] = old, by_value[value]
                state["step"] = stepped[id(old)][1]
                out.append((param, param.grad.contiguous(), state, group))
            return out

        geometry = self._geometry(sphere_items)
        if sphere_items or adamw_items or geometry.reduces:
            self._fused_step.step(prepared(sphere_items), prepared(adamw_items), geometry)


def _by_group(items: list[tuple[torch.Tensor, dict]]) -> list[tuple[dict, list[int]]]:
    """Each param group of `items` with the positions in `items` of its parameters, in order."""
    groups: dict[int, tuple[dict, list[int]]] = {}
    for position, (_, group) in enumerate(items):
        groups.setdefault(id(group), (group, []))[1].append(position)
    return list(groups.values())


def _copy_back(params: list[torch.Tensor], weights: list[torch.Tensor]) -> None:
    """Write the updated fp32 vectors into parameters of another dtype (bf16); fp32 ones were updated in place."""
    for param, weight in zip(params, weights):
        if weight.data_ptr() != param.data_ptr():
            param.detach().view(-1).copy_(weight)
