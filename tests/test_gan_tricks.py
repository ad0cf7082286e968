"""The later text-to-image GANs' additions to GAN-INT-CLS training (t2i/train/gan_tricks.py and their
use in t2i/train/gan.py): each piece does what its paper says, and a run with all of them trains,
resumes exactly and writes the moving average as generator.pt. Tiny real networks on the CPU."""

import dataclasses
import math

import pytest
import torch

from t2i.engine.gan_int_cls import ProjectionDiscriminator, load_generator
from t2i.errors import T2IError
from t2i.train.gan import GanConfig, d_losses, train
from t2i.train.gan_data import shapes_source
from t2i.train.ema import Ema
from t2i.train.gan_tricks import diff_augment, matching_aware_gp, mode_seeking

EMBED = 16
ALL = dict(ngf=4, ndf=4, batch_size=6, type="hinge", d_arch="projection", augment="translation,cutout",
           ma_gp=2.0, ms_coef=1.0, ema=0.9, l2_coef=0.0)


def test_translation_shifts_and_cutout_blanks_half_the_side():
    x = torch.zeros(4, 3, 16, 16)
    x[:, :, 8, 8] = 1  # one lit pixel per image
    moved = diff_augment(x, ("translation",), torch.Generator().manual_seed(0))
    again = diff_augment(x, ("translation",), torch.Generator().manual_seed(0))
    assert torch.equal(moved, again) and moved.shape == x.shape
    for image in moved:  # the pixel moved by at most 1/8 of the side (2 px), or left the picture
        lit = image[0].nonzero()
        assert len(lit) <= 1 and all(abs(int(v) - 8) <= 2 for v in (lit[0] if len(lit) else [8, 8]))
    assert not all(torch.equal(m, x[0]) for m in moved)  # four draws do not all keep it still
    ones = torch.ones(4, 3, 16, 16)
    cut = diff_augment(ones, ("cutout",), torch.Generator().manual_seed(1))
    assert all(int((c[0] == 0).sum()) == 8 * 8 for c in cut)  # one 8x8 square per image
    grad = torch.ones(2, 3, 16, 16, requires_grad=True)
    diff_augment(grad, ("translation", "cutout"), torch.Generator().manual_seed(2)).sum().backward()
    assert grad.grad is not None and grad.grad.abs().sum() > 0  # differentiable: G learns through it


def test_the_moving_average_follows_the_network_by_one_minus_decay():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = Ema(net, decay=0.75)
    ema.updates = 100  # past the warm-up
    before = ema.net[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(4.0)
        net[1].running_mean.fill_(3.0)
    ema.update(net)
    assert torch.allclose(ema.net[0].weight, before + 1.0)  # a quarter of the way
    fresh = Ema(net, decay=0.999)
    with torch.no_grad():
        net[0].weight.add_(10.0)
    fresh.update(net)  # the first update weighs the network 1 - 2/11, not 1 - 0.999
    assert torch.allclose(fresh.net[0].weight, net[0].weight - 10.0 * 2 / 11, atol=1e-5)
    assert torch.equal(ema.net[1].running_mean, net[1].running_mean)  # buffers copied
    assert not any(p.requires_grad for p in ema.net.parameters())


def test_mode_seeking_is_large_when_two_noises_give_one_image():
    z1, z2 = torch.zeros(2, 4), torch.ones(2, 4)
    same = torch.ones(2, 3, 4, 4)
    assert mode_seeking(same, same, z1, z2) > 1e4
    assert mode_seeking(same, -same, z1, z2) == pytest.approx(0.5, rel=1e-3)


def test_the_projection_discriminator_scores_the_text_and_its_penalty_is_zero_centred():
    torch.manual_seed(0)
    d = ProjectionDiscriminator(EMBED, ndf=4)
    images, embed = torch.randn(3, 3, 64, 64), torch.randn(3, EMBED)
    score, features = d(images, embed)
    assert score.shape == (3,) and features.shape == (3, 32, 4, 4)
    assert not torch.allclose(score, d(images, -embed)[0])  # the text changes the score
    d.eval()  # spectral norm's power iteration then stays put between the two calls
    # The penalty is the mean 6th power of each pair's gradient norm over image and text together.
    x, e = images.clone().requires_grad_(True), embed.clone().requires_grad_(True)
    gx, ge = torch.autograd.grad(d(x, e)[0].sum(), (x, e))
    norms = (gx.flatten(1).pow(2).sum(1) + ge.pow(2).sum(1)).sqrt()
    assert matching_aware_gp(d, images, embed).item() == pytest.approx(float(norms.pow(6).mean()), rel=1e-4)


def test_hinge_with_cls_scores_real_pairs_against_fakes_and_mismatched_texts():
    torch.manual_seed(0)
    from t2i.train.gan import make_nets

    config = GanConfig(**ALL)
    g, d = make_nets(config, EMBED)
    real, embed, z = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, EMBED), torch.randn(6, 100)
    terms = d_losses(config, g, d, real, embed, embed.roll(1, 0), z, torch.Generator().manual_seed(0))
    assert {"real", "fake", "wrong", "ma_gp", "total"} <= set(terms)
    assert all(terms[k] >= 0 for k in ("real", "fake", "wrong"))  # hinge terms are never negative
    t = {k: v.item() for k, v in terms.items()}
    assert t["total"] == pytest.approx(t["real"] + 0.5 * (t["fake"] + t["wrong"]) + 2.0 * t["ma_gp"], rel=1e-5)


