"""GLIDE networks and diffusion maths against the release's checkpoint layouts and tiny reference outputs.

The fixtures (FIXTURES: a folder kept beside the repository, not in it, with its own README) are data
made by running the public release; tests that need them skip, saying so, where the folder is absent,
and fail where CI is set (CI has it).
"""

from pathlib import Path

import pytest
import torch
from conftest import absent

from t2i.errors import WeightsMissing
from t2i.families.diffusion.components import BrokenWeights
from t2i.families.glide.diffusion import GlideDiffusion
from t2i.families.glide.load import check_state_dict, load
from t2i.families.glide.model import glide_base, glide_upsample, release_options
from t2i.families.glide.sizes import space_timesteps

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared/fixtures/glide"
PARAMS = {"base": 385_030_726, "upsample": 398_361_286}  # from the fixtures' README
BUILD = {"base": glide_base, "upsample": glide_upsample}


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        absent(f"GLIDE fixture {path} is absent (CI has the fixtures)")
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
        # Every reference number is finite (the next test says so), so every one is compared.
        assert (got - want).abs().max().item() < 1e-4, name


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_tiny_references_are_checkable(kind):
    """A NaN in a reference (as the release's torch.empty embeddings once made) would prove nothing."""
    ref = torch.load(fixture(f"tiny-{kind}-reference.pt"), weights_only=True)
    state = torch.load(fixture(f"tiny-{kind}.pt"), weights_only=True)
    assert sorted(k for k, v in state.items() if v.abs().max() > 1e30 or not v.isfinite().all()) == []
    for name in ("model_output", "p_mean", "p_log_variance", "pred_xstart"):
        assert ref[name].isfinite().all(), f"tiny-{kind}-reference.pt: {name} is not all finite"


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


# --- tokenizer, presets and sampling ---------------------------------------------------------------

import gzip  # noqa: E402
import shutil  # noqa: E402

from t2i.families.glide.tokenizer import GlideTokenizer  # noqa: E402

TINY_BPE = ROOT / "configs/models/tiny-glide"


def release_tokenizer_files(folder: Path) -> Path:
    """The release's encoder.json / vocab.bpe, unzipped from the fixtures into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("encoder.json", "vocab.bpe"):
        with gzip.open(fixture(f"{name}.gz")) as src, open(folder / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


def test_tokens_of_the_fixture_prompt_match_the_release(tmp_path):
    ref = torch.load(fixture("tiny-base-reference.pt"), weights_only=True)
    tok = GlideTokenizer(release_tokenizer_files(tmp_path), ref["options"]["text_ctx"])
    assert tok.padded(ref["prompt"]) == (ref["tokens"], ref["mask"])
    assert tok.padded("") == (ref["uncond_tokens"], ref["uncond_mask"])
    # The release lower-cases before encoding; 50256 pads.
    assert tok.padded(ref["prompt"].upper()) == (ref["tokens"], ref["mask"])
    assert tok.end == 50256 and tok.vocab_size == 50257


def test_long_prompts_are_cut_to_the_context():
    tok = GlideTokenizer(TINY_BPE, 8)
    tokens, mask = tok.padded("a red circle next to a red square")
    assert len(tokens) == 8 and all(mask)


def test_tokenizer_files_missing_or_damaged_fail_in_one_line(tmp_path):
    with pytest.raises(WeightsMissing) as e:
        GlideTokenizer(tmp_path, 8, hint="python -m t2i download glide-256")
    assert "encoder.json" in str(e.value) and "python -m t2i download glide-256" in str(e.value)
    shutil.copy(TINY_BPE / "encoder.json", tmp_path / "encoder.json")
    with pytest.raises(WeightsMissing, match="vocab.bpe"):
        GlideTokenizer(tmp_path, 8)
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    (tmp_path / "encoder.json").write_text('{"a": 0, "b"')  # truncated
    with pytest.raises(BrokenWeights) as e:
        GlideTokenizer(tmp_path, 8)
    assert "\n" not in str(e.value) and "do not load" in str(e.value)


from contextlib import nullcontext  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

from t2i.families import build_pipeline  # noqa: E402
from t2i.presets import get_preset  # noqa: E402
from t2i.spec import make_spec  # noqa: E402

TINY = "tiny-glide-untrained"


def tiny_spec(prompt="a red circle", **kw):
    p = get_preset(TINY)
    return make_spec(prompt, TINY, family=p.family, defaults=p.defaults, **{"seed": 5, **kw})


def test_guidance_is_the_releases(pipelines):
    """One base step by hand: uncond + s * (cond - uncond) for eps, the conditional rows' own variance,
    the learned-range posterior, then mean + exp(log_variance / 2) * noise from the job's generator."""
    pipe = pipelines(TINY)
    spec = tiny_spec(guidance=4.0)
    job = pipe.start(spec, torch.Generator().manual_seed(1))
    x, gen_state = job.x.clone(), job.gen.get_state()
    stage = pipe.stages[0]
    d = stage.diffusion(spec.options.steps)
    last = len(d) - 1
    with torch.no_grad():
        out = stage.model(torch.cat([x, x]), d.timestep_map[[last, last]], job.tokens, job.mask)
        cond, uncond = out.split(1)
        model_out = torch.cat([uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]), cond[:, 3:]], dim=1)
        p = d.p_mean_variance(model_out, x, torch.tensor([last]), clip_denoised=True)
        noise = torch.randn(x.shape, generator=torch.Generator().set_state(gen_state))
        want = p["mean"] + torch.exp(0.5 * p["log_variance"]) * noise
    pipe.step([job], [False], nullcontext)
    assert torch.allclose(job.x, want, atol=1e-6)
    # The unconditional input is all padding, masked out; the prompt's tokens are the release's.
    assert job.tokens[1].tolist() == [pipe.tokenizer.end] * 8 and not job.mask[1].any()


