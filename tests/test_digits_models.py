"""The digits world's models: CharCLIP, the digit classifier (the judge), and the DDPM training run."""

import numpy as np
import pytest
import torch

from t2i.data import digits
from t2i.engine import charclip
from t2i.engine.charclip import CharClipText, build_char_clip, load_char_clip, save_char_clip
from t2i.errors import T2IError, WeightsMissing
from t2i.train import digit_classifier as dc
from t2i.train.charclip import train_char_clip

SMALL = {"dim": 16, "char_dim": 8, "hidden": 16, "layers": 1, "image_width": 8}


def test_tokenize_lowercases_clips_and_marks_unknowns():
    ids, lengths = charclip.tokenize(["Six", "é6", "x" * 50, ""], max_length=32)
    assert ids.shape == (4, 32) and lengths.tolist() == [3, 2, 32, 1]
    assert ids[0, :3].tolist() == charclip.tokenize(["six"])[0][0, :3].tolist()
    assert ids[1, 0] == charclip.UNKNOWN and ids[1, 1] > charclip.UNKNOWN
    assert ids[3, 0] == charclip.UNKNOWN and (ids[0, 3:] == charclip.PAD).all()


def test_embeddings_are_unit_and_independent_of_batch_mates():
    torch.manual_seed(0)
    model = build_char_clip(**SMALL).eval()
    alone = model.encode_text(["seven"])
    together = model.encode_text(["a much longer caption than seven", "seven"])
    assert torch.allclose(alone[0], together[1], atol=1e-6)
    assert torch.allclose(together.norm(dim=-1), torch.ones(2), atol=1e-5)
    images = torch.rand(3, 1, 32, 32)
    assert torch.allclose(model.encode_image(images[:1]), model.encode_image(images)[:1], atol=1e-5)


def test_char_clip_text_component():
    torch.manual_seed(0)
    text = CharClipText(build_char_clip(**SMALL).eval())
    states = text.encode(["six", "the digit six"])
    assert states.shape == (2, 1, 16) and text.dim == 16
    assert torch.allclose(states.norm(dim=-1), torch.ones(2, 1), atol=1e-5)
    assert torch.equal(text.null(3), torch.zeros(3, 1, 16))


def test_bad_config_is_one_line():
    with pytest.raises(ValueError, match="bad CharCLIP config"):
        build_char_clip(dims=3)


@pytest.mark.trains
def test_char_clip_loss_falls():
    model, losses = train_char_clip(steps=30, batch=32, progress=False, config=SMALL)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, losses
    assert not model.training


def test_char_clip_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_char_clip(**SMALL).eval()
    path = tmp_path / "clip.pt"
    save_char_clip(model, path)
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["dim"] == 16
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    back = load_char_clip(path)
    assert all(p.dtype == torch.float32 for p in back.parameters())
    prompts = ["zero", "a handwritten 9"]
    images = torch.rand(2, 1, 32, 32)
    assert torch.allclose(back.encode_text(prompts), model.encode_text(prompts), atol=5e-3)
    assert torch.allclose(back.encode_image(images), model.encode_image(images), atol=5e-3)
    assert not list(tmp_path.glob("*.tmp"))


