"""Executors against a real store (SQLite file and PostgreSQL server): real processes, real signals.

Waiting is done by polling the store for a state with a deadline, never by sleeping a fixed time.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from t2i.service import executor as executor_module
from t2i.service import models as models_module
from t2i.service.executor import Executor, ExecutorConfig
from t2i.paths import ROOT
from t2i.service.memory import MAX_FRAMES
from t2i.service.queue import submit_job
from t2i.store import FINISHED, Lease, Result, open_store
import polling  # tests/polling.py

TINY = dict(iterations=2, cutn=2, save_every=1)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "OMP_NUM_THREADS": "1", "T2I_CHECKPOINTS": str(tmp_path / "no-checkpoints")}


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def start_executor(url, env, *args):
    return subprocess.Popen([sys.executable, "job_executor.py", "--db", url, "--device", "cpu", "--poll", "0.1", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout=120.0, what="condition"):
    return polling.wait_for(predicate, what, timeout)


def running_with_progress(store, job_id, min_step=2):
    job = store.get(job_id)
    return job if job.status == "running" and job.step >= min_step else None


def run_watching(ex, after_step) -> list[list]:
    """Run the executor until the queue is empty, calling after_step(runner) after every batch step;
    returns the jobs in the batch at each step."""
    batches = []
    real_step = executor_module.Runner.step

    def watching_step(runner):
        batches.append(sorted(runner.slots))
        steps = real_step(runner)
        after_step(runner)
        return steps

    executor_module.Runner.step = watching_step
    try:
        assert ex.run() == 0
    finally:
        executor_module.Runner.step = real_step
        ex.close()
    return batches


def finish(proc, timeout=180):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.mark.subprocess
def test_four_executors_drain_forty_jobs_exactly_once(store, store_url, env):
    ids = [submit_job(store, f"job {i}", "tiny-vqgan-untrained", seed=i, **TINY) for i in range(40)]
    procs = [start_executor(store_url, env, "--once") for _ in range(4)]
    outcomes = [finish(p) for p in procs]
    assert all(code == 0 for code, _ in outcomes), [out[-2000:] for _, out in outcomes]
    assert store.counts() == {"queued": 0, "running": 0, "done": 40, "failed": 0, "cancelled": 0}
    for job_id in ids:
        job = store.get(job_id)
        assert job.attempts == 1, f"job {job_id} was claimed {job.attempts} times"
        result = store.result(job_id)
        assert result.parameters["prompt"] == job.prompt and result.seed == job.spec["seed"]
        assert result.gif[:6] == b"GIF89a" and result.png[:8] == b"\x89PNG\r\n\x1a\n"
        assert store.frames(job_id) == []  # dropped once the GIF is written
    workers = {store.get(i).worker_id for i in ids}
    assert len(workers) >= 2  # the work was shared


@pytest.mark.subprocess
def test_killed_executor_job_finished_by_another_and_late_writes_fenced(store, store_url, env):
    job_id = submit_job(store, "a long job", "tiny-vqgan-untrained", iterations=300, cutn=2, save_every=1, seed=1)
    a = start_executor(store_url, env, "--lease", "3")
    job = wait_for(lambda: running_with_progress(store, job_id), what="executor A to make progress")
    a.kill()  # SIGKILL: no cleanup, the lease is left to expire
    a.communicate(timeout=30)
    dead = store.get(job_id)
    assert dead.status == "running" and dead.step < dead.total
    old_lease = Lease(job_id, job.worker_id, job.attempts)

    b = start_executor(store_url, env, "--lease", "3", "--max-jobs", "1")
    code, out = finish(b)
    assert code == 0, out[-2000:]
    done = store.get(job_id)
    assert done.status == "done" and done.attempts == 2 and done.worker_id != job.worker_id
    result = store.result(job_id)

    # The dead worker's late writes are rejected and change nothing.
    assert not store.progress(old_lease, 5, 0.5).alive
    assert not store.add_frame(old_lease, 5, b"late frame")
    late = Result(job_id, b"late gif", b"late png", b"late thumb", {"late": True}, 1, 1, 1, 0.0)
    assert not store.complete(old_lease, late)
    assert not store.fail(old_lease, "late failure")
    assert store.get(job_id).status == "done" and store.result(job_id).gif == result.gif
    assert store.frames(job_id) == []


@pytest.mark.subprocess
def test_an_executor_killed_under_a_batch_charges_only_the_job_that_kills_it_alone(tmp_path, env):
    """Four compatible jobs run as one batch; whenever the culprit has taken a step in an executor,
    the test SIGKILLs that executor, as the kernel's OOM killer kills the process whichever of its
    jobs made it grow. The death in the batch charges nobody and sends all four back to run alone;
    the three innocents then finish, and the culprit dies alone max_attempts times and fails with one
    line naming its load. (Before, three deaths in the batch failed all four.) SQLite only: the store
    tests run the same sweep and claim on PostgreSQL."""
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    store = open_store(url)
    jobs = [submit_job(store, f"batched {i}", "tiny-vqgan-untrained", iterations=4, cutn=2, save_every=2, seed=i)
            for i in range(4)]
    culprit = jobs[-1]  # the last in the queue: alone, the innocents run before it
    kills, proc = [], None

    def culprit_stepped_in(pid):
        job = store.get(culprit)
        if job.status in FINISHED or (job.status == "running" and job.step >= 1
                                      and job.worker_id.split("-")[-2] == str(pid)):
            return job
        return None

    try:
        for _ in range(6):  # 1 death in the batch, then 3 alone; the sixth executor would be one too many
            proc = start_executor(url, env, "--lease", "3", "--batch", "4")
            job = wait_for(lambda: culprit_stepped_in(proc.pid), what="the culprit to step or end")
            if job.status in FINISHED:
                break
            proc.kill()  # SIGKILL: no cleanup; the leases are left to expire
            proc.communicate(timeout=30)
            kills.append({j: (s.status, s.worker_id == job.worker_id, s.step < s.total)
                          for j in jobs for s in [store.get(j)]})
        else:
            raise AssertionError(f"the culprit never ended: {kills}")
        proc.send_signal(signal.SIGTERM)
        code, out = finish(proc, timeout=60)
        assert code == 0, out[-2000:]

        # The first death was in the batch: all four running unfinished in the executor killed.
        assert kills[0] == {j: ("running", True, True) for j in jobs}
        # Then only the culprit, alone, three times: the innocents had finished by then.
        assert len(kills) == 4 and all(k[culprit][:2] == ("running", True) for k in kills[1:])
        assert all(k[j][0] == "done" for k in kills[1:] for j in jobs[:-1]), kills
        for j in jobs[:-1]:
            innocent = store.get(j)
            assert (innocent.status, innocent.attempts, innocent.alone) == ("done", 1, True), innocent
            assert innocent.batch_key.startswith("alone after a batch of 4: ")
            assert store.result(j).seed == j - jobs[0]
        failed = store.get(culprit)
        assert (failed.status, failed.attempts, failed.alone) == ("failed", 3, True)
        assert failed.error == ("the executor died while running this job alone at 64x64 with 2 cutouts (3 times): "
                                "probably out of memory")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        store.close()


@pytest.mark.subprocess
def test_cancel_before_claim_during_run_and_after_completion(store, store_url, env):
    early = submit_job(store, "cancel me early", "tiny-vqgan-untrained", **TINY)
    assert store.cancel(early) == "cancelled"
    code, out = finish(start_executor(store_url, env, "--once"))
    assert code == 0, out[-2000:]
    assert store.get(early).status == "cancelled" and store.result(early) is None

    during = submit_job(store, "cancel me while running", "tiny-vqgan-untrained", iterations=3000, cutn=2,
                        save_every=1)
    proc = start_executor(store_url, env, "--max-jobs", "1")
    wait_for(lambda: running_with_progress(store, during), what="the job to run")
    assert store.cancel(during) == "cancel_requested"
    code, out = finish(proc)
    assert code == 0, out[-2000:]
    job = store.get(during)
    assert job.status == "cancelled" and job.step < job.total and store.result(during) is None

    late = submit_job(store, "cancel me too late", "tiny-vqgan-untrained", **TINY)
    code, out = finish(start_executor(store_url, env, "--once"))
    assert code == 0, out[-2000:]
    assert store.cancel(late) == "done"
    assert store.get(late).status == "done" and store.result(late) is not None


@pytest.mark.subprocess
def test_sigterm_mid_job_requeues_it_and_exits_zero(store, store_url, env):
    job_id = submit_job(store, "interrupted", "tiny-vqgan-untrained", iterations=3000, cutn=2, save_every=1)
    proc = start_executor(store_url, env)
    wait_for(lambda: running_with_progress(store, job_id), what="the job to run")
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc, timeout=60)
    assert code == 0, out[-2000:]
    job = store.get(job_id)
    assert job.status == "queued" and job.attempts == 0 and job.worker_id is None and job.step == 0
    assert store.frames(job_id) == [] and store.result(job_id) is None
    assert store.queue_position(job_id) == 1


def test_stop_request_near_the_end_finishes_the_job(store, store_url):
    job_id = submit_job(store, "almost there", "tiny-vqgan-untrained", **TINY)
    ex = Executor(ExecutorConfig(db=store_url, finish_fraction=0.0, once=True))
    try:
        ex.stopping.set()  # as SIGTERM would: every step is past the finish fraction
        assert ex.process(store.claim(ex.cfg.worker_id, 30)) == {job_id: "done"}
    finally:
        ex.close()
    assert store.get(job_id).status == "done"


def test_a_long_jobs_frames_are_thinned_in_the_store_while_it_runs(store, store_url):
    job_id = submit_job(store, "many frames", "tiny-vqgan-untrained", iterations=70, cutn=2, save_every=1)
    stored = []
    run_watching(Executor(ExecutorConfig(db=store_url, once=True, keep_frames=True)),
                 lambda runner: stored.append(len(store.frames(job_id))))
    steps = [step for step, _ in store.frames(job_id)]
    assert store.get(job_id).status == "done"
    assert max(stored) <= MAX_FRAMES < 70          # never more in the store, at any step
    assert steps[0] == 0 and steps[-1] >= 67       # from the first frame to the latest (the preview)
    assert len(steps) < 70 and all(b - a <= 2 for a, b in zip(steps, steps[1:])), steps


def test_failing_jobs_get_their_reason_and_the_executor_goes_on(store, store_url, monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path / "empty"))
    real_step = executor_module.Runner.step

    def flaky_step(batch):
        prompts = {s.spec.prompt for s in batch.slots.values()}
        if "explode" in prompts:
            raise RuntimeError("boom\nwith a second line")
        if "oom" in prompts:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(batch)

    monkeypatch.setattr(executor_module.Runner, "step", flaky_step)
    builds = []
    real_build = models_module.build_pipeline
    monkeypatch.setattr(models_module, "build_pipeline", lambda *a, **k: builds.append(a) or real_build(*a, **k))

    # Different cutouts: each failing job runs in a batch of its own.
    explode = submit_job(store, "explode", "tiny-vqgan-untrained", iterations=2, cutn=3)
    oom = submit_job(store, "oom", "tiny-vqgan-untrained", iterations=2, cutn=5)
    missing = submit_job(store, "needs weights", "vqgan_imagenet_f16_16384", iterations=2)
    ok = [submit_job(store, f"fine {i}", "tiny-vqgan-untrained", **TINY) for i in range(2)]
    ex = Executor(ExecutorConfig(db=store_url, once=True))
    try:
        assert ex.run() == 0
    finally:
        ex.close()

    assert store.get(explode).status == "failed"
    assert store.get(explode).error == ("internal error (RuntimeError: boom); the operator's log has details")
    assert store.get(oom).status == "failed"
    assert store.get(oom).error == "out of CPU memory at 64x64 with 5 cutouts: lower the size or the cutouts"
    error = store.get(missing).error
    assert store.get(missing).status == "failed" and "\n" not in error
    assert "python -m t2i download vqgan_imagenet_f16_16384" in error
    assert all(store.get(j).status == "done" for j in ok)
    assert ex.done == 5
    # The tiny preset was built once and reused, then once more after the OOM cleared the cache.
    assert len([b for b in builds if b[0].name == "tiny-vqgan-untrained"]) == 2


def test_compatible_jobs_run_as_one_batch_with_per_job_cancel_and_fencing(store, store_url):
    jobs = [submit_job(store, f"batched {i}", "tiny-vqgan-untrained", iterations=8, cutn=2, save_every=2, seed=i)
            for i in range(4)]
    other = submit_job(store, "another size", "tiny-vqgan-untrained", iterations=2, cutn=2, width=128)
    ex = Executor(ExecutorConfig(db=store_url, once=True, batch="3"))
    thief = {}

    def interfere(batch):
        if jobs[0] in batch.slots and batch.slots[jobs[0]].step == 3:
            store.cancel(jobs[0])  # cancelled mid-batch: only that job stops
        if jobs[1] in batch.slots and batch.slots[jobs[1]].step == 3 and not thief:
            # jobs[1]'s lease is taken over (as after a sweep): the executor must stop writing to it.
            with store.transaction():
                store._execute("UPDATE jobs SET worker_id = 'thief', attempts = attempts + 1 WHERE id = ?",
                               (jobs[1],))
            thief["lease"] = True

    sizes = run_watching(ex, interfere)
    assert max(len(s) for s in sizes) == 3 and all(other not in s for s in sizes if len(s) > 1)
    assert any(jobs[3] in s for s in sizes)  # the fourth joined when a place came free
    assert store.get(jobs[0]).status == "cancelled" and store.result(jobs[0]) is None
    stolen = store.get(jobs[1])
    assert stolen.status == "running" and stolen.worker_id == "thief" and store.result(jobs[1]) is None
    assert store.get(jobs[2]).status == "done" and store.get(jobs[3]).status == "done"
    assert store.get(other).status == "done"
    for j in (jobs[2], jobs[3]):  # per-job results, seeds and frames as if alone
        assert store.result(j).seed == store.get(j).spec["seed"] and store.frames(j) == []


@pytest.mark.subprocess
def test_submit_from_the_shell_rejects_bad_input_and_inserts_nothing(store, store_url, env):
    bad = subprocess.run([sys.executable, "-m", "t2i", "submit", "a cat", "--preset", "tiny-vqgan-untrained",
                          "--iterations", "0", "--db", store_url], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: iterations: must be between 1 and 5000, got 0"
    assert sum(store.counts().values()) == 0
    good = subprocess.run([sys.executable, "-m", "t2i", "submit", "a cat", "--preset", "tiny-vqgan-untrained",
                           "--db", store_url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0 and good.stdout.strip().endswith("queued at position 1")
    listing = subprocess.run([sys.executable, "-m", "t2i", "jobs", "--db", store_url], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert "queued 1" in listing.stdout and "'a cat'" in listing.stdout


@pytest.mark.subprocess
def test_run_executor_sh_restarts_a_crashed_executor_and_stops_cleanly(tmp_path, env):
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    store = open_store(url)
    try:
        proc = subprocess.Popen(["bash", "run_executor.sh", "cpu", "--db", url, "--poll", "0.1"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = wait_for(lambda: store.workers(seen_within=600), what="the first executor")[0]["id"]
        os.kill(int(first.split("-")[-2]), signal.SIGKILL)  # worker ids are host-pid-random
        second = wait_for(lambda: [w for w in store.workers(seen_within=600) if w["id"] != first],
                          what="a restarted executor")[0]["id"]
        assert second != first
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-2000:]
        assert "restarting" in out
        with pytest.raises(ProcessLookupError):
            os.kill(int(second.split("-")[-2]), 0)
    finally:
        store.close()


def test_diffusion_jobs_share_a_batch_across_samplers_and_finish_with_their_parameters(store, store_url):
    """Jobs of one diffusion preset and size batch together whatever their sampler, steps, guidance or
    sample count; each gets its own result; an OOM names the diffusion load; a cancel stops one job."""
    from t2i.output import render

    preset = "tiny-diffusion-untrained"
    a = submit_job(store, "a six", preset, sampler="ddim", steps=6, guidance=3, seed=1, save_every=2)
    b = submit_job(store, "a two | blurry:-1", preset, sampler="dpm++", steps=4, num_samples=4, seed=2)
    c = submit_job(store, "a nine", preset, sampler="ddpm", steps=8, guidance=0, seed=3)
    d = submit_job(store, "cancel me", preset, steps=8, seed=4)
    other = submit_job(store, "another size", preset, steps=2, width=64, height=64, seed=5)
    ex = Executor(ExecutorConfig(db=store_url, once=True, batch="4"))

    def cancel_d(batch):
        if d in batch.slots and batch.slots[d].step == 2:
            store.cancel(d)

    sizes = run_watching(ex, cancel_d)
    assert sorted(sizes[0]) == sorted([a, b, c, d]) and all(other not in s for s in sizes if len(s) > 1)
    assert store.get(d).status == "cancelled"
    for job_id, steps in ((a, 6), (b, 4), (c, 8), (other, 2)):
        job = store.get(job_id)
        assert (job.status, job.total, job.step, job.loss) == ("done", steps, steps, None), job
    params = store.result(b).parameters
    assert (params["family"], params["sampler"], params["num_samples"], params["guidance"]) == \
        ("diffusion", "dpm++", 4, 3.0)
    assert "cutn" not in params and render.read_parameters(store.result(b).png) == params
    assert store.result(b).width == 32 and store.result(other).width == 64


def test_a_diffusion_job_out_of_memory_fails_with_its_load(store, store_url, monkeypatch):
    def exhausted(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(executor_module.Runner, "step", exhausted)
    job = submit_job(store, "a six", "tiny-diffusion-untrained", steps=20, num_samples=16, seed=1)
    ex = Executor(ExecutorConfig(db=store_url, once=True))
    try:
        assert ex.run() == 0
    finally:
        ex.close()
    assert store.get(job).error == ("out of CPU memory at 32x32, 20 DDIM steps, CFG 3, 16 samples: "
                                    "lower the size or the number of samples")


@pytest.mark.parametrize("option, value", [
    ("--lease", "0"), ("--lease", "-5"), ("--lease", "nan"), ("--lease", "inf"), ("--lease", "2"),
    ("--poll", "0"), ("--poll", "-1"), ("--poll", "nan"),
    ("--max-jobs", "0"), ("--max-jobs", "-3"),
    ("--cache-size", "0"),
])
def test_executor_options_out_of_range_are_one_line_and_open_nothing(tmp_path, capsys, option, value):
    sys.path.insert(0, str(ROOT))
    try:
        import job_executor
    finally:
        sys.path.remove(str(ROOT))
    path = tmp_path / "t2i.db"
    assert job_executor.main(["--db", f"sqlite:///{path}", "--device", "cpu", "--once", option, value]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {option} {value}"), err
    assert not path.exists()


def test_an_unknown_executor_device_is_one_line(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    try:
        import job_executor
    finally:
        sys.path.remove(str(ROOT))
    assert job_executor.main(["--db", f"sqlite:///{tmp_path / 't2i.db'}", "--device", "gpu0", "--once"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --device gpu0: use cpu, cuda or cuda:N"]