def test_the_base_image_conditions_the_upsampler_at_8_bits(pipelines):
    pipe = pipelines(TINY)
    spec = tiny_spec(steps=2)
    job = pipe.start(spec, torch.Generator().manual_seed(2))
    for _ in range(2):
        pipe.step([job], [False], nullcontext)
    assert job.stage == 1 and job.index == 0 and job.x.shape[-1] == 32
    levels = (job.low_res + 1) * 127.5
    assert job.low_res.shape[-1] == 16 and torch.allclose(levels, levels.round(), atol=1e-4)
    # The upsampler's noise is scaled by the preset's temperature (0.997): its spread is below 1.
    assert pipe.stages[1].temperature == 0.997


def trained_preset(tmp_path, monkeypatch, swap=False):
    """A GLIDE preset over files in the release's layout (state dicts saved with torch.save), as a
    download leaves them under checkpoints/glide/."""
    tiny = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / f"{TINY}.yaml"))
    # Not "glide/": configs/weights.yaml knows the release's files there (and their sizes).
    glide = tmp_path / "checkpoints" / "glide-tiny"
    glide.mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(TINY_BPE / name, glide / name)
    pipe = build_pipeline(get_preset(TINY))
    files = {"unet": "base.pt", "upsampler": "upsample.pt"}
    if swap:
        files = {"unet": "upsample.pt", "upsampler": "base.pt"}
    for stage, role in zip(pipe.stages, ("unet", "upsampler")):
        torch.save(stage.model.state_dict(), glide / files[role])
    config = {**tiny, "untrained": False}
    config["components"] = {**tiny["components"]}
    config["components"]["unet"] = {**tiny["components"]["unet"], "weights": "glide-tiny/base.pt"}
    config["components"]["upsampler"] = {**tiny["components"]["upsampler"], "weights": "glide-tiny/upsample.pt"}
    config["components"]["text"] = {"target": "glide-bpe", "weights": "glide-tiny/encoder.json", "params": {"text_ctx": 8}}
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny-glide-files.yaml").write_text(OmegaConf.to_yaml(config))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return pipe, get_preset("tiny-glide-files", configs)


def test_a_preset_loads_the_release_layout(tmp_path, monkeypatch):
    made, preset = trained_preset(tmp_path, monkeypatch)
    loaded = build_pipeline(preset)
    for a, b in zip(made.stages, loaded.stages):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [s.respacing for s in loaded.stages] == [None, "3"]


def test_a_base_model_offered_as_the_upsampler_is_named(tmp_path, monkeypatch):
    _, preset = trained_preset(tmp_path, monkeypatch, swap=True)
    with pytest.raises(BrokenWeights) as e:
        build_pipeline(preset)
    msg = str(e.value)
    # base.pt (holding the upsampler) is loaded first and named.
    assert "\n" not in msg and "base.pt is the GLIDE upsampler" in msg and "offered as the base model" in msg


def test_a_missing_checkpoint_names_the_file_and_the_command(tmp_path, monkeypatch):
    _, preset = trained_preset(tmp_path, monkeypatch)
    (tmp_path / "checkpoints/glide-tiny/upsample.pt").unlink()
    with pytest.raises(WeightsMissing) as e:
        build_pipeline(preset)
    assert "upsample.pt" in str(e.value) and "python -m t2i download tiny-glide-files" in str(e.value)


def test_both_stages_count_in_progress_and_frames(pipelines):
    from t2i.engine import run

    pipe = pipelines(TINY)
    job = tiny_spec(steps=4, save_every=2)
    assert job.total_steps == 4 + 3  # the tiny upsampler's respacing is "3" (the release's fast27: 27)
    seen = []
    result = run(job, pipe, on_step=seen.append)
    assert [s.step for s in seen] == list(range(1, 8)) and {s.total for s in seen} == {7}
    # Base-stage frames are shown at the final size, so the GIF holds both stages.
    assert result.frame_steps == [0, 2, 4, 6, 7] and {f.size for f in result.frames} == {(32, 32)}
    assert result.image.size == (32, 32)


def test_glide_options_refused_in_one_line():
    from t2i.errors import SpecError

    p = get_preset("glide-256")
    base = dict(family=p.family, defaults=p.defaults)
    with pytest.raises(SpecError, match="sampler: must be one of ddpm, ddim"):
        make_spec("a cat", "glide-256", sampler="plms", **base)
    with pytest.raises(SpecError, match="upsample_steps: is the preset's"):
        make_spec("a cat", "glide-256", upsample_steps=3, **base)
    for bad in ("nan", "inf", 31):
        with pytest.raises(SpecError, match="guidance"):
            make_spec("a cat", "glide-256", guidance=bad, **base)
    spec = make_spec("a cat", "glide-256", **base)
    assert (spec.options.steps, spec.options.guidance, spec.total_steps) == (100, 3.0, 127)
    assert spec.options.used_size(spec, p) == (256, 256)
    assert "then 27 upsampler steps" in spec.describe(256, 256)


def test_bench_times_each_stage():
    from t2i.bench.speed import bench

    lines = bench(TINY, steps=1, batches=(1, 2), frames=False, reference=True)
    text = "\n".join(lines)
    assert text.count("| 2 |") == 2 and "stage 2: the upsampler" in text
    # The upsampler's table is of upsampler steps: one base step carried the jobs into it.
    assert "32x32, 1 DDPM steps, CFG 3, then 3 upsampler steps" in text
