"""Captions through a tiny randomly initialised Qwen2.5-VL built from its real config and model
classes (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration), saved and loaded from a local folder.

Its tokenizer is a tiny byte-level BPE built here with Qwen's special tokens: the real one cannot
be fetched offline, and transformers' Qwen2.5-VL processor cannot be built without torchvision, so
the captioner's own pixel path (curator/pixels.py + patchify) is what runs, as it does in production.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from curator.captions.config import CaptionConfig
from curator.captions.qwen import TransformersQwenCaptioner, patchify
from curator.captions.run import run_captions, three_words
from megatron_video.config import ConfigError
from megatron_video.config.run import DataConfig
from megatron_video.data.catalog import read_feature_set
from megatron_video.data.selection import select_clips

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    path = tmp_path_factory.mktemp("tiny_qwen25vl")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["Describe this video in detail. A man rides a horse across a field."] * 4,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(path))
    ids = dict(zip(SPECIAL, tokenizer.convert_tokens_to_ids(SPECIAL)))
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=56),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).eval().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def five_clips(tmp_path_factory, curated_output):
    rng = np.random.default_rng(1)
    clips = {f"clip_{i}": rng.integers(0, 256, (6 + 2 * i, 32, 48, 3), dtype=np.uint8) for i in range(5)}
    return curated_output(tmp_path_factory.mktemp("to_caption"), clips)


def test_patchify_puts_each_merge_window_of_two_frames_in_consecutive_rows():
    """The layout Qwen2.5-VL's vision tower reads: rows run over the 2x2 merge windows in raster
    order, each row a patch's channels x 2 frames x 14 x 14 pixels."""
    video = torch.arange(4 * 3 * 56 * 84, dtype=torch.float32).reshape(4, 3, 56, 84)
    patches, grid = patchify(video, patch=14, merge=2, temporal=2)
    assert grid == [2, 4, 6] and patches.shape == (48, 3 * 2 * 14 * 14)
    expected = {0: (0, 0, 0), 1: (0, 0, 14), 2: (0, 14, 0), 3: (0, 14, 14), 4: (0, 0, 28), 12: (0, 28, 0),
                24: (2, 0, 0)}
    for row, (t, y, x) in expected.items():
        block = video[t:t + 2, :, y:y + 14, x:x + 14].permute(1, 0, 2, 3).reshape(-1)
        assert torch.equal(patches[row], block), row


def test_three_words_keeps_the_first_three_words():
    assert three_words("Man riding a horse, at dusk.") == "man riding a"
    assert three_words("Chef's knife chopping") == "chef's knife chopping"


def test_captions_are_written_as_a_feature_set_in_batches(five_clips, tiny_qwen):
    cfg = CaptionConfig(root=str(five_clips), model=str(tiny_qwen), frames_per_clip=4, frame_height=56,
                        frame_width=84, batch_size=2, detailed_tokens=6, short_tokens=4, three_word_tokens=4)
    frame = run_captions(cfg, torch.device("cpu"))
    written = read_feature_set(five_clips, "captions")
    assert sorted(written["key"]) == [f"clip_{i}" for i in range(5)]
    assert list(written.columns) == ["key", "caption_detailed", "caption_short", "caption_three_word", "caption"]
    assert (written["caption"] == written["caption_detailed"]).all()
    assert written.equals(frame)
    assert all(isinstance(t, str) for t in written["caption_detailed"])
    assert all(len(t.split()) <= 3 for t in written["caption_three_word"])


def test_batched_generation_equals_one_clip_at_a_time(five_clips, tiny_qwen):
    """Left padding and per-video grids: a clip's caption does not depend on its batch."""
    captioner = TransformersQwenCaptioner(tiny_qwen, torch.device("cpu"), torch.float32, (56, 84))
    rng = np.random.default_rng(2)
    videos = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(4, 32, 48, 3), (6, 40, 40, 3)]]
    together = captioner.describe(videos, [1.0, 2.0], "Describe this video.", 8)
    alone = [captioner.describe([v], [d], "Describe this video.", 8)[0] for v, d in zip(videos, [1.0, 2.0])]
    assert together == alone
    assert captioner.complete(["A man rides a horse."], 5) == captioner.complete(["A man rides a horse."], 5)


def test_caption_config_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="frame_height"):
        CaptionConfig(frame_height=100)
    with pytest.raises(ConfigError, match="frames_per_clip"):
        CaptionConfig(frames_per_clip=3)
    with pytest.raises(ConfigError, match="short_prompt"):
        CaptionConfig(short_prompt="no placeholder")
    with pytest.raises(ConfigError, match="model"):
        run_captions(CaptionConfig(root=str(tmp_path), model=str(tmp_path)), torch.device("cpu"))


def test_mvideo_caption_then_balance_then_dedup(five_clips, tiny_qwen, capsys):
    """The three post-curation commands chained over one curated output, each leaving its feature set."""
    from megatron_video.cli.main import main

    root = str(five_clips)
    assert main(["caption", f"root={root}", f"model={tiny_qwen}", "caption.frames_per_clip=2",
                 "caption.frame_height=56", "caption.frame_width=84", "caption.detailed_tokens=4",
                 "caption.short_tokens=2", "caption.three_word_tokens=3"]) == 0  # replaces earlier captions
    assert main(["balance", f"root={root}"]) == 0
    assert main(["dedup", f"root={root}", "dedup.threshold=0.99"]) == 0
    balance, dedup = read_feature_set(five_clips, "balance"), read_feature_set(five_clips, "dedup")
    # The training loader takes the detailed captions as its text.
    captions = read_feature_set(five_clips, "captions")
    selected = select_clips(DataConfig(shards=root)).captions
    assert selected == dict(zip(captions["key"], captions["caption_detailed"])) and len(selected) == 5
    assert sorted(balance["key"]) == sorted(dedup["key"]) == [f"clip_{i}" for i in range(5)]
    assert main(["dedup", f"root={root}", "dedup.threshold=2"]) == 2
    assert "dedup.threshold" in capsys.readouterr().err
