"""The web app in a real browser against a real registry: the numbers shown are the registry's, the
playground draws with components.generate, bad input is refused on the page, and promotion by hand is
refused without --allow-promotion and recorded with it. Screenshots of every page are saved.

The tests share one registry and run in file order; the promotion test, which moves `champion`, is last.
"""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

pytestmark = pytest.mark.slow  # a registry filled by training twice, two servers, a browser: minutes


def registry_view(toy_registry):
    """What the registry holds, read here with MLflow's own client (not the app's code)."""
    client = MlflowClient(tracking_uri=toy_registry.tracking_uri, registry_uri=toy_registry.tracking_uri)
    name = toy_registry.concept
    model = client.get_registered_model(name)
    versions = {}
    for mv in client.search_model_versions(f"name = '{name}'"):
        eval_run = mv.tags.get("conceptlab.eval_run_id") or mv.run_id
        versions[str(mv.version)] = {
            "tags": mv.tags,
            "metrics": client.get_run(eval_run).data.metrics,
            "run": client.get_run(mv.run_id),
            "loss": client.get_metric_history(mv.run_id, "train_loss"),
        }
    return client, dict(model.aliases), versions


def shot(page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"ui-{name}.png"), full_page=True)


def test_concepts_page_shows_each_concept_as_the_registry_has_it(ui_servers, page, toy_registry, artifacts):
    _, aliases, versions = registry_view(toy_registry)
    page.goto(ui_servers["readonly"].url + "/")
    row = page.locator(f'tr[data-concept="{toy_registry.concept}"]')
    cell = lambda field: row.locator(f'[data-field="{field}"]').inner_text().strip()  # noqa: E731
    assert cell("champion") == f"v{aliases['champion']}" == "v1"
    assert cell("challenger") == f"v{aliases['challenger']}" == "v2"
    assert cell("base_model") == versions["2"]["tags"]["conceptlab.base_model"] == "toyworld-sd"
    assert cell("verdict") == versions["2"]["tags"]["gate.verdict"] == "refused"
    assert cell("versions") == "2"
    newest = max(v["run"].info.start_time for v in versions.values())
    assert cell("last_trained") == datetime.fromtimestamp(newest / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    assert "Read-only" in page.get_by_test_id("mode").inner_text()
    shot(page, artifacts, "concepts")


def test_concept_page_numbers_checks_lineage_and_images_are_the_registrys(ui_servers, page, toy_registry, artifacts):
    _, aliases, versions = registry_view(toy_registry)
    page.goto(f"{ui_servers['readonly'].url}/concepts/{toy_registry.concept}")
    assert page.get_by_test_id("champion").inner_text() == "v1"
    for number, v in versions.items():
        row = page.locator(f'table[data-testid="versions"] tr[data-version="{number}"]')
        for metric in ("clip_i", "clip_t", "prior_drift", "clip_i_gain", "base_clip_i"):
            shown = row.locator(f'[data-metric="{metric}"]').inner_text()
            assert shown == f"{v['metrics'][metric]:.4f}", (number, metric)
        assert row.locator('[data-field="verdict"]').inner_text() == v["tags"]["gate.verdict"]
        # The plot carries the same numbers (one tooltip per point).
        for label, metric in (("CLIP-I", "clip_i"), ("CLIP-T", "clip_t"), ("prior drift", "prior_drift")):
            tip = f"{label} at {number}: {v['metrics'][metric]:.4f}"
            assert page.locator("svg.metrics title", has_text=tip).count() == 1, tip
        section = page.get_by_test_id(f"version-{number}")
        assert section.locator('[data-field="git_commit"]').inner_text() == v["tags"]["conceptlab.git_commit"]
        checks = {k.removeprefix("gate.check."): d for k, d in v["tags"].items() if k.startswith("gate.check.")}
        failed = set(v["tags"]["gate.failed_checks"].split(","))
        assert checks, "the gate wrote its checks"
        for check, detail in checks.items():
            shown = page.get_by_test_id(f"checks-{number}").locator(f'tr[data-check="{check}"]')
            assert shown.locator("td").nth(2).inner_text() == detail
            assert shown.locator("td").nth(1).inner_text() == ("FAIL" if check in failed else "pass")
        # The loss curve has a point per logged step; the grid is the evaluation's PNG.
        points = section.locator("svg.loss polyline").get_attribute("points").split()
        assert len(points) == len(v["loss"]) > 0
        grid = section.locator("img.grid")
        grid.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=grid.element_handle())
    assert page.get_by_test_id("photos").locator("img").count() == 6
    assert page.evaluate(
        "[...document.querySelectorAll('[data-testid=photos] img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, artifacts, "concept")

    # Side by side, chosen in the form: v2 left, v1 right; the difference is right minus left.
    form = page.get_by_test_id("compare-form")
    form.locator('select[name="a"]').select_option("2")
    form.locator('select[name="b"]').select_option("1")
    form.locator("button").click()
    page.wait_for_url("**/concepts/*?a=2&b=1")
    cells = page.locator('table[data-testid="compare"] tr[data-metric="clip_i"] td')
    a, b = versions["2"]["metrics"]["clip_i"], versions["1"]["metrics"]["clip_i"]
    assert [cells.nth(i).inner_text() for i in (1, 2, 3)] == [f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}"]
    assert page.get_by_test_id("compare-grids").locator("img").count() == 2
    shot(page, artifacts, "compare")


def decode(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


def test_playground_draws_base_and_adapter_at_the_same_seed_with_generate(ui_servers, page, toy_registry, artifacts):
    from components import generate as gen

    page.set_default_timeout(300_000)  # the first picture imports diffusers and loads the base model
    page.goto(ui_servers["readonly"].url + "/playground")
    assert page.get_by_test_id("prompt").input_value() == "a photo of a sks triangle"
    assert page.get_by_test_id("concept").input_value() == toy_registry.concept  # its champion
    page.get_by_test_id("seed").fill("7")
    page.get_by_test_id("steps").fill("8")
    page.get_by_test_id("generate").click()
    page.get_by_test_id("adapter-image").wait_for(timeout=300_000)
    base = decode(page.get_by_test_id("base-image").get_attribute("src"))
    adapter = decode(page.get_by_test_id("adapter-image").get_attribute("src"))
    assert base.shape == adapter.shape == (32, 32, 3)
    assert np.abs(base - adapter).max() > 8, "the adapter changes the picture"
    shot(page, artifacts, "playground")

    # The same settings through components.generate in this process draw the same pixels.
    resolved = gen.resolve_adapter(toy_registry.concept, toy_registry.tracking_uri)
    assert resolved.version == "1"
    pipe = gen.load_base(resolved.base_model)
    common = dict(prompts=["a photo of a sks triangle"], seeds=[7], steps=8)
    common.update(guidance=resolved.eval_settings.get("guidance", gen.DEFAULTS["guidance"]))
    common.update(sampler=resolved.eval_settings.get("sampler", gen.DEFAULTS["sampler"]))
    direct = gen.generate(pipe, [(resolved, 1.0)], **common).images[0].image
    direct_base = gen.generate(pipe, [], **common).images[0].image
    assert np.abs(np.asarray(direct, dtype=np.int16) - adapter).max() <= 1
    assert np.abs(np.asarray(direct_base, dtype=np.int16) - base).max() <= 1

    # Two adapters combined with weights: still the base on the left, the mix on the right.
    page.get_by_test_id("concept2").fill(f"{toy_registry.concept}/2")
    page.get_by_test_id("weight2").fill("0.5")
    page.get_by_test_id("generate").click()
    page.wait_for_url("**concept2=*")
    page.get_by_test_id("adapter-image").wait_for(timeout=300_000)
    heading = page.get_by_test_id("result").locator("h3").nth(1).inner_text()
    assert "v1" in heading and "v2" in heading and "0.5" in heading
    assert np.array_equal(decode(page.get_by_test_id("base-image").get_attribute("src")), base)
    shot(page, artifacts, "playground-combined")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", "   ", "prompt: empty"),
        ("steps", "100000", "steps 100000: choose 1 to 100"),
        ("size", "100000", "size 100000: choose 8 to 1024"),
        ("concept", "no-such-concept", "'no-such-concept' is not registered"),
    ],
)
def test_playground_refuses_bad_input_with_a_message(ui_servers, page, field, value, message, artifacts):
    page.goto(ui_servers["readonly"].url + "/playground")
    page.get_by_test_id(field).fill(value)
    page.get_by_test_id("generate").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert message in alert.inner_text()
    assert page.get_by_test_id("result").count() == 0
    if field == "steps":
        shot(page, artifacts, "playground-refused")