def test_a_run_with_every_addition_resumes_exactly_and_saves_the_moving_average(tmp_path):
    config = GanConfig(**ALL)
    whole = train(shapes_source(EMBED), tmp_path / "whole", epochs=2, steps_per_epoch=2, config=config, progress=False)
    train(shapes_source(EMBED), tmp_path / "cut", epochs=1, steps_per_epoch=2, config=config, progress=False)
    resumed = train(shapes_source(EMBED), tmp_path / "cut", epochs=2, steps_per_epoch=2, config=config, progress=False)
    assert resumed.history == whole.history and all(math.isfinite(v) for r in whole.history for v in r.values())
    assert {"d_ma_gp", "g_ms"} <= set(whole.history[0])
    saved = load_generator(tmp_path / "whole" / "generator.pt", embed_dim=EMBED, ngf=4)
    state = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    for k, v in saved.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, state["g_ema"][k].float(), atol=1e-2), k
    assert not torch.allclose(state["g"]["netG.0.weight"], state["g_ema"]["netG.0.weight"])


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    config = GanConfig(**{**ALL, "ma_gp": 0.0})
    good = shapes_source(EMBED)
    train(good, tmp_path, epochs=1, steps_per_epoch=2, config=config, progress=False)
    kept = (tmp_path / "checkpoint.pt").read_bytes()

    def poisoned(n, gen):
        images, embeds = good(n, gen)
        return images, embeds * float("nan")
    with pytest.raises(T2IError) as e:
        train(poisoned, tmp_path, epochs=2, steps_per_epoch=2, config=config, progress=False)
    assert "diverged at step 3" in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == kept


@pytest.mark.parametrize("field,value,words", [("d_arch", "resnet", "--d-arch must be one of"),
                                               ("augment", "color", "unknown policy 'color'"),
                                               ("ema", 1.0, "--ema must be in [0, 1)")])
def test_bad_settings_are_one_line(field, value, words):
    with pytest.raises(T2IError, match=words.replace("[", r"\[").replace(")", r"\)")):
        GanConfig(**{field: value})


def test_the_text_affines_start_as_the_identity_and_load_only_into_their_architecture(tmp_path):
    from t2i.engine.gan_int_cls import Generator, init_weights
    from t2i.errors import BrokenWeights
    from t2i.assets.fp16 import save_checkpoint

    torch.manual_seed(0)
    plain = Generator(EMBED, 4)
    init_weights(plain)
    fused = Generator(EMBED, 4, affine=True)
    missing = fused.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("affine.") for k in missing) and "affine" not in plain.config
    embed, z = torch.randn(3, EMBED), torch.randn(3, 100)
    plain.eval(), fused.eval()
    with torch.no_grad():
        assert torch.allclose(plain(embed, z), fused(embed, z))  # zero-initialised maps: the port's G
        fused.affine["1"].bias.fill_(0.5)
        assert not torch.allclose(plain(embed, z), fused(embed, z))
    save_checkpoint(fused, tmp_path / "fused.pt")
    assert load_generator(tmp_path / "fused.pt", embed_dim=EMBED, ngf=4, affine=True).config["affine"]
    with pytest.raises(BrokenWeights, match="unexpected key\\(s\\), the first affine.1.bias"):
        load_generator(tmp_path / "fused.pt", embed_dim=EMBED, ngf=4)


def test_the_joint_discriminator_adds_the_ports_spatial_head_to_the_projection():
    torch.manual_seed(0)
    joint = ProjectionDiscriminator(EMBED, ndf=4, joint=True).eval()
    images, embed = torch.randn(2, 3, 64, 64), torch.randn(2, EMBED)
    score, _ = joint(images, embed)
    features = joint.features(images)
    phi = features.sum((2, 3))
    projection = joint.score(phi).view(-1) + (joint.embed(embed) * phi).sum(1)
    text = joint.text(embed)[:, :, None, None].expand(-1, -1, 4, 4)
    assert torch.allclose(score, projection + joint.joint(torch.cat([features, text], 1)).view(-1), atol=1e-5)
    assert GanConfig(d_arch="joint").d_arch == "joint"


