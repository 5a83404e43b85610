"""Tiny flow-matching models (Flux.1 dev/schnell and SD3/3.5 layouts) built from configs with fixed seeds.

Same rule as ``components/tiny_models.py``: real diffusers / transformers classes with random weights,
saved with the pipeline's ``save_pretrained`` and loaded back by its ``from_pretrained``. Every shape that
differs from the real model is only smaller: 16-channel VAE with the real scaling and shift factors, the
real scheduler configs, CLIP's real BPE vocabulary. No package ships T5's SentencePiece model, so the T5
tokenizer is a small Unigram vocabulary built here (T5's special-token layout, a fixed word list, single
characters as the fallback), written in T5's own tokenizer class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

TINY_FLUX = "tiny-flux"
TINY_FLUX_SCHNELL = "tiny-flux-schnell"
TINY_SD3 = "tiny-sd3"
FLOW_MODEL_NAMES = (TINY_FLUX, TINY_FLUX_SCHNELL, TINY_SD3)

_CLIP_DIM = 32
_T5_DIM = 32  # Flux: joint_attention_dim = T5 d_model (4096 for T5-XXL)
_SD3_T5_DIM = 64  # SD3: T5 d_model >= the two CLIP hidden sizes side by side (768 + 1280 <= 4096)
T5_MAX_LENGTH = 512  # what FluxPipeline / StableDiffusion3Pipeline pass as max_sequence_length by default

# Real factors of the 16-channel VAEs (config.json of FLUX.1-dev/vae and stable-diffusion-3.5-large/vae).
FLUX_VAE_FACTORS = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
SD3_VAE_FACTORS = {"scaling_factor": 1.5305, "shift_factor": 0.0609}

# Real scheduler configs: FLUX.1-dev shifts with the image size (mu from the sequence length), FLUX.1-schnell
# does not shift; SD3/3.5 uses a fixed shift of 3.
FLUX_DEV_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
FLUX_SCHNELL_SCHEDULER = {**FLUX_DEV_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False}
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}

# Words of the prompts this project writes (DreamBench-style templates, class nouns, the toy world); any
# other text still tokenizes, letter by letter.
_T5_WORDS = """a an the of in on with and at by for to from is are photo picture image rendering close up
sks zwx ohwx dog cat car robot toy teddy bear backpack sneaker shoe vase bowl cup clock candle teapot boot
glasses sunglasses duck monster plushie can berry cartoon person man woman child house tree flower jungle
snow beach city street mountain river sea water grass forest desert road table floor wall background blue red
green yellow purple orange pink black white gray brown gold silver wooden metal shiny small big large tiny
top bottom front back side view left right triangle square circle star shape toyworld high quality detailed"""


def t5_unigram_vocab(words: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """A T5-layout Unigram vocabulary: <pad>=0, </s>=1, <unk>=2, pieces, then 100 sentinels in reverse.
    ``words``: the whole-word pieces (default: the prompts this project writes).

    Whole words carry a higher score than the sum of their letters, so the Unigram model prefers them;
    single ASCII characters (with and without the word-start marker) cover any other ASCII text.
    """
    pieces: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -2.0}
    for word in _T5_WORDS.split() if words is None else words:
        pieces.setdefault("▁" + word, -5.0)
    for code in range(33, 127):
        pieces.setdefault("▁" + chr(code), -10.0)
        pieces.setdefault(chr(code), -10.5)
    vocab = list(pieces.items())
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    return vocab


def t5_tokenizer(words: Sequence[str] | None = None, max_length: int = T5_MAX_LENGTH):
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=t5_unigram_vocab(words), extra_ids=100, model_max_length=max_length)


def _clip_config(projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=_CLIP_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection_dim or _CLIP_DIM,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def _t5_encoder(vocab_size: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    # T5 v1.1 layout (gated GELU, untied head) as T5-XXL, shrunk.
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            is_encoder_decoder=False,
            use_cache=False,
        )
    )


def _vae_16ch(factors: dict[str, float]):
    from components.tiny_models import tiny_vae

    # No quant convs, as Flux's and SD3's VAEs ship.
    return tiny_vae(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, **factors)


def build_tiny_flux(out_dir: Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """FLUX.1 layout: double- and single-stream blocks, 64 packed input channels, CLIP pooled + T5 states.

    ``guidance_embeds=True`` is FLUX.1-dev (guidance-distilled: the guidance scale is an input);
    False is FLUX.1-schnell.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from components.tiny_models import clip_tokenizer

    torch.manual_seed(seed)
    t5_tok = t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels x a 2x2 patch
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_T5_DIM,
        pooled_projection_dim=_CLIP_DIM,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim, as (16, 56, 56) sums to 128
    )
    scheduler = FlowMatchEulerDiscreteScheduler(**(FLUX_DEV_SCHEDULER if guidance_embeds else FLUX_SCHNELL_SCHEDULER))
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=_vae_16ch(FLUX_VAE_FACTORS),
        text_encoder=CLIPTextModel(_clip_config()),
        tokenizer=clip_tokenizer(),
        text_encoder_2=_t5_encoder(len(t5_tok), _T5_DIM),
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_flux_schnell(out_dir: Path, seed: int = 0) -> Path:
    return build_tiny_flux(out_dir, seed, guidance_embeds=False)


def build_tiny_sd3(out_dir: Path, seed: int = 0) -> Path:
    """SD3.5 layout: MMDiT with RMS-normed q/k, two CLIP encoders with projections and a T5 encoder."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    from components.tiny_models import clip_tokenizer

    torch.manual_seed(seed)
    t5_tok = t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=8,  # latent side at 64 px
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=_SD3_T5_DIM,
        caption_projection_dim=32,
        pooled_projection_dim=2 * _CLIP_DIM,  # both CLIP projections side by side
        out_channels=16,
        pos_embed_max_size=16,
        qk_norm="rms_norm",
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=_vae_16ch(SD3_VAE_FACTORS),
        text_encoder=CLIPTextModelWithProjection(_clip_config()),
        tokenizer=clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config()),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5_encoder(len(t5_tok), _SD3_T5_DIM),
        tokenizer_3=t5_tok,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


FLOW_BUILDERS = {
    TINY_FLUX: build_tiny_flux,
    TINY_FLUX_SCHNELL: build_tiny_flux_schnell,
    TINY_SD3: build_tiny_sd3,
}
