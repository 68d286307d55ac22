"""packed_attention: one packed row of mixed samples against the padded batch of the same samples.

A mix of durations and resolutions (the 1B preset's 12 heads of 128, bf16; two 16-frame clips, a
4-frame clip at another resolution and four images, each with 128 text tokens) fills one row of
the token budget. Attention forward + backward over it three ways in one run:
- baseline: the samples as a padded batch [7, longest], text and padding key-masked (what a
  loader without buckets or packing must do), through the project's attention (auto backend);
- packed "segments": one call per sample of the same attention (cuDNN/flash per segment);
- packed "flex": one compiled FlexAttention call with the document block mask.
Both packed outputs are checked against each other (bf16 relative error). The padded batch also
runs the whole model's token-wise layers on its padding, which the token counts show.
ratio = padded time / the faster packed time. Target: >= 1.5 (the padded batch holds ~2.4x the
row's tokens).
"""
from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import model_benchmark_args, time_call, write_result

TEXT = 128
GRIDS = [(16, 22, 40), (16, 22, 40), (4, 32, 32), (1, 22, 40), (1, 22, 40), (1, 32, 32), (1, 16, 16)]
QUICK_GRIDS = [(2, 4, 6), (1, 4, 4), (3, 2, 4)]


def inputs(grids, text, heads, head_dim, device, dtype, multiple=128):
    from megatron_video.model.packing import PackLayout, Segment

    layout = PackLayout.of([Segment(text, grid) for grid in grids], multiple=multiple)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, layout.length, head_dim, generator=gen, device=device, dtype=dtype)
               for _ in range(3))
    key_mask = layout.key_mask(torch.ones(1, text * len(grids), dtype=torch.bool, device=device))
    padded = max(s.length for s in layout.segments)
    batch = [torch.randn(len(grids), heads, padded, head_dim, generator=gen, device=device, dtype=dtype)
             for _ in range(3)]
    batch_mask = torch.zeros(len(grids), padded, dtype=torch.bool, device=device)
    for row, segment in enumerate(layout.segments):
        batch_mask[row, :segment.length] = True
    return layout, (q, k, v, key_mask), (*batch, batch_mask)


def main(argv: list[str] | None = None) -> pathlib.Path:
    from megatron_video.model.attention import Attention
    from megatron_video.model.packed_attention import packed_attention

    args = model_benchmark_args(__doc__.splitlines()[0], argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    heads, head_dim = (12, 128) if not args.quick else (2, 16)
    grids, text = (GRIDS, TEXT) if not args.quick else (QUICK_GRIDS, 3)
    layout, packed, batch = inputs(grids, text, heads, head_dim, device, dtype, 128 if not args.quick else 4)
    attend = Attention("auto", heads, head_dim)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    # FlexAttention has no CPU backward: the quick CPU run times its forward alone.
    backward = device.type == "cuda"

    def timed(fn, tensors, train=True):
        leaves = [t.detach().requires_grad_(train and t.is_floating_point()) for t in tensors]

        def run():
            out = fn(*leaves)
            if train:
                out.backward(torch.ones_like(out))
            return out

        with torch.set_grad_enabled(train):
            return time_call(run, repeats=args.repeats, warmup=2, sync=sync), run().detach()

    padded_s, _ = timed(lambda q, k, v, m: attend(q, k, v, m), batch)
    segments_s, segments_out = timed(lambda q, k, v, m: packed_attention("segments", attend, q, k, v, m, layout, None),
                                     packed)
    flex_s, flex_out = timed(lambda q, k, v, m: packed_attention("flex", attend, q, k, v, m, layout, None), packed,
                             train=backward)
    real = layout.tokens
    rel = float((flex_out.float() - segments_out.float()).norm() / segments_out.float().norm())
    metrics = {"tokens_real": real, "row_length": layout.length,
               "padded_batch_tokens": batch[0].shape[0] * batch[0].shape[2],
               "samples": len(grids), "segments_s": segments_s, "flex_s": flex_s, "flex_backward": backward,
               "flex_vs_segments_rel_err": rel, "dtype": str(dtype).removeprefix("torch."),
               "heads": heads, "head_dim": head_dim}
    baseline = {"padded_s": padded_s}
    return write_result("packed_attention", metrics, baseline, padded_s / min(segments_s, flex_s), 1.5,
                        args.results_dir)


if __name__ == "__main__":
    main()
