"""A family is one folder and one registry entry: nothing outside t2i/families/ asks a family's name, the
modules import each other without a cycle, and a fourth family made in this file alone runs through
submit, the executor, the gallery and the guide."""

import ast
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from t2i.checks import given, whole
from t2i.engine.runner import to_pil
from t2i.service.executor import Executor, ExecutorConfig
from t2i.families import FAMILIES, family
from t2i.families.base import Finished, StepOut
from t2i.families.options import FormField
from t2i.families.preset import check_random_weights, components, label
from t2i.families.record import Family, WeightsPlan
from t2i.paths import ROOT
from t2i.presets import _parse, all_presets
from t2i.service.queue import submit_job
from t2i.store import open_store

# --- nothing outside t2i/families/ branches on a family's name -------------------------------------

NAMES = "|".join(FAMILIES)
NAME = rf"['\"]({NAMES})['\"]"  # a registered family's name as a string literal
BRANCHES = [
    re.compile(rf"family\w*\)?\s*(==|!=)\s*{NAME}"),                          # family == "guided"
    re.compile(rf"{NAME}\s*(==|!=)\s*[\w.]*family\b"),                         # "guided" == spec.family
    re.compile(rf"family\w*\)?\s+(not\s+)?in\s*[(\[{{][^)\]}}]*{NAME}"),       # .family in ("guided", ...)
    re.compile(rf"(==|!=)\s*{NAME}"),                                           # ... == "diffusion"
    re.compile(rf"^\s*(\w+\s*=\s*\{{\s*)?{NAME}\s*:"),                          # {"diffusion": 16}: a table by family
    re.compile(r"is_glide|glide_sizes|GLIDE_TARGETS"),
]
# Lines that used to branch (before families were records): the patterns must catch each of them.
OLD = [
    'if preset.family != "guided":',
    '    if family == "diffusion":',
    'guided = result.parameters.get("family", "guided") == "guided"',
    'if reference and preset.family == "diffusion" and is_glide(preset):',
    'MIN_SIDE = {"diffusion": 16}  # small trained-here diffusion models work at 32x32 (digits)',
    '    "gan": "GAN (one forward pass of a text-conditioned generator)",',
    'steps = {"iterations" if preset.family == "guided" else "steps": iterations}',
    'if out.get("family") == "guided" and "steps" in out:',
    'if spec.family in ("guided", "gan"):',
]


def branches(line: str) -> bool:
    return any(p.search(line) for p in BRANCHES)


def test_the_grep_catches_the_old_branches():
    assert all(branches(line) for line in OLD), [line for line in OLD if not branches(line)]
    assert not branches('spec = make_spec(prompt, p.name, family=p.family, limits=limits)')
    assert not branches('if params.get("family", preset.family) == preset.family:')  # no name asked
    assert not branches('presets=family_presets if family != "all" else None')      # the filter's "all"


def test_nothing_outside_the_families_folder_compares_a_family_name():
    files = [p for p in (ROOT / "t2i").rglob("*.py") if "families" not in p.relative_to(ROOT / "t2i").parts[:1]]
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files + [ROOT / "webapp.py"]
             for i, line in enumerate(p.read_text().splitlines(), 1) if branches(line)]
    assert not found, "\n".join(found)


# --- no import cycle, imports inside functions included --------------------------------------------

