"""Presets' rules and `download`: registry -> loopback mirror -> checkpoints/ -> proven by loading."""

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from conftest import absent

from t2i.assets import install, weights
from t2i.errors import PresetError
from t2i.families.guided.preset import parts as guided_parts
from t2i.paths import CONFIG_DIR, MODEL_CONFIG_DIR, ROOT
from t2i.presets import _load_dir, all_presets, get_preset

from test_loaders import random_vq, vq_params


def test_every_preset_parses_and_names_its_weights_honestly():
    presets = all_presets()
    expected = {"vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_16384", "wikiart_16384", "vqgan_gumbel_f8_8192",
                "biggan-deep-128", "biggan-deep-256", "biggan-deep-512", "tiny-vqgan-untrained"}
    assert expected <= set(presets)
    registry = weights.registry()
    for name, p in presets.items():
        assert p.untrained == ("untrained" in name)
        if p.family != "guided":  # components by registry name; weights named unless untrained
            assert all((c.weights is None) == p.untrained for c in p.components.values() if c.target != "pixels")
            continue
        g = guided_parts(p)
        assert g.arch.is_file(), name
        if not p.untrained:
            assert g.weights in registry and all(ref.pretrained for ref in g.perceptors)
    assert get_preset("vqgan_imagenet_f16_16384").defaults["cutn"] == 32