def _tiny_encoder():
    """A random CharCLIP with the flowers encoder's image tower shape (64x64 RGB), frozen as train-demo's."""
    from t2i.engine.charclip import CharCLIP

    torch.manual_seed(0)
    return CharCLIP(dim=EMBED, char_dim=8, hidden=8, image_width=8, channels=3, image_size=64).eval().requires_grad_(False)


def test_the_semantic_term_is_off_by_default_and_its_gradient_reaches_g_only():
    from t2i.train.gan import g_losses, make_nets

    encoder = _tiny_encoder()
    captions = ["a red flower", "a blue flower", "a red flower", "five white petals", "a pink flower", "a dot"]
    embed = encoder.encode_text(captions)
    real, z, z_int = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, 100), torch.randn(6, 100)
    assert GanConfig().semantic_coef == 0
    config = GanConfig(**ALL)
    g, d = make_nets(config, EMBED)
    d.requires_grad_(False)
    assert "semantic" not in g_losses(config, g, d, real, embed, z, embed.roll(2, 0), z_int, encoder=encoder)
    config = GanConfig(**{**ALL, "semantic_coef": 0.5})
    terms = g_losses(config, g, d, real, embed, z, embed.roll(2, 0), z_int, encoder=encoder)
    assert math.isfinite(terms["semantic"].item()) and terms["semantic"] > 0
    t = {k: v.item() for k, v in terms.items()}
    assert t["total"] == pytest.approx(t["adv"] + t["int"] + t["ms"] + 0.5 * t["semantic"], rel=1e-5)
    terms["semantic"].backward()
    assert g.netG[0].weight.grad.abs().sum() > 0 and g.projection[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())  # the encoder stays as trained


def test_the_semantic_term_is_clip_s_loss_and_does_not_count_a_vaguer_caption_as_a_negative():
    from t2i.train.gan_tricks import semantic

    encoder = _tiny_encoder()
    embed = encoder.encode_text(["a red flower", "a blue flower", "five red petals and a white center"])
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    logits = encoder.scale * encoder.encode_image((images + 1) / 2) @ embed.T  # the tower takes [0, 1]
    ce = torch.nn.functional.cross_entropy
    assert semantic(encoder, images, embed).item() == pytest.approx(
        0.5 * (ce(logits, torch.arange(3)) + ce(logits.T, torch.arange(3))).item(), rel=1e-5)
    vaguer = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 1]])  # "a red flower" describes image 2 too
    half = torch.tensor([[0.5, 0, 0.5], [0, 1, 0], [0, 0, 1]])
    to_captions = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.5, 0, 0.5]])
    expected = 0.5 * ((-half * logits.T.log_softmax(1)).sum(1).mean() + (-to_captions * logits.log_softmax(1)).sum(1).mean())
    assert semantic(encoder, images, embed, vaguer).item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_semantic_run_on_the_flowers_world_resumes_exactly_and_needs_its_encoder(tmp_path):
    from t2i.data import flowers
    from t2i.train.flowers_text import CLASSES, gan_extras
    from t2i.train.gan_data import captioned

    encoder = _tiny_encoder()
    source = captioned(lambda seed, n: flowers.sample(n, seed), lambda c: encoder.encode_text(list(c)), gan_extras,
                       CLASSES)
    images, embeds, extras = source(4, torch.Generator().manual_seed(0))
    match = extras["match"]
    assert match.shape == (4, 4) and bool(match.diagonal().all())
    config = GanConfig(**{**ALL, "ma_gp": 0.0, "augment": "", "semantic_coef": 1.0})
    with pytest.raises(T2IError, match="--semantic-coef needs the caption encoder"):
        train(source, tmp_path / "none", epochs=1, steps_per_epoch=1, config=config, progress=False)
    whole = train(source, tmp_path / "whole", epochs=2, steps_per_epoch=1, config=config, progress=False,
                  encoder=encoder)
    train(source, tmp_path / "cut", epochs=1, steps_per_epoch=1, config=config, progress=False, encoder=encoder)
    resumed = train(source, tmp_path / "cut", epochs=2, steps_per_epoch=1, config=config, progress=False,
                    encoder=encoder)
    assert resumed.history == whole.history and math.isfinite(whole.history[-1]["g_semantic"])


