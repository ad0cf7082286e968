"""Sketches (t2i/engine/sketch.py): a job without an init image starts from its prompt's sketch, the
preset's init_weight holds the latent near that start, and the file format loads back."""

import dataclasses
import io

import numpy as np
import pytest
import torch

from t2i.engine import run
from t2i.families import build_pipeline
from t2i.engine.sketch import SketchNet, load_sketch, save_sketch, sketch_image
from t2i.errors import PresetError, WeightsMissing
from t2i.presets import _parse, get_preset
from t2i.spec import make_spec
from t2i.train import clip as clip_training
from t2i.train import sketch as sketch_training

TINY = "tiny-vqgan-untrained"


def _tiny_models(sketch: SketchNet | None = None, init_weight: float = 0.0):
    tiny = get_preset(TINY)
    preset = dataclasses.replace(tiny, settings={**tiny.settings, "init_weight": init_weight})
    models = build_pipeline(preset)
    models.sketch = sketch
    return models


def _sketch_for(models) -> SketchNet:
    torch.manual_seed(0)
    dim = models.perceptors[0].encode_text(["x"]).shape[1]
    return SketchNet(embed_dim=dim, channels=(32, 16, 16, 8, 8)).eval()


def _spec(prompt="a red circle", **kw):
    return make_spec(prompt, TINY, seed=3, width=64, height=64, iterations=kw.pop("iterations", 1), cutn=2, **kw)


@pytest.mark.trains
def test_a_few_sketch_training_steps_reduce_the_loss():
    clip, tokenizer = clip_training.build(0)  # any text tower will do: the loss must still fall
    _, losses = sketch_training.train(clip, tokenizer, steps=40, batch_size=8, progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.mark.trains
def test_refining_a_trained_net_lowers_its_loss_further_and_leaves_it_frozen():
    """The second phase (issue 29): it starts from the net it is given, learns, and hands back a net in
    eval mode with no gradients, as `train` does; the same seed gives the same weights."""
    clip, tokenizer = clip_training.build(0)
    net, losses = sketch_training.train(clip, tokenizer, steps=30, batch_size=8, progress=False)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    refined = sketch_training.refine(net, clip, tokenizer, steps=30, batch_size=8, progress=False)
    assert np.mean(refined[-5:]) < np.mean(losses[:5])
    assert any(not torch.equal(v, net.state_dict()[k]) for k, v in start.items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    again = SketchNet(**net.config)
    again.load_state_dict(start)
    sketch_training.refine(again, clip, tokenizer, steps=30, batch_size=8, progress=False)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())
    canonical = SketchNet(**net.config)
    canonical.load_state_dict(start)
    sketch_training.refine(canonical, clip, tokenizer, steps=30, batch_size=8, progress=False, canonical=True)
    assert any(not torch.equal(v, canonical.state_dict()[k]) for k, v in net.state_dict().items())  # its own targets


def test_a_saved_sketch_loads_back_and_draws_the_same_image(tmp_path):
    net = SketchNet(embed_dim=16, channels=(32, 16, 16, 8, 8))
    save_sketch(net, tmp_path / "s.pt")
    loaded = load_sketch(tmp_path / "s.pt")
    assert loaded.config == net.config
    embed = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    assert torch.allclose(net(embed), loaded(embed), atol=2e-3)  # fp16 on disk


def test_a_missing_sketch_file_is_one_line_naming_the_command(tmp_path):
    with pytest.raises(WeightsMissing) as e:
        load_sketch(tmp_path / "nope.pt", download_hint="python -m t2i train-demo")
    assert "\n" not in str(e.value) and "train-demo" in str(e.value)


def test_a_prompt_with_no_positive_part_gets_no_sketch():
    net = SketchNet(embed_dim=4, channels=(32, 16, 16, 8, 8))
    embeds = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    assert sketch_image(net, embeds, [-1.0, 0.0]) is None
    assert sketch_image(net, embeds, [1.0, -1.0]).size == (64, 64)


def test_a_job_starts_from_its_sketch_unless_it_brings_an_init_image():
    models = _tiny_models()
    models.sketch = _sketch_for(models)
    spec = _spec()
    sketched = run(spec, models).frames[0]
    expected = sketch_image(models.sketch, models.perceptors[0].encode_text(["a red circle"]), [1.0])
    # The first frame is the generator's encoding of the sketch: the same as starting from the
    # sketch uploaded as the init image.
    buf = io.BytesIO()
    expected.save(buf, "PNG")
    uploaded = run(_spec(init_image=buf.getvalue()), models).frames[0]
    assert np.array_equal(np.asarray(sketched), np.asarray(uploaded))
    models.sketch = None
    plain = run(spec, models).frames[0]
    assert not np.array_equal(np.asarray(sketched), np.asarray(plain))


def test_init_weight_holds_the_latent_near_its_start():
    from t2i.engine import Runner

    drifts = {}
    for weight in (0.0, 1e6):
        models = _tiny_models(init_weight=weight)
        batch = Runner(models)
        slot = batch.add("job", _spec(iterations=30))
        start = slot.state.latent[0].detach().clone()
        while not slot.done:
            batch.step()
        drifts[weight] = float((slot.state.latent[0].detach() - start).pow(2).mean())
        assert (slot.state.anchor is None) == (weight == 0)
    assert drifts[1e6] < drifts[0.0] / 20, drifts


@pytest.mark.parametrize("raw, message", [
    ({"init_weight": -1}, "init_weight"),
    ({"init_weight": "lots"}, "init_weight"),
    ({"untrained": True, "sketch": "builtin:shapes/shapes-sketch.pt"}, "sketch"),
])
def test_bad_sketch_settings_in_a_preset_are_refused(raw, message):
    base = {"generator": {"kind": "vqgan", "arch": "models/tiny-vqgan.yaml"},
            "perceptors": [{"model": "tiny-clip"}], "untrained": True}
    name = "x-untrained"
    with pytest.raises(PresetError, match=message):
        _parse(name, {**base, **raw})


def test_a_sketch_net_with_a_reader_saves_and_loads_and_an_old_file_without_one_still_loads(tmp_path):
    """The reader (an MLP on the embedding) is part of the checkpoint's config; a file written before
    it existed (config without "reader") loads as the plain net it was."""
    torch.manual_seed(0)
    embed = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    for reader in (32, 0):
        net = SketchNet(embed_dim=16, channels=(32, 16, 16, 8, 8), reader=reader).eval()
        save_sketch(net, tmp_path / f"r{reader}.pt")
        back = load_sketch(tmp_path / f"r{reader}.pt")
        assert (back.read is not None) == bool(reader) and ("reader" in back.config) == bool(reader)
        assert torch.allclose(back(embed), net(embed), atol=2e-3)  # fp16 on disk
    saved = torch.load(tmp_path / "r32.pt", weights_only=True)
    assert saved["config"]["reader"] == 32 and "read.0.weight" in saved["state_dict"]