def test_promotion_by_hand_is_refused_without_the_flag(ui_servers, page, toy_registry):
    client, _, _ = registry_view(toy_registry)
    page.goto(f"{ui_servers['readonly'].url}/concepts/{toy_registry.concept}")
    assert page.locator('form[data-testid^="promote-"]').count() == 0, "no promote button on a read-only app"
    # Even a hand-made request is refused.
    response = page.request.post(
        f"{ui_servers['readonly'].url}/concepts/{toy_registry.concept}/promote", form={"version": "2"}
    )
    assert response.status == 403 and "promotion by hand is off" in response.text()
    assert str(client.get_model_version_by_alias(toy_registry.concept, "champion").version) == "1"


def test_promotion_behind_a_proxy_is_only_for_the_named_promoters(ui_servers, page, toy_registry):
    """Started with --promoter alice: anyone else the proxy names, or nobody, is refused before the
    registry is touched."""
    client, _, _ = registry_view(toy_registry)
    url = f"{ui_servers['promotion'].url}/concepts/{toy_registry.concept}/promote"
    refused = page.request.post(url, form={"version": "2"}, headers={"X-Forwarded-User": "mallory"})
    assert refused.status == 403 and "mallory may not move champion (allowed: alice)" in refused.text()
    assert page.request.post(url, form={"version": "2"}).status == 403
    assert str(client.get_model_version_by_alias(toy_registry.concept, "champion").version) == "1"


def test_promotion_by_hand_moves_champion_and_records_who(ui_servers, browser, toy_registry, artifacts):
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, extra_http_headers={"X-Forwarded-User": "alice"}
    )
    page = context.new_page()
    page.goto(f"{ui_servers['promotion'].url}/concepts/{toy_registry.concept}")
    assert "Promotion by hand is ON" in page.get_by_test_id("mode").inner_text()
    assert "alice" in page.get_by_test_id("mode").inner_text()
    assert page.get_by_test_id("promote-1").count() == 0, "v1 is already the champion"
    before = datetime.now(UTC).replace(microsecond=0)
    page.get_by_test_id("promote-2").locator("button").click()
    notice = page.get_by_test_id("promoted")
    notice.wait_for()
    assert "v2 is now the champion" in notice.inner_text() and "alice" in notice.inner_text()
    assert "(was v1)" in notice.inner_text()
    client, aliases, versions = registry_view(toy_registry)
    assert aliases["champion"] == 2
    tags = versions["2"]["tags"]
    assert tags["promotion.by"] == "alice" and tags["promotion.previous_champion"] == "1"
    at = datetime.strptime(tags["promotion.at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= at <= datetime.now(UTC)
    assert page.get_by_test_id("version-2").locator('[data-field="promoted_by"]').inner_text().startswith("alice at ")
    shot(page, artifacts, "promoted")
    context.close()