def test_flowers_labels_name_every_attribute_of_a_scene_and_only_what_a_caption_says():
    from t2i.data import flowers
    from t2i.train.flowers_text import ATTRIBUTES, gan_extras

    scene = flowers.Scene(flowers.Flower("purple", "green", 7, "thin", "large"))
    vague = "a flower with thin white petals surrounding a yellow cluster of stamen"
    assert flowers.parse_caption(vague) is not None and "petals" not in flowers.parse_caption(vague)
    extras = gan_extras([flowers.canonical_caption(scene), vague], [scene, scene])
    colours, centres, counts = (values for _, values in ATTRIBUTES)
    true = [colours.index("purple"), centres.index("green"), counts.index(7)]
    assert extras["true"].tolist() == [true, true]
    assert extras["asked"].tolist() == [true, [colours.index("white"), centres.index("yellow"), -1]]


def test_the_auxiliary_classifier_learns_real_attributes_in_d_and_what_was_asked_in_g(tmp_path):
    """TAC-GAN's term: D's heads are fitted on real images' true classes, G is scored by them against
    what its caption names (unnamed attributes ignored), and the terms enter both totals."""
    from t2i.train.gan import g_losses, make_nets
    from t2i.train.gan_tricks import auxiliary

    classes = (3, 2)
    config = GanConfig(**{**ALL, "augment": "", "ma_gp": 0.0, "aux_coef": 0.5})
    torch.manual_seed(0)
    g, d = make_nets(config, EMBED, classes)
    assert [h.out_features for h in d.heads] == [3, 2]
    assert not make_nets(GanConfig(**ALL), EMBED, classes)[1].heads  # off: no heads at all
    real, embed, z = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, EMBED), torch.randn(6, 100)
    true = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0], [1, 1], [2, 0]])
    asked = torch.tensor([[0, -1], [1, 0], [-1, -1], [0, 0], [1, 1], [2, -1]])
    features = d(real, embed)[1]
    by_hand = sum(torch.nn.functional.cross_entropy(logits, asked[:, i], ignore_index=-1, reduction="sum")
                  for i, logits in enumerate(d.classify(features))) / 8
    assert auxiliary(d, features, asked).item() == pytest.approx(by_hand.item(), rel=1e-6)
    dl = d_losses(config, g, d, real, embed, embed.roll(1, 0), z, torch.Generator().manual_seed(0), true)
    assert dl["aux"].item() == pytest.approx(auxiliary(d, features, true).item(), rel=1e-5)
    assert dl["total"].item() == pytest.approx((dl["real"] + 0.5 * (dl["fake"] + dl["wrong"]) + 0.5 * dl["aux"]).item(),
                                               rel=1e-5)
    d.requires_grad_(False)
    gl = g_losses(config, g, d, real, embed, z, embed.roll(2, 0), torch.randn(6, 100), extras={"asked": asked})
    assert gl["total"].item() == pytest.approx((gl["adv"] + gl["int"] + gl["ms"] + 0.5 * gl["aux"]).item(), rel=1e-5)
    gl["aux"].backward()
    assert g.netG[0].weight.grad.abs().sum() > 0


def test_an_auxiliary_run_resumes_exactly_and_refuses_a_source_without_labels(tmp_path):
    from t2i.data import flowers
    from t2i.train.flowers_text import CLASSES, gan_extras
    from t2i.train.gan_data import captioned

    config = GanConfig(**{**ALL, "ma_gp": 0.0, "augment": "", "aux_coef": 1.0})
    with pytest.raises(T2IError, match="--aux-coef needs .* attribute labels"):
        train(shapes_source(EMBED), tmp_path / "shapes", epochs=1, steps_per_epoch=1, config=config, progress=False)
    encoder = _tiny_encoder()
    source = captioned(lambda seed, n: flowers.sample(n, seed), lambda c: encoder.encode_text(list(c)), gan_extras,
                       CLASSES)
    whole = train(source, tmp_path / "whole", epochs=2, steps_per_epoch=1, config=config, progress=False)
    train(source, tmp_path / "cut", epochs=1, steps_per_epoch=1, config=config, progress=False)
    resumed = train(source, tmp_path / "cut", epochs=2, steps_per_epoch=1, config=config, progress=False)
    assert resumed.history == whole.history
    assert all(math.isfinite(whole.history[-1][k]) and whole.history[-1][k] > 0 for k in ("d_aux", "g_aux"))


