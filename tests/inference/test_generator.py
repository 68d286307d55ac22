"""VideoGenerator on a tiny random DiT: weights from .pt, EMA and safetensors files, seeds, negative
prompts, and chunked decode equal to a whole decode (pixel codec and a tiny random Wan VAE)."""
import pytest
import torch

from megatron_video.config import ConfigError
from megatron_video.inference.generator import GenerationRequest, VideoGenerator, load_into, load_weights
from megatron_video.model.codec import PixelCodec, WanVAECodec
from megatron_video.testing.tiny import tiny_components

REQUEST = GenerationRequest(prompt="a red car", frames=3, height=8, width=8, steps=4, guidance=2.0, seed=3)


@pytest.fixture(scope="module")
def generator(megatron_single):
    return VideoGenerator(tiny_components(), torch.device("cpu"))


def test_same_seed_same_video_other_seed_prompt_or_negative_prompt_another(generator):
    video = generator.generate(REQUEST)
    assert video.shape == (3, 8, 8, 3) and video.dtype.name == "uint8"
    assert (generator.generate(REQUEST) == video).all()
    for change in ({"seed": 4}, {"prompt": "a blue boat"}, {"negative_prompt": "blurry"}):
        other = GenerationRequest(**{**REQUEST.to_dict(), **change})
        assert not torch.equal(generator.latents(other), generator.latents(REQUEST)), change


def test_weights_load_from_checkpoint_ema_and_safetensors(generator, tmp_path):
    from safetensors.torch import save_file

    model = generator.parts.model
    state = model.state_dict()
    torch.save({"step": 5, "model": state, "optimizer": {}}, tmp_path / "ckpt_0000005.pt")
    torch.save({"step": 5, "model": state, "ema_gamma": 7.0}, tmp_path / "ema_best.pt")
    tensors = {k: v for k, v in state.items() if v is not None}  # megatron's _extra_state is None
    save_file(tensors, str(tmp_path / "model.safetensors"))
    for name in ("ckpt_0000005.pt", "ema_best.pt", "model.safetensors"):
        loaded = load_weights(tmp_path / name, torch.device("cpu"))
        assert all(torch.equal(loaded[k], v) for k, v in tensors.items()), name
        load_into(model, loaded, tmp_path / name)
    with pytest.raises(ConfigError, match="does not fit"):
        load_into(model, {k: v for k, v in tensors.items() if "final_proj" not in k}, tmp_path / "model.safetensors")


def test_pixel_codec_chunked_decode_equals_whole(generator):
    latents = torch.randn(1, 12, 5, 4, 4)
    whole = PixelCodec(factor=2).decode(latents)
    pieces = list(PixelCodec(factor=2).decode_chunks(latents, 2))
    assert [p.shape[2] for p in pieces] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole)
    chunked = VideoGenerator(generator.parts, torch.device("cpu"), decode_chunk=2)
    assert (chunked.decode(latents) == generator.decode(latents)).all()


def test_wan_vae_chunked_decode_joins_into_the_whole_decode(tmp_path):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                     latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0],
                     scale_factor_temporal=2, scale_factor_spatial=2).save_pretrained(tmp_path)
    codec = WanVAECodec(tmp_path)
    latent = torch.randn(1, 4, 4, 6, 6)
    whole = codec.decode(latent)
    pieces = list(codec.decode_chunks(latent, 3))
    assert [p.shape[2] for p in pieces] == [1 + 2 * 2, 2]  # causal: the first latent frame gives 1 frame
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_cuda_sampling_matches_the_cpu_and_runs_in_bf16(generator):
    parts = tiny_components()
    # The fixture's weights: on a CUDA machine megatron draws its layers' initial weights from the
    # CUDA generator, whose state differs between two builds.
    parts.model.load_state_dict(generator.parts.model.state_dict())
    fp32 = VideoGenerator(parts, torch.device("cuda"))
    torch.testing.assert_close(fp32.latents(REQUEST).cpu(), generator.latents(REQUEST), atol=1e-3, rtol=1e-3)
    bf16 = VideoGenerator(parts, torch.device("cuda"), dtype=torch.bfloat16)
    assert torch.isfinite(bf16.latents(REQUEST)).all() and bf16.generate(REQUEST).shape == (3, 8, 8, 3)
