"""How generation asks each Flux layout for classifier-free guidance: FLUX.1-dev's guidance embedding takes
the scale as an input; a model without one (schnell layout, toyworld-flux) gets FluxPipeline's true CFG
against the empty (or the given negative) prompt, with T5 states as long as its tokenizer makes them."""

from types import SimpleNamespace

from components.families.flux import Flux


def _pipe(guidance_embeds: bool, t5_length: int = 32):
    return SimpleNamespace(
        transformer=SimpleNamespace(config=SimpleNamespace(guidance_embeds=guidance_embeds)),
        tokenizer_2=SimpleNamespace(model_max_length=t5_length),
    )


def test_without_a_guidance_embedding_guidance_is_true_cfg_against_the_empty_prompt():
    kwargs = Flux().guidance_kwargs(_pipe(False), 5.0, "", 3)
    assert kwargs == {"max_sequence_length": 32, "true_cfg_scale": 5.0, "negative_prompt": ["", "", ""]}
    assert Flux().guidance_kwargs(_pipe(False), 5.0, "blurry", 1)["negative_prompt"] == ["blurry"]


def test_guidance_at_most_one_runs_no_second_pass():
    kwargs = Flux().guidance_kwargs(_pipe(False), 1.0, "", 2)
    assert "true_cfg_scale" not in kwargs and kwargs["negative_prompt"] is None


def test_flux_dev_keeps_its_distilled_guidance_input():
    kwargs = Flux().guidance_kwargs(_pipe(True, t5_length=512), 3.5, "", 2)
    assert kwargs == {"max_sequence_length": 512, "guidance_scale": 3.5, "negative_prompt": None}