def test_a_colour_blind_head_cannot_see_which_colours_an_image_has():
    """The count head of the flowers GAN reads grey copies made with random channel weights: two images
    that differ only by a permutation of their channels look the same to it under equal weights, and
    its gradient still reaches the image."""
    from t2i.train.gan import make_nets
    from t2i.train.gan_tricks import auxiliary, colour_blind

    torch.manual_seed(0)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    assert torch.allclose(colour_blind(x, None), colour_blind(x[:, [2, 0, 1]], None), atol=1e-6)
    grey = colour_blind(x, torch.Generator().manual_seed(0))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert grey.min() >= -1 and grey.max() <= 1  # weights sum to 1: still an image in [-1, 1]
    config = GanConfig(**{**ALL, "augment": "", "aux_coef": 1.0, "aux_blind": True})
    _, d = make_nets(config, EMBED, (3, 2), (False, True))
    labels = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0]])
    features = d.features(x)
    blind = d.features(colour_blind(x, None))
    blind_head = auxiliary(d, features, torch.stack([torch.full((4,), -1), labels[:, 1]], 1), blind)
    swapped = d.features(colour_blind(x[:, [1, 2, 0]], None))
    assert blind_head.item() == pytest.approx(
        auxiliary(d, d.features(x[:, [1, 2, 0]]), torch.stack([torch.full((4,), -1), labels[:, 1]], 1), swapped).item(),
        rel=1e-5)
    assert auxiliary(d, features, labels, blind).item() != pytest.approx(auxiliary(d, features, labels, features).item())
    assert not make_nets(GanConfig(**{**ALL, "aux_coef": 1.0}), EMBED, (3, 2), (False, True))[1].blind


def test_whitening_gives_each_direction_the_encoder_uses_unit_variance_and_keeps_unused_ones_small():
    """The flowers encoder's count directions are 1/47 of its colours' variance: whitened, both read
    as unit variance; a direction far below eps (one the encoder does not use) stays near zero."""
    from t2i.engine.gan_int_cls import Whiten

    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    scales = torch.tensor([1.0, 0.15, 1e-4] + [0.0] * 5, dtype=torch.float64)  # colour, count, unused
    raw = (torch.randn(20000, 8, generator=gen, dtype=torch.float64) * scales) @ rotation.T + 3.0
    white = Whiten(8).fit(raw.float(), eps=1e-4)(raw.float()).double()
    along = white @ rotation  # back in the directions the data was made in
    assert along.mean(0).abs().max() < 0.02
    assert along[:, 0].var().item() == pytest.approx(1.0, abs=0.05)
    assert along[:, 1].var().item() == pytest.approx(0.0225 / (0.0225 + 1e-4), abs=0.05)  # the small one: ~1
    assert along[:, 2].var().item() < 1e-3
    assert torch.equal(Whiten(8)(raw.float()), raw.float())  # unfitted: the identity


def test_a_whitened_run_fits_g_and_d_on_the_same_texts_resumes_exactly_and_loads_as_a_preset(tmp_path, monkeypatch):
    from t2i.errors import BrokenWeights
    from t2i.families.gan.components import gan_int_cls
    import t2i.train.gan as gan

    monkeypatch.setattr(gan, "WHITEN_TEXTS", 256)  # the fit's size, not its logic: 4096 renders per call is slow
    config = GanConfig(**{**ALL, "augment": "", "ma_gp": 0.0, "whiten": 1e-3})
    whole = train(shapes_source(EMBED), tmp_path / "whole", epochs=2, steps_per_epoch=1, config=config, progress=False)
    train(shapes_source(EMBED), tmp_path / "cut", epochs=1, steps_per_epoch=1, config=config, progress=False)
    resumed = train(shapes_source(EMBED), tmp_path / "cut", epochs=2, steps_per_epoch=1, config=config, progress=False)
    assert resumed.history == whole.history
    g, d = whole.generator, whole.discriminator
    assert torch.equal(g.whiten.matrix, d.whiten.matrix) and not torch.equal(g.whiten.matrix, torch.eye(EMBED))
    assert torch.equal(resumed.discriminator.whiten.matrix, d.whiten.matrix)  # read back, not fitted again
    params = dict(embed_dim=EMBED, ngf=4, whiten=True)
    served = gan_int_cls(params, tmp_path / "whole" / "generator.pt", "")
    embed, z = torch.randn(3, EMBED), torch.randn(3, 100)
    with torch.no_grad():
        assert torch.allclose(served(embed, z), g(embed, z), atol=2e-2)  # fp16 on disk
    with pytest.raises(BrokenWeights, match="unexpected key\\(s\\), the first whiten."):
        gan_int_cls(dict(embed_dim=EMBED, ngf=4), tmp_path / "whole" / "generator.pt", "")
    with pytest.raises(T2IError, match="--whiten must be"):
        GanConfig(whiten=1e-3)  # the port's concat D has no whitening


