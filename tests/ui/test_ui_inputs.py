"""The playground's own input checks and the inline chart, without a browser (seconds)."""

import pytest

from components.ui.playground import Form, PlaygroundError, cli_command, parse
from components.ui.plots import line_chart


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (Form(prompt="  ", concept="c"), "prompt: empty"),
        (Form(prompt="x" * 501, concept="c"), "prompt: 501 characters"),
        (Form(prompt="p", concept=""), "concept: choose one"),
        (Form(prompt="p", concept="c", steps="0"), "steps 0: choose 1 to 100"),
        (Form(prompt="p", concept="c", steps="ten"), "steps 'ten': give a whole number"),
        (Form(prompt="p", concept="c", size="4096"), "size 4096: choose 8 to 1024"),
        (Form(prompt="p", concept="c", seed="-1"), "seed -1: choose 0 to"),
        (Form(prompt="p", concept="c", weight="heavy"), "weight of c 'heavy': give a number"),
    ],
)
def test_bad_input_is_refused_with_a_message(form, message):
    with pytest.raises(PlaygroundError, match=message.replace("(", r"\(")):
        parse(form)


def test_good_input_becomes_typed_values_and_a_generate_command():
    req = parse(Form(prompt=" a photo of a sks triangle ", seed="7", concept="t", concept2="u/2", weight2="0.5"))
    assert (req.prompt, req.seed, req.steps, req.size) == ("a photo of a sks triangle", 7, None, None)
    assert req.concepts == [("t", 1.0), ("u/2", 0.5)]
    line = cli_command(req, steps=8, guidance=5.0, size=32, tracking_uri="sqlite:///m.db")
    assert "--concept t:1 --concept u/2:0.5 --steps 8 --guidance 5 --width 32" in line


def test_chart_has_a_tooltip_per_point_and_whole_number_ticks():
    svg = line_chart([1, 2, 3], {"CLIP-I": [0.5, None, 0.75]}, "version")
    assert svg.count("<circle") == 2 and "CLIP-I at 3: 0.7500" in svg
    assert ">1.5<" not in line_chart([1, 2, 3, 4, 5, 6], {"loss": [1, 2, 3, 4, 5, 6]}, "step")
    assert "nothing to plot" in line_chart([], {"loss": []}, "step")
