"""Tiny randomly initialised diffusers pipelines, built at test time (nothing downloads).

- `build_tiny_sd(dir)`: a Stable Diffusion pipeline (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
  a CLIP BPE tokenizer over a byte-level character vocabulary, DDIMScheduler), `save_pretrained(dir)`.
- `build_tiny_audioldm(dir)`: an AudioLDM pipeline (UNet, 1-channel VAE, ClapTextModelWithProjection,
  a RoBERTa BPE tokenizer, SpeechT5HifiGan vocoder).
- `build_tiny_ltx(dir)`: an LTX-Video pipeline (LTXVideoTransformer3DModel, AutoencoderKLLTXVideo, a
  T5 encoder with a character-level Unigram tokenizer, FlowMatchEulerDiscreteScheduler): text→video,
  and image→video through diffusers' LTXImageToVideoPipeline on the same components.
- `install_in_hub_cache(src, cache, repo_id)`: copy a saved pipeline into an offline hub-cache layout
  (`models--org--name/snapshots/<40 zeros>/` + `refs/main`), for loaders that take only repo ids.

Weights are seeded (torch.manual_seed) so the same build gives the same pipeline. Each build is a few
hundred KB and takes a few seconds on 2 cores; the test modules cache them per session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SNAPSHOT = "0" * 40


def _byte_level_chars() -> list[str]:
    """GPT-2's byte -> unicode table: every byte gets one printable character (CLIP and RoBERTa use it)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _write_bpe(directory: Path, vocab: dict[str, int]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.json"
    merges_file = directory / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")  # no merges: one token per character
    return vocab_file, merges_file


def _clip_tokenizer(work: Path):
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for char in _byte_level_chars():
        vocab.setdefault(char, len(vocab))
    for char in _byte_level_chars():
        vocab.setdefault(char + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    vocab_file, merges_file = _write_bpe(work, vocab)
    return CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77)


def _roberta_tokenizer(work: Path):
    from transformers import RobertaTokenizer

    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in _byte_level_chars():
        vocab.setdefault(char, len(vocab))
    vocab["<mask>"] = len(vocab)
    vocab_file, merges_file = _write_bpe(work, vocab)
    return RobertaTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77)


def build_tiny_sd(directory: Path, *, seed: int = 0) -> Path:
    """Save a tiny random Stable Diffusion pipeline to `directory` (text-to-image and image-to-image)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory = Path(directory)
    tokenizer = _clip_tokenizer(directory.parent / f"{directory.name}-tokenizer-src")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=16,
            intermediate_size=32,
            layer_norm_eps=1e-05,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            projection_dim=16,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(directory))
    return directory


def build_tiny_audioldm(directory: Path, *, seed: int = 0) -> Path:
    """Save a tiny random AudioLDM (text-to-audio) pipeline to `directory`; 16 kHz output."""
    import torch
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import (
        ClapTextConfig,
        ClapTextModelWithProjection,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    directory = Path(directory)
    tokenizer = _roberta_tokenizer(directory.parent / f"{directory.name}-tokenizer-src")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=8,
        class_embeddings_concat=True,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=1,
        out_channels=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
    )
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=8,
            intermediate_size=16,
            layer_norm_eps=1e-05,
            num_attention_heads=1,
            num_hidden_layers=1,
            vocab_size=len(tokenizer),
            projection_dim=8,
            max_position_embeddings=80,
        )
    )
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[8, 8],  # 64 samples per mel frame: few frames per second, fast
            upsample_kernel_sizes=[16, 16],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )
    # HiFi-GAN's own init (std 0.01) leaves a random vocoder near silent (|x| < 1e-5, all zeros as
    # 16-bit PCM); PyTorch's default conv init gives an audible, seed-dependent waveform.
    for module in vocoder.modules():
        if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
            module.reset_parameters()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = AudioLDMPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        vocoder=vocoder,
    )
    pipe.save_pretrained(str(directory))
    return directory


def _t5_tokenizer():
    from transformers import T5TokenizerFast

    # One Unigram piece per printable ASCII character (+ the word-start marker): no merges to learn.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -1.0) for c in range(32, 127)]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=64)


def build_tiny_ltx(directory: Path, *, seed: int = 0) -> Path:
    """Save a tiny random LTX-Video pipeline to `directory` (sizes as in diffusers' own LTX tests: 4x
    temporal and 4x spatial VAE compression, so 9 frames at 32x32 is 3 latent frames of 8x8)."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    directory = Path(directory)
    tokenizer = _t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(str(directory))
    return directory


def install_in_hub_cache(source: Path, cache: Path, repo_id: str) -> Path:
    """Copy a saved pipeline into `cache` as an offline hub snapshot of `repo_id`; returns the snapshot."""
    repo_dir = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / SNAPSHOT
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(source, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(SNAPSHOT, encoding="utf-8")
    return snapshot


_built: dict[str, Path] = {}  # per test session: kind -> saved pipeline dir


def cached(kind: str, factory) -> Path:
    """The tiny pipeline of `kind` ("sd", "audioldm" or "ltx"), built once per session under pytest's
    `tmp_path_factory` (pass it as `factory`)."""
    path = _built.get(kind)
    if path is None or not (path / "model_index.json").is_file():
        build = {"sd": build_tiny_sd, "audioldm": build_tiny_audioldm, "ltx": build_tiny_ltx}[kind]
        path = _built[kind] = build(factory.mktemp(f"tiny-{kind}") / "pipeline")
    return path
