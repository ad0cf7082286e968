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

from t2i import install, weights
from t2i.errors import PresetError
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
        if p.family == "diffusion":  # components by registry name; weights named unless untrained
            assert all((c.weights is None) == p.untrained for c in p.components.values() if c.target != "pixels")
            continue
        assert p.arch.is_file(), name
        if not p.untrained:
            assert p.weights in registry and all(ref.pretrained for ref in p.perceptors)
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


def test_listing_ready_presets_does_not_import_torch(tmp_path):
    # Every page lists the ready presets; on a machine without downloads that must not cost the
    # seconds of importing torch and open_clip (the first page render timed out under load).
    import os

    code = ("import sys; from t2i.weights import ready_presets; print(ready_presets()[0]); "
            "print('torch' in sys.modules, 'open_clip' in sys.modules)")
    env = {**os.environ, "T2I_CHECKPOINTS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["shapes", "False False"]