def test_a_colour_scrambled_copy_moves_colours_but_keeps_greys_lightness_and_shapes():
    """The count heads' other view: hue rotated about the grey axis, channels shuffled, per image. An
    orthogonal map per image: every pixel's distance from mid-grey is kept (so the petals stay as
    distinct from the background as they were), greys stay grey, and colours move."""
    from t2i.train.gan_tricks import colour_scrambled

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16, generator=gen) * 2 - 1
    x[:, :, 0, 0] = 0.4  # one grey pixel per image
    y = colour_scrambled(x.requires_grad_(True), torch.Generator().manual_seed(1))
    assert torch.allclose(y.norm(dim=1), x.norm(dim=1), atol=1e-5)
    assert torch.allclose(y[:, :, 0, 0], torch.full((8, 3), 0.4), atol=1e-5)
    assert (y - x).abs().amax(dim=(1, 2, 3)).min() > 0.05  # every image's colours moved
    again = colour_scrambled(x, torch.Generator().manual_seed(1))
    assert torch.equal(y, again) and not torch.allclose(y, colour_scrambled(x, torch.Generator().manual_seed(2)))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for option in ({"aux_scramble": True}, {"count_tower": 4}):
        with pytest.raises(T2IError, match="--aux-scramble and --count-tower .* need --aux-blind and --aux-coef"):
            GanConfig(**{**ALL, "aux_coef": 1.0, **option})


SCRAMBLED = {**ALL, "ma_gp": 0.0, "augment": "", "aux_coef": 1.0, "aux_blind": True, "aux_scramble": True}


def _flowers_runs(tmp_path, config: GanConfig):
    """A two-step flowers run whole, and cut after one step then resumed: (whole, resumed, source)."""
    from t2i.data import flowers
    from t2i.train.flowers_text import BLIND, CLASSES, gan_extras
    from t2i.train.gan_data import captioned

    encoder = _tiny_encoder()
    source = captioned(lambda seed, n: flowers.sample(n, seed), lambda c: encoder.encode_text(list(c)), gan_extras,
                       CLASSES, BLIND)
    whole = train(source, tmp_path / "whole", epochs=2, steps_per_epoch=1, config=config, progress=False)
    train(source, tmp_path / "cut", epochs=1, steps_per_epoch=1, config=config, progress=False)
    resumed = train(source, tmp_path / "cut", epochs=2, steps_per_epoch=1, config=config, progress=False)
    return whole, resumed, source


def test_a_run_whose_count_head_reads_scrambled_copies_trains_and_resumes_exactly(tmp_path):
    config = GanConfig(**SCRAMBLED)
    whole, resumed, source = _flowers_runs(tmp_path, config)
    assert resumed.history == whole.history and whole.discriminator.blind
    grey = dataclasses.replace(config, aux_scramble=False)
    assert train(source, tmp_path / "grey", epochs=1, steps_per_epoch=1, config=grey,
                 progress=False).history[0]["d_aux"] != whole.history[0]["d_aux"]


def test_a_count_tower_reads_only_the_colour_free_copy_and_its_heads_train_it_not_the_shared_features():
    from t2i.train.gan_tricks import auxiliary, colour_scrambled, with_view

    torch.manual_seed(0)
    d = ProjectionDiscriminator(EMBED, 4, classes=(3, 5), blind=(False, True), tower=4).eval()  # no power steps
    x, e = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, EMBED)
    view = colour_scrambled(x, torch.Generator().manual_seed(1))
    score, features = d(x, e, view)
    other, same = d(x, e, colour_scrambled(x, torch.Generator().manual_seed(2)))
    assert not torch.allclose(score, other) and torch.equal(features, same)  # the view enters via the tower only
    assert d.blind_features(view).shape == (6, 16, 4, 4) and d.heads[1].in_features == 16 * 16
    auxiliary(d, features, torch.tensor([[0, 1]] * 6), d.blind_features(view)).backward()
    assert d.tower[0].parametrizations.weight.original.grad.abs().sum() > 0
    assert d.heads[0].weight.grad.abs().sum() > 0
    plain = ProjectionDiscriminator(EMBED, 4, classes=(3, 5), blind=(False, True))
    assert with_view(plain, colour_scrambled, torch.Generator()) is plain and plain.tower is None
    viewed = with_view(d, colour_scrambled, torch.Generator().manual_seed(1))
    assert torch.equal(viewed(x, e)[0], score) and viewed.blind == d.blind
    with pytest.raises(ValueError, match="count tower: pass the colour-free view"):
        d(x, e)


def test_a_run_with_a_count_tower_trains_the_tower_and_resumes_exactly(tmp_path):
    whole, resumed, _ = _flowers_runs(tmp_path, GanConfig(**SCRAMBLED, count_tower=4))
    assert resumed.history == whole.history
    torch.manual_seed(0)
    fresh = ProjectionDiscriminator(**whole.discriminator.config)
    trained = whole.discriminator.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.state_dict().items() if k.startswith("tower."))