def _one_line(err, path):
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_char_clip_load_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsMissing) as err:
        load_char_clip(missing)
    _one_line(err, missing)

    torch.manual_seed(0)
    path = tmp_path / "clip.pt"
    save_char_clip(build_char_clip(**SMALL), path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"].pop("text.proj.weight")
    ckpt["state_dict"]["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad-keys.pt"
    torch.save(ckpt, bad)
    with pytest.raises(T2IError, match="missing text.proj.weight; unexpected extra.weight") as err:
        load_char_clip(bad)
    _one_line(err, bad)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(T2IError, match="not a readable") as err:
        load_char_clip(truncated)
    _one_line(err, truncated)


def test_classifier_save_load_and_classify(tmp_path):
    torch.manual_seed(0)
    model = dc.DigitClassifier(width=8).eval()
    path = tmp_path / "cls.pt"
    dc.save_classifier(model, path)
    raw = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    back = dc.load_classifier(path)
    images, _, _ = digits.sample(16, np.random.default_rng(0))
    x = dc.to_float(images)
    assert torch.allclose(back(x), model(x), atol=1e-2)
    labels = dc.classify(back, images)
    assert labels.dtype == np.int64 and labels.shape == (16,)
    assert np.array_equal(labels, dc.classify(back, x))  # uint8 (n, 32, 32) and float (n, 1, 32, 32)
    with pytest.raises(ValueError, match=r"\(n, 32, 32\)"):
        dc.classify(back, np.zeros((2, 3, 32, 32)))


def test_judge_scores_accuracy_and_diversity():
    torch.manual_seed(0)
    model = dc.DigitClassifier(width=8).eval()
    rng = np.random.default_rng(5)
    varied = digits.render_batch(np.full(16, 4), rng)
    predicted = dc.classify(model, varied)
    r = dc.judge(varied, [4] * 16, model)
    assert r["accuracy"] == pytest.approx(float((predicted == 4).mean()))
    assert 0.6 < r["diversity"][4] < 1.6  # renders are as varied as renders
    same = np.repeat(varied[:1], 16, axis=0)
    assert dc.judge(same, [4] * 16, model)["diversity_min"] == 0.0
    with pytest.raises(ValueError, match="16 images for 3"):
        dc.judge(varied, [4, 4, 4], model)


# --- the whole digits world, with tiny step counts ------------------------------------------------

TINY = {"clip_steps": 2, "unet_steps": 2, "classifier_steps": 2, "progress": False, "eval_n": 50}


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from t2i.train.digits import train_digits

    out = tmp_path_factory.mktemp("digits")
    figures = train_digits(out, seed=0, **TINY)
    return out, figures


@pytest.mark.trains
def test_train_digits_writes_loadable_files(trained):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    out, figures = trained
    assert set(_files(out)) == {"digits-clip.pt", "digits-classifier.pt", "unet/config.json",
                                "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"}
    assert all(v.dtype == torch.float16 for v in load_file(out / "unet/diffusion_pytorch_model.safetensors").values())
    unet = UNet2DConditionModel.from_pretrained(out / "unet", torch_dtype=torch.float32)
    scheduler = DDPMScheduler.from_pretrained(out / "scheduler")
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2" and scheduler.config.prediction_type == "epsilon"
    text = CharClipText(load_char_clip(out / "digits-clip.pt"))
    classifier = dc.load_classifier(out / "digits-classifier.pt")
    with torch.no_grad():
        eps = unet(torch.zeros(2, 1, 32, 32), torch.tensor([10, 900]),
                   encoder_hidden_states=torch.cat([text.encode(["six"]), text.null(1)])).sample
    assert eps.shape == (2, 1, 32, 32) and eps.dtype == torch.float32 and torch.isfinite(eps).all()
    assert text.dim == unet.config.cross_attention_dim
    assert dc.classify(classifier, np.zeros((1, 32, 32), np.uint8)).shape == (1,)
    for key in ("clip_loss_first", "clip_loss_last", "clip_zero_shot", "classifier_held_out",
                "unet_loss_first", "unet_loss_last", "seconds"):
        assert np.isfinite(figures[key]), key


@pytest.mark.trains
def test_train_digits_is_byte_repeatable(trained, tmp_path):
    from t2i.train.digits import train_digits

    out, _ = trained
    train_digits(tmp_path, seed=0, **TINY)
    assert _files(tmp_path) == _files(out)


@pytest.mark.trains
def test_interrupted_save_leaves_the_folder_as_it_was(trained, tmp_path):
    from t2i.train.digits import train_digits

    out, _ = trained
    for name, data in _files(out).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = _files(tmp_path)

    def interrupt(name):
        if name == "unet":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_digits(tmp_path, seed=1, on_saved=interrupt, **TINY)
    assert _files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-classifier.pt", "digits-clip.pt", "scheduler", "unet"]