def _modules() -> dict[str, Path]:
    mods = {}
    for path in (ROOT / "t2i").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict) -> set[str]:
    """The t2i modules `name` imports anywhere in its body: `from package import submodule` needs the
    submodule, `from module import x` the module (a package's own __init__ runs first anyway)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            wanted = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names]
        else:
            continue
        for target in wanted:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def test_no_import_cycle_in_t2i():
    mods = _modules()
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, " -> ".join(cycle)


def test_a_glide_job_stored_as_a_diffusion_one_runs_as_glide():
    from t2i.spec import JobSpec, make_spec

    stored = make_spec("a corgi", "tiny-glide-untrained", family="glide", width=32, height=32).to_dict()
    old = JobSpec.from_dict({**stored, "family": "diffusion"})  # before GLIDE had a folder of its own
    assert old.family == "glide" and type(old.options).__name__ == "GlideOptions"
    assert JobSpec.from_dict({**stored, "preset": "gone"}).family == "glide"


# --- a fourth family, from this file alone ---------------------------------------------------------

@dataclass(frozen=True)
class PaintOptions:
    """One colour per job, drawn from its seed; its frames fade in from black."""

    steps: int

    FAMILY = "paint"
    LIGHTER = "the size"
    FORM = (FormField("steps", "Fade steps", "int", step=1),)

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> "PaintOptions":
        return cls(whole("steps", given(raw, {"steps": 3, **defaults}, "steps"), 1, 10))

    def batch_key(self, spec) -> str:
        return f"{spec.preset}|{spec.width}x{spec.height}"

    def total_steps(self, spec) -> int:
        return self.steps

    def describe(self, spec, width: int, height: int) -> str:
        return f"{width}x{height}, {self.steps} fade steps"

    def used_size(self, spec, preset) -> tuple[int, int]:
        return spec.width, spec.height

    def job_bytes(self, spec, preset) -> int:
        return 2**20


@dataclass
class PaintPipeline:
    preset: object
    device: torch.device

    def used_size(self, spec):
        return spec.width, spec.height

    def describe(self, spec) -> str:
        return spec.options.describe(spec, *self.used_size(spec))

    def start(self, spec, gen):
        return {"spec": spec, "colour": torch.rand(3, 1, 1, generator=gen), "step": 0}

    def _image(self, job) -> torch.Tensor:
        w, h = self.used_size(job["spec"])
        return (job["colour"] * job["step"] / job["spec"].options.steps).expand(3, h, w)[None]

    def step(self, states, frames, amp):
        for job in states:
            job["step"] += 1
        return [StepOut(None, self._image(job) if want else None) for job, want in zip(states, frames)]

    def finish(self, states):
        return [Finished(to_pil(self._image(job))) for job in states]


def parse_paint(preset, raw):
    preset = replace(preset, components=components(preset.name, raw, ("brush",)))
    check_random_weights(preset)
    return replace(preset, models_label=label(preset))


PAINT = Family(name="paint", options=PaintOptions, parse_preset=parse_paint, weights=lambda preset: WeightsPlan(),
               build=lambda preset, device="cpu", random_weights=False: PaintPipeline(preset, torch.device(device)),
               blurb="paint (one colour, faded in)", gif_caption="the colour fading in", min_side=8)
RAW = {"description": "UNTRAINED one colour per seed - for the registry test", "family": "paint", "untrained": True,
       "components": {"brush": {"target": "flat-colour"}},
       "defaults": {"width": 16, "height": 16, "steps": 3, "save_every": 1}}


@pytest.fixture
def paint(monkeypatch, tmp_path):
    """The family registered and its preset offered, for this test only."""
    monkeypatch.setitem(FAMILIES, "paint", PAINT)
    preset = _parse("paint-untrained", RAW)  # the one preset parser hands the YAML to the family's
    monkeypatch.setitem(all_presets(), preset.name, preset)
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    monkeypatch.setenv("T2I_DB", url)
    return preset, url


def _page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
    at.run()
    if page != "generate":
        at.switch_page(f"t2i/web/{page}.py").run()
    assert not at.exception, at.exception
    return at


def test_a_fourth_family_runs_through_submit_the_executor_the_gallery_and_the_guide(paint):
    from t2i.service.guide import guide

    preset, url = paint
    assert preset.family == "paint" and preset.models_label == "flat-colour(random)"
    store = open_store(url)
    job = submit_job(store, "a red wall", preset.name, steps=4, seed=3)
    assert store.get(job).total == 4
    executor = Executor(ExecutorConfig(db=url, once=True))
    executor.run()
    executor.close()
    result = store.result(job)
    assert result is not None, store.get(job).error
    assert (result.width, result.height) == (16, 16) and result.parameters["family"] == "paint"
    with Image.open(io.BytesIO(result.png)) as im:
        assert "Steps: 4" in im.text["parameters"] and im.getpixel((0, 0)) != (0, 0, 0)
    store.close()

    about = guide(preset)
    assert about.family == "paint (one colour, faded in)" and about.world is None

    at = _page("generate")
    at.selectbox(key="preset").select(preset.name).run()
    assert not at.exception, at.exception
    shown = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert any("Family: paint (one colour, faded in)" in m for m in shown), shown
    assert "Fade steps" in [t.label for t in at.text_input]
    assert not at.get("file_uploader")  # it takes no images

    at = _page("gallery")
    assert "paint" in at.selectbox(key="gallery_family").options
    at.selectbox(key="gallery_family").select("paint").run()
    [detail] = [b for b in at.button if b.key == f"detail-{job}"]
    detail.click().run()
    assert not at.exception, at.exception
    captions = [str(el.proto) for kind in ("imgs", "image") for el in at.get(kind)]  # captions inside
    assert any("the colour fading in" in c for c in captions), captions
    assert family("paint") is PAINT