def test_a_hard_negative_caption_differs_from_its_caption_in_one_judged_attribute_of_a_train_combination():
    import numpy as np

    from t2i.data import flowers
    from t2i.train.flowers_text import hard_negatives

    assert flowers.changed_caption("the brown center is surrounded by eight purple petals", "petals", 5) == \
        "the brown center is surrounded by five purple petals"
    assert flowers.changed_caption("a yellow flower with a white center", "colour", "orange") == \
        "an orange flower with a white center"
    assert flowers.changed_caption("a yellow flower with a white center", "petals", 5) is None  # not named
    assert flowers.changed_caption("a purple cow", "colour", "red") is None  # not ours
    _, captions, scenes = flowers.sample(200, np.random.default_rng([3, 1]), "train")
    negatives = hard_negatives(captions, scenes)
    assert negatives == hard_negatives(captions, scenes)  # drawn from the scenes' own seeds
    changed = []
    for text, negative, scene in zip(captions, negatives, scenes):
        named, wrong = flowers.parse_caption(text), flowers.parse_caption(negative)
        judged = {k for k in ("colour", "centre", "petals") if k in named}
        if judged:  # the caption's own words, one of them changed
            diff = {k for k in set(named) | set(wrong) if named.get(k) != wrong.get(k)}
            assert len(diff) == 1 and diff <= judged, (text, negative)
        else:  # a caption naming none of them: the changed scene's canonical caption
            assert negative.startswith(("this flower has", "these two flowers have"))
            diff = {k for k in ("colour", "centre", "petals") if wrong[k] != scene.attributes()[k]}
            assert len(diff) == 1
        attrs = {**scene.attributes(), **{k: wrong[k] for k in diff}}
        assert attrs["colour"] != attrs["centre"]
        assert flowers.split_of((attrs["colour"], attrs["centre"], attrs["petals"])) == "train"
        changed += diff
    assert changed.count("petals") > max(changed.count("colour"), changed.count("centre"))  # the count most often


def test_hard_negatives_replace_a_share_of_the_wrong_texts_and_need_a_source_that_writes_them(tmp_path):
    from t2i.data import flowers
    from t2i.train.flowers_text import CLASSES, gan_extras, hard_negatives
    from t2i.train.gan_data import captioned
    from t2i.train.gan_tricks import hard_wrong

    rolled, negative = torch.zeros(6, 2), torch.ones(6, 2)
    assert hard_wrong(rolled, negative, 0.5)[:, 0].tolist() == [1, 1, 1, 0, 0, 0]
    assert torch.equal(hard_wrong(rolled, negative, 1.0), negative)
    config = GanConfig(**{**ALL, "ma_gp": 0.0, "augment": "", "hard_negatives": 0.5})
    with pytest.raises(T2IError, match="--hard-negatives needs data that writes a hard-negative caption"):
        train(shapes_source(EMBED), tmp_path / "shapes", epochs=1, steps_per_epoch=1, config=config, progress=False)
    for bad in (-0.1, 1.5):
        with pytest.raises(T2IError, match="--hard-negatives is a share"):
            GanConfig(**{**ALL, "hard_negatives": bad})
    with pytest.raises(T2IError, match="--hard-negatives .* with --no-cls"):
        GanConfig(**{**ALL, "cls": False, "hard_negatives": 0.5})
    encoder = _tiny_encoder()
    source = captioned(lambda seed, n: flowers.sample(n, seed), lambda c: encoder.encode_text(list(c)), gan_extras,
                       CLASSES, negatives=hard_negatives)
    whole = train(source, tmp_path / "whole", epochs=2, steps_per_epoch=1, config=config, progress=False)
    train(source, tmp_path / "cut", epochs=1, steps_per_epoch=1, config=config, progress=False)
    resumed = train(source, tmp_path / "cut", epochs=2, steps_per_epoch=1, config=config, progress=False)
    assert resumed.history == whole.history
    plain = dataclasses.replace(config, hard_negatives=0.0)  # the same batches; only the wrong texts differ
    plain_run = train(source, tmp_path / "plain", epochs=1, steps_per_epoch=1, config=plain, progress=False)
    assert plain_run.history[0]["d_real"] == whole.history[0]["d_real"]
    assert plain_run.history[0]["d_wrong"] != whole.history[0]["d_wrong"]