def test_random_weights_only_in_presets_named_untrained(tmp_path):
    bad = {"generator": {"kind": "vqgan", "arch": str(MODEL_CONFIG_DIR / "tiny-vqgan.yaml")},
           "perceptors": [{"model": "tiny-clip"}]}
    (tmp_path / "sneaky.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(PresetError, match="random weights are allowed only in presets named"):
        _load_dir(tmp_path)
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        get_preset("nope")


@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on loopback serving a tiny taming model in the published file layout."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "model.yaml").write_text(yaml.safe_dump(
        {"model": {"target": "taming.models.vqgan.VQModel", "params": vq_params()}}))
    source = random_vq(seed=11)
    torch.save({"state_dict": source.state_dict()}, served / "last.ckpt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    registry = tmp_path / "weights.yaml"
    registry.write_text(yaml.safe_dump({"tiny-taming": {"kind": "taming", "files": {
        "tiny/tiny-taming.yaml": [f"{base}/missing.yaml", f"{base}/model.yaml"],
        "tiny/tiny-taming.ckpt": [f"{base}/last.ckpt"]}}}))
    yield registry, source
    server.shutdown()
    server.server_close()


def test_download_fetches_from_mirrors_and_proves_by_loading(tmp_path, monkeypatch, mirror):
    registry, source = mirror
    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setenv("T2I_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    lines = install.download("tiny-taming", progress=False)
    assert lines == ["tiny-taming: 2 files present and loaded"]
    from t2i.families.guided.build import load_generator_weights
    loaded = load_generator_weights(weights.entry("tiny-taming"))
    for k, v in source.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert sorted(p.name for p in (checkpoints / "tiny").iterdir()) == ["tiny-taming.ckpt", "tiny-taming.yaml"]


@pytest.mark.subprocess
def test_download_cli_end_to_end_and_bad_name(tmp_path, mirror):
    registry, _ = mirror
    env = {**__import__("os").environ, "T2I_CHECKPOINTS": str(tmp_path / "ck"), "T2I_WEIGHTS_REGISTRY": str(registry)}
    ok = subprocess.run([sys.executable, "-m", "t2i", "download", "tiny-taming"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "tiny-taming: 2 files present and loaded" in ok.stdout
    assert "tiny-taming.ckpt" in ok.stderr  # the progress bar names the file
    bad = subprocess.run([sys.executable, "-m", "t2i", "download", "no-such-thing"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "no preset or weights named 'no-such-thing'" in bad.stderr


def test_download_of_an_untrained_preset_needs_nothing():
    assert install.download("tiny-vqgan-untrained", progress=False) == [
        "tiny-vqgan-untrained: untrained preset, nothing to download"]


def test_missing_files_lists_generator_and_clip(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    missing = weights.missing_files(get_preset("vqgan_imagenet_f16_16384"))
    assert missing[:2] == [str(tmp_path / "vqgan_imagenet_f16_16384.yaml"), str(tmp_path / "vqgan_imagenet_f16_16384.ckpt")]
    assert missing[2].startswith("CLIP ViT-B-32/openai")
    assert weights.missing_files(get_preset("tiny-vqgan-untrained")) == []


def test_registry_covers_the_published_weights():
    reg = weights.registry(CONFIG_DIR / "weights.yaml")
    for name in ("vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_16384", "wikiart_16384", "vqgan_gumbel_f8_8192"):
        assert reg[name].kind == "taming" and {Path(f).suffix for f in reg[name].files} == {".yaml", ".ckpt"}
        assert all(spec.urls for spec in reg[name].files.values())
    assert any("pixray" in u for spec in reg["wikiart_16384"].files.values() for u in spec.urls)
    for r in (128, 256, 512):
        assert set(reg[f"biggan-deep-{r}"].files) == {f"biggan-deep-{r}/config.json", f"biggan-deep-{r}/pytorch_model.bin"}


@pytest.mark.subprocess
def test_listing_ready_presets_does_not_import_torch(tmp_path):
    # Every page lists the ready presets; on a machine without downloads that must not cost the
    # seconds of importing torch and open_clip (the first page render timed out under load).
    import os

    code = ("import sys; from t2i.assets.weights import ready_presets; print(ready_presets()[0]); "
            "print('torch' in sys.modules, 'open_clip' in sys.modules)")
    env = {**os.environ, "T2I_CHECKPOINTS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["shapes", "False False"]


# --- the registry's format, and the one mapping from a preset to its entries --------------------------

from t2i.errors import WeightsMissing  # noqa: E402
from t2i.assets.download import DownloadError  # noqa: E402
from t2i.presets import Component, Preset  # noqa: E402

PARTS = {  # a test registry shaped like the real one: a hub folder, two entries sharing glide/, an upscaler
    "big-ldm": {"kind": "hf", "repo": "org/big-ldm", "files": {
        "unet/config.json": {"size": 3}, "unet/w.bin": {"size": None}, "tokenizer/vocab.txt": {"size": 2},
        "scheduler/scheduler_config.json": {"size": 2}}},
    "glide-base": {"kind": "glide", "files": {"glide/base.pt": {"urls": ["http://x/base.pt"], "size": 4},
                                              "glide/encoder.json": {"urls": ["http://x/e.json"], "size": 2}}},
    "glide-upsample": {"kind": "glide", "files": {"glide/upsample.pt": {"urls": ["http://x/up.pt"], "size": 4}}},
    "up-x2": {"kind": "srcnn", "files": {"upscale/up_x2.pth": ["http://x/up_x2.pth"]}},  # the older list form
}


def _diffusion(name, post=(), scheduler=None, **components):
    return Preset(name=name, description="", family="diffusion", components=components, post=post,
                  scheduler=scheduler or {})


@pytest.fixture
def parts(tmp_path, monkeypatch):
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump(PARTS, sort_keys=False))
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(path))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path / "ck"))
    return tmp_path / "ck"


def test_registry_reads_sizes_and_the_older_list_form(parts):
    reg = weights.registry()
    assert reg["glide-base"].files["glide/base.pt"] == weights.WeightsFile(("http://x/base.pt",), 4)
    assert reg["up-x2"].files["upscale/up_x2.pth"] == weights.WeightsFile(("http://x/up_x2.pth",), None)
    # Hub files are listed by repository path and kept under checkpoints/<name>/.
    assert list(reg["big-ldm"].files)[0] == "big-ldm/unet/config.json"
    assert reg["big-ldm"].hub_path("big-ldm/unet/config.json") == "unet/config.json"


@pytest.mark.parametrize("bad, says", [
    ({"kind": "glide", "files": {"a.pt": {"urls": ["http://x/a"], "size": "4 GB"}}}, "file a.pt: size must be a number"),
    ({"kind": "glide", "files": {"a.pt": {"urls": ["http://x/a"], "sha": "ab"}}}, "file a.pt: give `urls`"),
    ({"kind": "hf", "files": {"a.bin": {"size": 1}}}, "kind hf needs `repo`"),
    ({"kind": "hf", "repo": "o/r", "files": {"a.bin": {"urls": ["http://x/a"]}}}, "(none for kind hf)"),
    ({"kind": "glide", "files": {}}, "needs `kind` and a non-empty `files`"),
    ({"kind": "glide", "mirror": "x", "files": {"a.pt": []}}, "unknown keys ['mirror']"),
])
def test_a_malformed_entry_is_one_line_naming_it(tmp_path, bad, says):
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump({"broken": bad}))
    with pytest.raises(PresetError) as info:
        weights.registry(path)
    assert str(info.value).startswith(f"{path}: entry broken: ") and says in str(info.value)
    assert "\n" not in str(info.value)


def test_diffusion_preset_maps_to_the_entries_that_hold_its_files(parts):
    ldm = _diffusion("ldm", unet=Component("diffusers-unet", {"config": "models/x.json"}, "big-ldm/unet"),
                     text=Component("ldm-bert", {"tokenizer": "big-ldm/tokenizer"}, "big-ldm"),
                     codec=Component("pixels"), scheduler={"from": "big-ldm/scheduler"})
    assert [e.name for e in weights.needed_entries(ldm)] == ["big-ldm"]
    # A file names its entry; the glide/ folder is then covered by that entry, not by the upsampler's too.
    base = _diffusion("g64", unet=Component("glide-base", {}, "glide/base.pt"),
                      text=Component("glide-bpe", {"folder": "glide"}, "glide/encoder.json"), codec=Component("pixels"))
    assert [e.name for e in weights.needed_entries(base)] == ["glide-base"]
    both = _diffusion("g256", post=("up-x2",), unet=Component("glide-base", {}, "glide/base.pt"),
                      text=Component("glide-bpe", {}, "glide"), codec=Component("pixels"),
                      upsampler=Component("glide-upsample", {}, "glide/upsample.pt"))
    assert [e.name for e in weights.needed_entries(both)] == ["glide-base", "glide-upsample", "up-x2"]
    # Built-in and absolute paths are not downloads; a path under checkpoints/ that no entry holds is one line.
    assert weights.needed_entries(_diffusion("b", unet=Component("diffusers-unet", {}, "builtin:shapes-ldm/unet"),
                                             codec=Component("pixels"))) == []
    lost = _diffusion("lost", unet=Component("diffusers-unet", {}, "nowhere/unet"), codec=Component("pixels"))
    with pytest.raises(PresetError, match=r"^preset lost: nowhere/unet is in no entry of .*weights.yaml"):
        weights.needed_entries(lost)


def test_missing_files_name_the_first_file_and_the_command(parts):
    preset = _diffusion("g256", unet=Component("glide-base", {}, "glide/base.pt"),
                        text=Component("glide-bpe", {}, "glide/encoder.json"), codec=Component("pixels"),
                        upsampler=Component("glide-upsample", {}, "glide/upsample.pt"))
    assert weights.missing_files(preset) == [str(parts / "glide/base.pt"), str(parts / "glide/encoder.json"),
                                             str(parts / "glide/upsample.pt")]
    with pytest.raises(WeightsMissing) as info:
        weights.require(preset)
    assert str(info.value) == f"preset g256 needs {parts}/glide/base.pt and 2 more: run `python -m t2i download g256`"
    (parts / "glide").mkdir(parents=True)
    (parts / "glide/base.pt").write_bytes(b"base")
    (parts / "glide/encoder.json").write_bytes(b"{}")
    (parts / "glide/upsample.pt").write_bytes(b"up")  # cut short: present, but not the listed length
    assert weights.missing_files(preset) == [f"{parts}/glide/upsample.pt (2 bytes, should be 4)"]
    assert not weights.is_ready(preset)
    (parts / "glide/upsample.pt").write_bytes(b"upup")
    assert weights.missing_files(preset) == [] and weights.is_ready(preset)
    weights.require(preset)


def test_real_registry_covers_every_pretrained_diffusion_preset():
    reg = weights.registry(CONFIG_DIR / "weights.yaml")
    for name, p in all_presets().items():
        if p.family != "diffusion" or p.untrained or weights.is_builtin(p):
            continue
        entries = weights.needed_entries(p)  # raises for a component path no entry holds
        files = {f for e in entries for f in e.files}
        for c in p.components.values():
            if c.weights:
                assert c.weights in files or any(f.startswith(c.weights.rstrip("/") + "/") for f in files), (name, c)
        assert all(reg[u].kind in ("esrgan", "srcnn") for u in p.post), name
    assert [e.name for e in weights.needed_entries(get_preset("ldm-text2im-large-256"))] == ["ldm-text2im-large-256"]
    assert [e.name for e in weights.needed_entries(get_preset("glide-base-64"))] == ["glide-base"]
    assert [e.name for e in weights.needed_entries(get_preset("glide-256"))] == ["glide-base", "glide-upsample"]


def test_real_registry_lists_a_length_or_null_for_every_new_file():
    reg = weights.registry(CONFIG_DIR / "weights.yaml")
    raw = yaml.safe_load((CONFIG_DIR / "weights.yaml").read_text())
    for name in ("ldm-text2im-large-256", "glide-base", "glide-upsample", "realesrgan-x4plus",
                 "srcnn-x2", "srcnn-x3", "srcnn-x4"):
        assert all("size" in spec for spec in raw[name]["files"].values()), name  # said, even when null
        assert all(spec.urls for spec in reg[name].files.values()) == (reg[name].kind != "hf"), name
    assert reg["realesrgan-x4plus"].files["upscale/RealESRGAN_x4plus.pth"].size == 67040989
    assert reg["glide-base"].files["glide/encoder.json"].size == 1042301
    assert reg["glide-base"].files["glide/vocab.bpe"].size == 456318
    for factor in (2, 3, 4):
        assert set(reg[f"srcnn-x{factor}"].files) == {f"upscale/srcnn_x{factor}.pth"}


def test_gpt2_bpe_sizes_match_the_release_files():
    # The lengths the registry gives encoder.json and vocab.bpe are those of the release's files.
    import gzip

    fixtures = ROOT.parent / "shared" / "fixtures" / "glide"
    if not fixtures.is_dir():
        absent(f"the GLIDE fixtures (made from the release, kept beside the repository) are not at {fixtures}")
    files = weights.registry(CONFIG_DIR / "weights.yaml")["glide-base"].files
    for name in ("encoder.json", "vocab.bpe"):
        assert len(gzip.decompress((fixtures / f"{name}.gz").read_bytes())) == files[f"glide/{name}"].size


def test_presets_listing_says_what_to_download(tmp_path, monkeypatch, capsys):
    from t2i.cli.weights import cmd_presets

    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    cmd_presets(None)
    out = capsys.readouterr().out
    assert "weights missing (10 files): python -m t2i download ldm-text2im-large-256" in out
    assert "weights missing (3 files): python -m t2i download glide-base-64" in out
    assert "weights missing (4 files): python -m t2i download glide-256" in out


# --- upscalers: fetched, then proved by t2i.upscale.build ----------------------------------------------

@pytest.fixture
def srcnn_mirror(tmp_path, monkeypatch):
    """A loopback mirror serving a real 9-5-5 SRCNN state dict, and a registry naming it with its length."""
    from t2i.upscale.srcnn import SRCNN

    served = tmp_path / "served"
    served.mkdir()
    torch.manual_seed(3)
    torch.save(SRCNN().state_dict(), served / "srcnn_x2.pth")
    (served / "garbage.pth").write_bytes(b"\0" * (served / "srcnn_x2.pth").stat().st_size)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    size = (served / "srcnn_x2.pth").stat().st_size
    registry = tmp_path / "weights.yaml"
    registry.write_text(yaml.safe_dump({
        "test-srcnn-x2": {"kind": "srcnn", "files": {"upscale/test_srcnn_x2.pth": {
            "urls": [f"{base}/missing.pth", f"{base}/srcnn_x2.pth"], "size": size}}},
        "broken-srcnn-x2": {"kind": "srcnn", "files": {"upscale/broken_srcnn_x2.pth": {
            "urls": [f"{base}/garbage.pth"], "size": size}}}}))
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path / "ck"))
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path / "ck"
    server.shutdown()
    server.server_close()


def test_upscaler_download_is_proved_by_building_it(srcnn_mirror):
    assert install.download("test-srcnn-x2", progress=False) == ["test-srcnn-x2: 1 files present and loaded"]
    assert (srcnn_mirror / "upscale/test_srcnn_x2.pth").is_file()
    # The right length, but not a torch file: the download's proof refuses it before it takes the name
    # (tests/test_download.py has a torch file that only the loader refuses).
    with pytest.raises(DownloadError) as info:
        install.download("broken-srcnn-x2", progress=False)
    assert "broken_srcnn_x2.pth" in str(info.value) and "not a torch.save file" in str(info.value)
    assert "\n" not in str(info.value) and not (srcnn_mirror / "upscale/broken_srcnn_x2.pth").exists()
