"""Codecs and text encoders through their real classes (tiny random Wan VAE and UMT5, real MiniLM)."""
import pytest
import torch

from megatron_video.model.codec import LatentCodec, PixelCodec, WanVAECodec
from megatron_video.model.text import CachedTextEncoder, MiniLMTextEncoder, T5TextEncoder, TextEncoder


def test_pixel_codec_round_trip_and_normalisation():
    codec = PixelCodec(factor=4)
    assert isinstance(codec, LatentCodec) and codec.latent_channels == 48
    video = torch.rand(2, 3, 8, 32, 56) * 2 - 1
    latent = codec.encode(video)
    assert latent.shape == (2, 48, 8, 8, 14)
    torch.testing.assert_close(codec.decode(latent), video)
    # channel 0 is red at sub-pixel (0, 0), normalised by std 0.5
    torch.testing.assert_close(latent[:, 0], video[:, 0, :, 0::4, 0::4] / 0.5)
    with pytest.raises(ValueError):
        codec.encode(torch.zeros(1, 3, 1, 30, 56))


@pytest.fixture(scope="module")
def tiny_wan_vae(tmp_path_factory):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                           latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0],
                           scale_factor_temporal=2, scale_factor_spatial=2)
    path = tmp_path_factory.mktemp("wan_vae")
    vae.save_pretrained(path)
    return path, vae.eval()


def test_wan_vae_codec_encodes_normalised_latents(tiny_wan_vae):
    path, vae = tiny_wan_vae
    codec = WanVAECodec(path)
    assert isinstance(codec, LatentCodec)
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (4, 2, 2)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    latent = codec.encode(video)
    assert latent.shape == (1, 4, 3, 8, 8)  # causal: 1 + (5 - 1) / 2 frames
    with torch.no_grad():
        raw = vae.encode(video).latent_dist.mean
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0]).reshape(1, 4, 1, 1, 1)
    std = torch.tensor([1.5, 0.5, 2.0, 1.0]).reshape(1, 4, 1, 1, 1)
    torch.testing.assert_close(latent, (raw - mean) / std, atol=1e-5, rtol=1e-5)
    decoded = codec.decode(latent)
    assert decoded.shape == video.shape and decoded.abs().max() <= 1.0
    with torch.no_grad():
        torch.testing.assert_close(decoded, vae.decode(raw).sample.clamp(-1, 1), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder(max_len=16)


def test_minilm_token_states_and_mask(minilm):
    assert isinstance(minilm, TextEncoder)
    emb, mask = minilm.encode(["a red car drives through the snow", "cat"])
    assert emb.shape == (2, 16, 384) and mask.shape == (2, 16) and mask.dtype == torch.bool
    assert mask[1].sum() == 3 and mask[0].sum() > mask[1].sum()  # [CLS] cat [SEP]
    assert emb[1, 3:].abs().max() == 0 and emb[1, :3].abs().max() > 0.1
    assert not torch.allclose(emb[0, 1], emb[1, 1])


def test_tiny_umt5_encoder_through_real_classes(minilm, tmp_path):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    config = UMT5Config(vocab_size=len(minilm.tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    UMT5EncoderModel(config).save_pretrained(tmp_path)
    minilm.tokenizer.save_pretrained(tmp_path)  # any tokenizer serves a random model; this one is offline
    encoder = T5TextEncoder(tmp_path, max_len=12)
    emb, mask = encoder.encode(["a dog on a beach", "hi"])
    assert encoder.dim == 16 and emb.shape == (2, 12, 16) and mask.shape == (2, 12)
    assert mask[1].sum() == 3 and emb[1, 3:].abs().max() == 0 and emb[0, :mask[0].sum()].abs().max() > 0


class CountingEncoder:
    dim = 4
    identity = "counting"

    def __init__(self):
        self.seen = []

    def encode(self, prompts):
        self.seen += prompts
        emb = torch.stack([torch.full((3, 4), float(len(p))) for p in prompts])
        return emb, torch.ones(len(prompts), 3, dtype=torch.bool)


def test_cache_encodes_each_prompt_once(tmp_path):
    inner = CountingEncoder()
    cached = CachedTextEncoder(inner, tmp_path)
    first = cached.encode(["ab", "abc", "ab"])
    assert sorted(inner.seen) == ["ab", "abc"]
    second = cached.encode(["abc", "ab", "abcd"])
    assert sorted(inner.seen) == ["ab", "abc", "abcd"]
    torch.testing.assert_close(second[0][:2], first[0][[1, 0]])
    assert second[0][2, 0, 0] == 4.0
    other = CountingEncoder()
    other.identity = "another encoder"
    CachedTextEncoder(other, tmp_path).encode(["ab"])
    assert other.seen == ["ab"]  # a different encoder never reads the first one's entries


def test_repeated_prompts_are_served_from_memory_within_its_bound(tmp_path):
    inner = CountingEncoder()
    entry_bytes = 3 * 4 * 4 + 3  # float32 states [3, 4] and a bool mask [3]
    cached = CachedTextEncoder(inner, tmp_path, memory_bytes=2 * entry_bytes)
    first = cached.encode(["ab", "abc"])
    for entry in tmp_path.iterdir():  # from here on only memory can answer without the encoder
        entry.unlink()
    again = cached.encode(["abc", "ab", "abc"])
    assert sorted(inner.seen) == ["ab", "abc"]
    torch.testing.assert_close(again[0], first[0][[1, 0, 1]])
    cached.encode(["abcd"])  # a third entry: the least recently used one ("abc", read before "ab") leaves memory
    for entry in tmp_path.iterdir():
        entry.unlink()
    assert cached.encode(["ab"])[0][0, 0, 0] == 2.0 and sorted(inner.seen) == ["ab", "abc", "abcd"]
    assert cached.encode(["abc"])[0][0, 0, 0] == 3.0
    assert sorted(inner.seen) == ["ab", "abc", "abc", "abcd"]  # encoded again