def test_a_class_made_by_g_is_learnt_by_d_on_fakes_while_g_is_still_scored_on_what_was_asked():
    """aux_fake: each head gets one more class, "made by G"; D's auxiliary term adds its fakes labelled
    with it to the real images' true classes, G's term is unchanged (the asked classes), and without
    --aux-coef the option is one line."""
    from t2i.train.gan import g_losses, make_nets
    from t2i.train.gan_tricks import auxiliary, made_by_g

    classes = (3, 2)
    config = GanConfig(**{**ALL, "augment": "", "ma_gp": 0.0, "aux_coef": 0.5, "aux_fake": True})
    torch.manual_seed(0)
    g, d = make_nets(config, EMBED, classes)
    g.eval(), d.eval()  # no BatchNorm batch statistics, no spectral-norm power steps: calls repeat exactly
    assert [h.out_features for h in d.heads] == [4, 3]
    assert made_by_g(d, 2).tolist() == [[3, 2], [3, 2]]
    real, embed, z = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, EMBED), torch.randn(6, 100)
    true = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0], [1, 1], [2, 0]])
    dl = d_losses(config, g, d, real, embed, embed.roll(1, 0), z, torch.Generator().manual_seed(0), true)
    with torch.no_grad():
        by_hand = auxiliary(d, d(real, embed)[1], true) + auxiliary(d, d(g(embed, z), embed)[1], made_by_g(d, 6))
    assert dl["aux"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    plain = dataclasses.replace(config, aux_fake=False)
    torch.manual_seed(0)
    g0, d0 = make_nets(plain, EMBED, classes)
    assert [h.out_features for h in d0.heads] == [3, 2]
    asked = torch.tensor([[0, -1], [1, 0], [-1, -1], [0, 0], [1, 1], [2, -1]])
    d.requires_grad_(False)
    gl = g_losses(config, g, d, real, embed, z, embed.roll(2, 0), torch.randn(6, 100), extras={"asked": asked})
    with torch.no_grad():
        assert gl["aux"].item() == pytest.approx(auxiliary(d, d(g(embed, z), embed)[1], asked).item(), rel=1e-6)
    with pytest.raises(T2IError, match="--aux-fake .* needs --aux-coef"):
        GanConfig(**{**ALL, "aux_fake": True})


def test_a_run_with_a_class_made_by_g_resumes_exactly_and_its_heads_learn_the_fakes(tmp_path):
    whole, resumed, _ = _flowers_runs(tmp_path, GanConfig(**SCRAMBLED, aux_fake=True))
    assert resumed.history == whole.history
    plain, _, _ = _flowers_runs(tmp_path / "plain", GanConfig(**SCRAMBLED))
    # The same batches and draws up to the fakes' term: D's first real score agrees, its aux term grows.
    assert whole.history[0]["d_real"] == plain.history[0]["d_real"]
    assert whole.history[0]["d_aux"] > plain.history[0]["d_aux"]


def test_polar_channels_are_the_radius_and_angular_harmonics_about_the_centre_and_load_only_into_their_generator(tmp_path):
    from t2i.assets.fp16 import save_checkpoint
    from t2i.engine.gan_int_cls import Generator, PolarChannels
    from t2i.errors import BrokenWeights

    basis = PolarChannels(16, 4).basis                      # r, cos(k theta) k=1..4, sin(k theta) k=1..4
    assert basis.shape == (9, 16, 16) and basis[0].min() > 0 and basis[0, 7:9, 7:9].max() < 0.1
    quarter = torch.rot90(basis, 1, (1, 2))                  # a quarter turn about the centre
    assert torch.allclose(quarter[0], basis[0], atol=1e-6) and torch.allclose(quarter[4], basis[4], atol=1e-5)
    assert not torch.allclose(quarter[2], basis[2], atol=1e-2)  # cos(2 theta) changes sign on a quarter turn
    torch.manual_seed(0)
    g = Generator(EMBED, 4, affine=True, polar=4).eval()
    assert g.config["polar"] == 4 and g.netG[9].in_channels == 4 * 2 + 9 and g.netG[12].in_channels == 4 + 9
    assert not any("polar" in k for k in g.state_dict())      # fixed, rebuilt from the size: not in the file
    assert g(torch.randn(2, EMBED), torch.randn(2, 100)).shape == (2, 3, 64, 64)
    save_checkpoint(g, tmp_path / "polar.pt")
    assert load_generator(tmp_path / "polar.pt", embed_dim=EMBED, ngf=4, affine=True, polar=4).config["polar"] == 4
    with pytest.raises(BrokenWeights):
        load_generator(tmp_path / "polar.pt", embed_dim=EMBED, ngf=4, affine=True)
    with pytest.raises(T2IError, match="--polar is a number of angular frequencies"):
        GanConfig(polar=-1)
