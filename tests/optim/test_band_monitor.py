"""The muP band monitor warns on out-of-band parameters and never on modulation parameters."""
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from megatron_video.optim.band_monitor import BandMonitor
from megatron_video.optim.builder import init_sphere_
from megatron_video.optim.config import OptimConfig


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.mlp = nn.Linear(width, width)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))


class Tiny(nn.Module):
    def __init__(self, width=32, layers=5):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width) for _ in range(layers))


def _set_grads(model, gen):
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2


def test_band_monitor_warns_out_of_band_and_exempts_modulation(tmp_path):
    gen = torch.Generator().manual_seed(0)
    cfg = OptimConfig(band_tolerance=8.0, band_check_every=10)
    model = Tiny()
    init_sphere_(model, cfg)
    writer = SummaryWriter(tmp_path / "tb")
    monitor = BandMonitor(model, cfg, writer=writer)
    _set_grads(model, gen)
    assert monitor.due(10) and monitor.due(20) and not monitor.due(15)
    assert monitor.record(10) == []

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
        model.blocks[1].mlp.weight.mul_(100.0)  # weight far from unit rows
        model.blocks[3].mlp.weight.add_(torch.randn(32, 32, generator=gen))  # a huge update
        model.blocks[0].modulation[1].weight.mul_(100.0)
    _set_grads(model, gen)
    model.blocks[2].mlp.weight.grad.mul_(1000.0)  # gradient far above its peers
    model.blocks[4].modulation[1].weight.grad.mul_(1000.0)
    warnings = monitor.record(20)

    flagged = {tuple(w.split()[2:4]) for w in warnings}
    # The x100 rescale of blocks.1 is also a huge update; modulation, changed alike, is exempt.
    assert flagged == {("blocks.1.mlp.weight", "weight"), ("blocks.1.mlp.weight", "update"),
                       ("blocks.2.mlp.weight", "grad"), ("blocks.3.mlp.weight", "update")}
    assert len(warnings) == 4
    writer.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert monitor.plot(tmp_path / "band.png").stat().st_size > 1000
