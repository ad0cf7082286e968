"""t2i/output/render.py's grid splitter (torch-free, for the gallery) against the grids the families really
make: the diffusion pipeline's `grid` (the gan family uses the same one) on random samples, and real
several-sample jobs of both families run by the executor, compared with the samples the runner keeps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from t2i.engine import run
from t2i.families.diffusion.pipeline import grid
from t2i.engine.runner import to_pil
from t2i.presets import get_preset
from t2i.service.queue import submit_job
from t2i.output.render import grid_layout, grid_samples, split_grid
from t2i.spec import make_spec
from t2i.store import open_store
from test_pages import run_queue


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 10, 16, 17])
@pytest.mark.parametrize("cell", [(8, 6), (5, 9)])
def test_split_gives_back_each_sample_of_the_pipelines_grid(n, cell):
    width, height = cell
    images = torch.rand((n, 3, height, width), generator=torch.Generator().manual_seed(n))
    made = to_pil(grid(images))
    columns, rows = grid_layout(n)
    assert columns == math.ceil(math.sqrt(n)) and rows == math.ceil(n / columns)
    assert made.size == (columns * (width + 2) + 2, rows * (height + 2) + 2)
    cut = split_grid(made, n, cell)
    assert len(cut) == n
    for k, sample in enumerate(cut):
        np.testing.assert_array_equal(pixels(sample), pixels(to_pil(images[k:k + 1])))


@pytest.mark.parametrize("factor", [2, 4])
def test_a_grid_enlarged_as_a_whole_is_split_at_the_enlarged_places(factor):
    """An upscaler post-step enlarges the grid itself (runner.py): the gaps grow with it."""
    n, cell = 5, (6, 4)
    images = torch.rand((n, 3, cell[1], cell[0]), generator=torch.Generator().manual_seed(1))
    made = to_pil(grid(images))
    big = made.resize((made.width * factor, made.height * factor), resample=0)   # nearest: exact
    cut = split_grid(big, n, cell)
    assert [s.size for s in cut] == [(cell[0] * factor, cell[1] * factor)] * n
    for k, sample in enumerate(cut):
        want = to_pil(images[k:k + 1])
        np.testing.assert_array_equal(pixels(sample), pixels(want.resize(sample.size, resample=0)))


def test_an_image_that_is_no_such_grid_is_not_split():
    images = torch.rand((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    made = to_pil(grid(images))
    assert split_grid(made, 4, (9, 8)) == [] and split_grid(made, 5, (8, 8)) == []
    assert split_grid(made.crop((0, 0, made.width - 1, made.height)), 4, (8, 8)) == []
    assert split_grid(made, 1, (8, 8)) == []
    assert grid_samples(b"not a png", {"num_samples": 4, "size": [8, 8]}) == []
    assert grid_samples(b"", {}) == [] and grid_samples(b"", {"num_samples": 1, "size": [8, 8]}) == []


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Several-sample jobs of the diffusion and gan families, run by the real executor."""
    url = f"sqlite:///{tmp_path_factory.mktemp('samples') / 't2i.db'}"
    store = open_store(url)
    made = {
        "tiny-diffusion-untrained": submit_job(store, "a red circle", "tiny-diffusion-untrained", steps=2,
                                               num_samples=5, seed=11, width=32, height=48),
        "tiny-gan-untrained": submit_job(store, "a red circle", "tiny-gan-untrained", steps=2, num_samples=3,
                                         seed=12),
    }
    run_queue(url, cache_size=2)
    yield store, made
    store.close()


@pytest.mark.parametrize("preset", ["tiny-diffusion-untrained", "tiny-gan-untrained"])
def test_a_real_jobs_png_splits_into_the_samples_the_runner_made(jobs, pipelines, preset):
    store, made = jobs
    job, result = store.get(made[preset]), store.result(made[preset])
    assert job.status == "done", job.error
    n = result.parameters["num_samples"]
    cut = grid_samples(result.png, result.parameters)
    assert len(cut) == n and all(s.size == (result.width, result.height) for s in cut)
    # The same job again, directly: the runner keeps each sample beside the grid.
    p = get_preset(preset)
    spec = make_spec(job.prompt, preset, family=p.family, defaults=p.defaults, post=p.post,
                     **{k: v for k, v in job.spec.items() if k in ("steps", "num_samples", "seed", "width", "height")})
    again = run(spec, pipelines(preset))
    assert len(again.samples) == n
    for sample, want in zip(cut, again.samples):
        assert np.abs(pixels(sample).astype(int) - pixels(want).astype(int)).max() <= 1
