"""Hub entries (kind hf): huggingface_hub against a fake hub on loopback, the registry's file list and
lengths, and the folder the diffusion loaders then read. No mocks: the real huggingface_hub client
talks HTTP to a server that answers as the hub's resolve endpoint does (X-Repo-Commit, ETag, length)."""

from __future__ import annotations

import hashlib
import io
import json
from http.server import BaseHTTPRequestHandler

import pytest
import yaml

from t2i.assets import install, weights
from t2i.assets.download import DownloadError, fetch_hub
from t2i.errors import WeightsMissing
from t2i.paths import CONFIG_DIR

from conftest import serve_http

REPO = "org/tiny-ldm"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HTML = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"
LIE_AT = 4000  # what the "liar" mode announces and sends of unet/weights.bin
CAP = 200_000  # the cap the endless-body test passes (the default is gigabytes)


def _torch_file() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"weight": torch.arange(2560, dtype=torch.float32)}, buf)
    return buf.getvalue()


WEIGHTS = _torch_file()


class _Hub(BaseHTTPRequestHandler):
    """/{repo}/resolve/{revision}/{path}: HEAD gives the metadata huggingface_hub needs, GET the bytes.
    Any other repo (an endpoint without the model) is a 404, as the hub answers. `server.broken` maps
    a file to how it is served wrongly: "html" (an error page with 200), "liar" (a short body whose
    length agrees with it), "endless" (no length, chunked, no end)."""

    def log_message(self, *args):
        pass

    def _answer(self, body: bool):
        repo, _, rest = self.path.lstrip("/").partition("/resolve/")
        _, _, name = rest.partition("/")
        with self.server.lock:
            self.server.requests.append((self.command, self.path))
        data = self.server.files.get(name) if repo == REPO else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if repo == REPO else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        mode = self.server.broken.get(name)
        data = {"html": HTML, "liar": data[:LIE_AT]}.get(mode, data)
        if mode == "endless":
            self.protocol_version = "HTTP/1.1"
            self.close_connection = True
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header(*(("Transfer-Encoding", "chunked") if mode == "endless" else ("Content-Length", str(len(data)))))
        self.end_headers()
        if body and mode == "endless":
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            except OSError:
                pass
        elif body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)


@pytest.fixture
def hub(monkeypatch):
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    yield from serve_http(_Hub, monkeypatch, requests=[], broken={}, files={
        "unet/config.json": b'{"sample_size": 8}', "unet/weights.bin": WEIGHTS,
        "scheduler/scheduler_config.json": b'{"num_train_timesteps": 1000}'})


def _registry(tmp_path, monkeypatch, hub, sizes=None, endpoints=None):
    files = {name: {"size": len(data)} for name, data in hub.files.items()}
    for name, size in (sizes or {}).items():
        files[name] = {"size": size}
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump({"tiny-hub": {"kind": "hf", "repo": REPO, "revision": "main",
                                                 "endpoints": endpoints or [hub.base], "files": files}}, sort_keys=False))
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(path))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path / "ck"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no reuse of a real cache on this machine
    return tmp_path / "ck" / "tiny-hub"


def test_hub_entry_fetches_its_files_into_checkpoints_name(tmp_path, monkeypatch, hub):
    folder = _registry(tmp_path, monkeypatch, hub, endpoints=[hub.base + "/no-such-mirror", hub.base])
    e = weights.entry("tiny-hub")
    assert set(e.files) == {f"tiny-hub/{name}" for name in hub.files}
    assert e.missing() == [str(folder / "unet/config.json"), str(folder / "unet/weights.bin"),
                           str(folder / "scheduler/scheduler_config.json")]
    lines = install.download("tiny-hub", progress=False)
    assert lines == ["tiny-hub: 3 files present; not loaded: no preset uses it"]
    for name, data in hub.files.items():
        assert (folder / name).read_bytes() == data
    assert e.missing() == []
    # The first endpoint lacks the repo (a 404): the second served the first file, and then went first.
    assert [p for _, p in hub.requests if "no-such-mirror" in p] == ["/no-such-mirror/org/tiny-ldm/resolve/main/unet/config.json"]
    # Present files make no request at all.
    hub.requests.clear()
    assert install.download("tiny-hub", progress=False, verify=False) == ["tiny-hub: 3 files present"]
    assert hub.requests == []


def test_hub_file_of_another_length_is_refused(tmp_path, monkeypatch, hub):
    folder = _registry(tmp_path, monkeypatch, hub, sizes={"unet/weights.bin": 5})
    with pytest.raises(DownloadError) as info:
        install.download("tiny-hub", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"could not download unet/weights.bin of {REPO} from 1 endpoint")
    assert f"{len(hub.files['unet/weights.bin'])} bytes offered, 5 expected" in msg
    assert not (folder / "unet/weights.bin").exists()
    assert weights.entry("tiny-hub").missing()[0] == str(folder / "unet/weights.bin")


def test_hub_without_the_repo_is_one_line(tmp_path, monkeypatch, hub):
    _registry(tmp_path, monkeypatch, hub, endpoints=[hub.base + "/empty"])
    with pytest.raises(DownloadError) as info:
        install.download("tiny-hub", progress=False)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"could not download unet/config.json of {REPO} from 1 endpoint")
    assert msg.endswith(f"from {hub.base}/empty)")


