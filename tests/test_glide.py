"""GLIDE networks and diffusion maths against the release's checkpoint layouts and tiny reference outputs.

The fixtures (../shared/fixtures/glide, see its README) are data made by running the public release;
tests that need them skip, saying so, where the folder is absent.
"""

from pathlib import Path

import pytest
import torch

from t2i.errors import WeightsMissing
from t2i.families.diffusion.components import BrokenWeights
from t2i.families.diffusion.glide import (GlideDiffusion, check_state_dict, glide_base, glide_upsample, load,
                                          release_options, space_timesteps)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared/fixtures/glide"
PARAMS = {"base": 385_030_726, "upsample": 398_361_286}  # from the fixtures' README
BUILD = {"base": glide_base, "upsample": glide_upsample}


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"GLIDE fixture {path} is absent (CI has ../shared/fixtures/glide)")
    return path


def meta_model(kind: str):
    with torch.device("meta"):
        return BUILD[kind]()


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_default_models_have_the_release_layout(kind):
    model = meta_model(kind)
    rows = [line.split("\t") for line in fixture(f"{kind}-keys.tsv").read_text().splitlines()[1:]]
    want = {key: tuple(int(n) for n in shape.strip("()").split(",") if n.strip()) for key, shape, _ in rows}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(got.keys() - want.keys()) == [] and sorted(want.keys() - got.keys()) == []
    assert {k for k in got if got[k] != want[k]} == set()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[kind]


def test_parameter_counts_without_fixtures():
    for kind, count in PARAMS.items():
        assert sum(p.numel() for p in meta_model(kind).parameters()) == count


def run_reference(kind: str):
    """Our model and diffusion on the reference inputs: (ours, reference) for the four compared tensors."""
    ref = torch.load(fixture(f"tiny-{kind}-reference.pt"), weights_only=True)
    opts = ref["options"]
    assert opts["super_res"] == (kind == "upsample")
    model = load(fixture(f"tiny-{kind}.pt"), kind, **release_options(opts))
    diffusion = GlideDiffusion(opts["noise_schedule"], opts["diffusion_steps"], opts["timestep_respacing"])
    assert diffusion.timestep_map.tolist() == ref["timestep_map"].tolist()
    tokens = torch.tensor([ref["tokens"], ref["uncond_tokens"]])
    mask = torch.tensor([ref["mask"], ref["uncond_mask"]])
    extra = {"low_res": ref["low_res"]} if kind == "upsample" else {}
    with torch.no_grad():
        out = model(ref["x"], diffusion.timestep_map[ref["t"]], tokens, mask, **extra)
    p = diffusion.p_mean_variance(out, ref["x"], ref["t"], clip_denoised=True)
    ours = {"model_output": out, "p_mean": p["mean"], "p_log_variance": p["log_variance"],
            "pred_xstart": p["pred_xstart"]}
    return ours, {k: ref[k] for k in ours}


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_tiny_models_reproduce_the_release(kind):
    ours, ref = run_reference(kind)
    for name, want in ref.items():
        got = ours[name]
        assert got.shape == want.shape, name
        # The fixtures' tiny models carry uninitialised positional/padding embeddings (see the next test),
        # so some reference rows are NaN: those must be NaN here too, the rest must agree.
        assert torch.equal(got.isnan(), want.isnan()), name
        finite = want.isfinite()
        if finite.any():
            assert (got[finite] - want[finite]).abs().max().item() < 1e-4, name


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_tiny_references_are_checkable(kind):
    """Says, rather than hides, where a reference is all NaN and the comparison above proves nothing."""
    ref = torch.load(fixture(f"tiny-{kind}-reference.pt"), weights_only=True)
    state = torch.load(fixture(f"tiny-{kind}.pt"), weights_only=True)
    broken = sorted(k for k, v in state.items() if v.abs().max() > 1e30 or not v.isfinite().all())
    if not ref["model_output"].isfinite().any():
        pytest.skip(f"tiny-{kind}-reference.pt is all NaN ({', '.join(broken)} uninitialised in tiny-{kind}.pt): "
                    "regenerate the fixture with those parameters set")
    assert ref["model_output"].isfinite().any()


def test_padded_token_ids_do_not_matter():
    """Padded positions take the learned padding embedding in place of token + position."""
    torch.manual_seed(0)
    model = glide_base(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                       attention_resolutions=(8,), num_head_channels=32, text_ctx=8, xf_width=32, xf_layers=2,
                       xf_heads=2, vocab_size=100).eval()
    for p in (model.positional_embedding, model.padding_embedding):
        torch.nn.init.normal_(p, std=0.02)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    mask = torch.tensor([[True, True, False, False, False, False, False, False]])
    a = torch.tensor([[5, 6, 99, 99, 99, 99, 99, 99]])
    with torch.no_grad():
        same = model(x, t, a.clone().index_fill_(1, torch.tensor([4, 5]), 7), mask)
        other = model(x, t, a.clone().index_fill_(1, torch.tensor([1]), 7), mask)
        base = model(x, t, a, mask)
    assert torch.equal(base, same)
    assert not torch.allclose(base, other)


def test_respacing():
    assert space_timesteps(1000, "10") == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    fast27 = space_timesteps(1000, "fast27")
    assert len(fast27) == 27 and 999 not in fast27 and 997 in fast27
    full = GlideDiffusion("linear", 1000)
    spaced = GlideDiffusion("linear", 1000, "100")
    # Respacing keeps the cumulative alphas of the kept steps.
    assert torch.allclose(spaced.alphas_cumprod, full.alphas_cumprod[spaced.timestep_map], rtol=1e-12)
    cosine = GlideDiffusion("squaredcos_cap_v2", 1000)
    assert cosine.betas.max() <= 0.999 and cosine.betas[0] < 1e-4


def test_base_weights_refused_as_upsampler():
    base = meta_model("base").state_dict()
    with pytest.raises(BrokenWeights) as e:
        check_state_dict(meta_model("upsample"), base, "base.pt")
    msg = str(e.value)
    assert "\n" not in msg and "base model" in msg and "upsampler" in msg
    with pytest.raises(BrokenWeights, match="upsampler.*offered as the base model"):
        check_state_dict(meta_model("base"), meta_model("upsample").state_dict(), "upsample.pt")


def test_tiny_base_file_refused_as_upsampler():
    opts = release_options(torch.load(fixture("tiny-upsample-reference.pt"), weights_only=True)["options"])
    with pytest.raises(BrokenWeights) as e:
        load(fixture("tiny-base.pt"), "upsample", **opts)
    assert "\n" not in str(e.value) and "tiny-base.pt is the GLIDE base model" in str(e.value)


def test_damaged_state_dicts_fail_in_one_line(tmp_path):
    model = meta_model("base")
    state = dict(model.state_dict())
    cases = {}
    missing = dict(state)
    del missing["final_ln.bias"]
    cases["1 missing keys (e.g. final_ln.bias)"] = missing
    cases["1 unexpected keys (e.g. unemb.weight)"] = {**state, "unemb.weight": torch.empty(2, device="meta")}
    cases["wrong shape (e.g. out.2.bias"] = {**state, "out.2.bias": torch.empty(3, device="meta")}
    for want, bad in cases.items():
        with pytest.raises(BrokenWeights) as e:
            check_state_dict(model, bad, "base.pt")
        assert want in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / "base.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BrokenWeights, match="does not load as a GLIDE state dict"):
        load(junk, "base")
    with pytest.raises(WeightsMissing, match="missing"):
        load(tmp_path / "absent.pt", "base")