def test_hf_endpoint_is_tried_first(tmp_path, monkeypatch, hub):
    _registry(tmp_path, monkeypatch, hub, endpoints=[hub.base + "/empty"])
    monkeypatch.setenv("HF_ENDPOINT", hub.base)
    assert weights.entry("tiny-hub").hub_endpoints() == [hub.base, hub.base + "/empty"]
    assert install.download("tiny-hub", progress=False, verify=False) == ["tiny-hub: 3 files present"]
    assert not any("/empty/" in p for _, p in hub.requests)


def test_a_hub_unet_folder_loads_through_the_diffusion_loader(tmp_path, monkeypatch, hub):
    # The fetched layout is what components.py reads: a diffusers save_pretrained folder.
    import torch
    from diffusers import UNet2DConditionModel

    from t2i.families.diffusion.components import unet

    config = json.loads((CONFIG_DIR / "models/tiny-ldm-unet.json").read_text())
    torch.manual_seed(0)
    source = UNet2DConditionModel.from_config(config)
    saved = tmp_path / "saved"
    source.save_pretrained(saved)
    hub.files = {f"unet/{p.name}": p.read_bytes() for p in saved.iterdir() if p.is_file()}
    folder = _registry(tmp_path, monkeypatch, hub)
    install.download("tiny-hub", progress=False, verify=False)
    loaded = unet({}, folder / "unet", "python -m t2i download tiny-hub")
    for k, v in source.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_the_real_ldm_entry_names_its_files_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    e = weights.registry(CONFIG_DIR / "weights.yaml")["ldm-text2im-large-256"]
    assert (e.kind, e.repo, e.revision) == ("hf", "CompVis/ldm-text2im-large-256", "main")
    assert e.hub_endpoints() == ["https://huggingface.co"]
    paths = {e.hub_path(f) for f in e.files}
    assert {"unet/config.json", "vqvae/config.json", "bert/config.json", "tokenizer/vocab.txt",
            "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
            "scheduler/scheduler_config.json"} <= paths
    assert {p.rsplit("/", 1)[0] for p in paths if p.endswith((".bin", ".safetensors"))} == {"unet", "vqvae", "bert"}
    from t2i.presets import get_preset

    with pytest.raises(WeightsMissing) as info:
        weights.require(get_preset("ldm-text2im-large-256"))
    assert str(info.value) == (f"preset ldm-text2im-large-256 needs {tmp_path}/ldm-text2im-large-256/unet/config.json "
                               f"and {len(e.files) - 1} more: run `python -m t2i download ldm-text2im-large-256`")


# --- files without a listed length (issue 28, finding 5): proved before they take the real name ------

def _staged_nothing(folder):
    """Nothing of a refused file anywhere under the entry's folder (its staging area included)."""
    assert not (folder / "unet/weights.bin").exists()
    assert not any(p.name.startswith("weights.bin") for p in folder.rglob("*")), sorted(folder.rglob("*"))


@pytest.mark.parametrize("mode, why", [("html", "an HTML page (an error or sign-in page?), not the file"),
                                       ("liar", "a damaged or cut torch.save file")])
def test_hub_page_or_short_body_is_refused_and_a_rerun_fixes_it(tmp_path, monkeypatch, hub, mode, why):
    folder = _registry(tmp_path, monkeypatch, hub, sizes={"unet/weights.bin": None})
    hub.broken["unet/weights.bin"] = mode
    with pytest.raises(DownloadError) as info:
        install.download("tiny-hub", progress=False, verify=False)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"could not download unet/weights.bin of {REPO} from 1 endpoint")
    assert why in msg
    _staged_nothing(folder)
    assert weights.entry("tiny-hub").missing() == [str(folder / "unet/weights.bin"),
                                                  str(folder / "scheduler/scheduler_config.json")]
    hub.broken.clear()  # the endpoint fixed: the same command fetches it
    assert install.download("tiny-hub", progress=False, verify=False) == ["tiny-hub: 3 files present"]
    assert (folder / "unet/weights.bin").read_bytes() == WEIGHTS


def test_hub_endless_body_stops_at_the_cap(tmp_path, monkeypatch, hub):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub.broken["unet/weights.bin"] = "endless"
    folder = tmp_path / "tiny-hub"
    with pytest.raises(DownloadError) as info:
        fetch_hub(REPO, {"unet/weights.bin": None}, folder, endpoints=[hub.base], cap=CAP, progress=False)
    assert str(info.value) == (f"could not download unet/weights.bin of {REPO} from 1 endpoint (last: more than "
                               f"{CAP} bytes sent for a file of unlisted length (the cap) from {hub.base})")
    _staged_nothing(folder)
    hub.broken.clear()
    assert fetch_hub(REPO, {"unet/weights.bin": None}, folder, endpoints=[hub.base], cap=CAP,
                     progress=False) == [folder / "unet/weights.bin"]
    assert (folder / "unet/weights.bin").read_bytes() == WEIGHTS
