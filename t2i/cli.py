"""`python -m t2i ...`: generate, submit, jobs, cancel, retry, export, presets, download, bench.

Every user-facing failure is one line on stderr and a non-zero exit; a run that fails writes no
files (outputs are written only after the run succeeded, each through a temporary name).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .errors import T2IError
from .spec import MAX_IMAGE_BYTES, SpecError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def resolve_device(name: str | None) -> str:
    """cpu, cuda or cuda:N, checked here: torch would otherwise fail later, with a traceback."""
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise T2IError(f"--device {name}: use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise T2IError(f"--device {name}: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise T2IError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return name


def _read(path: str | None, field: str) -> bytes | None:
    """The file's bytes, read up to one byte past the image limit: a larger file (or an endless one,
    /dev/zero) is refused without being read in full."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise SpecError(field, f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise SpecError(field, f"{path} is larger than the limit of {MAX_IMAGE_BYTES // 2**20} MB "
                               f"({MAX_IMAGE_BYTES:,} bytes)")
    return data


FAMILY_FLAGS = ("iterations", "cutn", "lr", "sampler", "steps", "guidance", "eta", "num_samples", "noise_scale")


def _spec_fields(args) -> dict:
    """The raw job fields shared by `generate` and `submit` (validated by make_spec). Family options
    are passed only when given, so that make_spec can refuse one that does not apply to the preset."""
    size = args.size or (None, None)
    given = {name: getattr(args, name) for name in FAMILY_FLAGS if getattr(args, name) is not None}
    # --upscale, repeatable or a comma list; absent: the preset's post-steps (make_spec checks the names)
    upscale = ",".join(args.upscale) if args.upscale is not None else None
    return dict(width=size[0], height=size[1], save_every=args.save_every, seed=args.seed, upscale=upscale,
                init_image=_read(args.init_image, "init_image"),
                image_prompts=[_read(p, "image_prompt") for p in args.image_prompt or []], **given)


def slug(text: str, limit: int = 48) -> str:
    """A prompt made safe as a file name: lowercase ASCII words joined by '-'."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "image"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def default_preset() -> str:
    from .weights import default_preset as first_ready

    return first_ready()


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from . import render
    from .engine import run
    from .families import build_pipeline
    from .presets import get_preset
    from .spec import make_spec

    preset = get_preset(args.preset or default_preset())
    spec = make_spec(args.prompt, preset.name, family=preset.family, defaults=preset.defaults, post=preset.post,
                     **_spec_fields(args))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError("out", f"{out} exists and is not a directory")
    pipeline = build_pipeline(preset, device=resolve_device(args.device))
    if preset.untrained:
        print(f"note: {preset.name} has random weights; its images mean nothing", file=sys.stderr)

    with tqdm(total=spec.total_steps, desc="generating", unit="step", disable=args.quiet) as bar:
        def on_step(step):
            if step.loss is not None:
                bar.set_postfix(loss=f"{step.loss:.4f}")
            bar.update(1)
        result = run(spec, pipeline, on_step)

    params = render.parameters(spec, result, preset)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{slug(spec.prompt)}-{result.seed}"
    png, gif = out / f"{stem}.png", out / f"{stem}.gif"
    samples = [out / f"{stem}-{i:02d}.png" for i in range(1, len(result.samples) + 1)]
    _write_atomic(gif, render.gif_bytes(result.frames))
    for path, image in zip(samples, result.samples):
        _write_atomic(path, render.png_bytes(image, params))
    _write_atomic(png, render.png_bytes(result.image, params))
    made = result.upscaled_from or (result.width, result.height)
    resized = "" if made == (spec.width, spec.height) else \
        (f" (asked for {spec.width}x{spec.height}; {preset.name} draws at {made[0]}x{made[1]} only)"
         if preset.fixed_size else
         f" (asked for {spec.width}x{spec.height}; the generator works in multiples of {pipeline.factor})")
    upscaled = f", upscaled by {' and '.join(spec.upscale)} to {result.width}x{result.height}" \
        if result.upscaled_from else ""
    loss = f", final loss {result.losses[-1]:.4f}" if result.losses else ""
    print(f"size {made[0]}x{made[1]}{resized}{upscaled}, seed {result.seed}{loss}")
    print(f"wrote {png}" + (f" (a grid of {len(samples)} samples)" if samples else ""))
    if samples:
        print(f"wrote {samples[0]} ... {samples[-1].name} (each sample)")
    print(f"wrote {gif} ({len(result.frames)} frames)")
    return 0


def _open_store(args):
    """The store of --db. A missing SQLite file is refused unless --create: a mistyped path must not
    quietly start an empty queue (the service start, job_executor.py and the web app, creates it)."""
    from .store import StoreMissing, open_store

    try:
        return open_store(args.db, create=args.create)
    except StoreMissing as e:
        raise StoreMissing(f"{e} (start the service there, or add --create to make a new one)") from None


def _job_id(args) -> int:
    from .store import MAX_ID

    if not 1 <= args.job <= MAX_ID:
        raise SpecError("job", f"no job has the number {args.job} (job numbers run from 1 to {MAX_ID})")
    return args.job


def cmd_submit(args) -> int:
    from .queue import submit_job

    store = _open_store(args)
    job_id = submit_job(store, args.prompt, args.preset or default_preset(), priority=args.priority,
                        submitter=args.submitter,
                        **_spec_fields(args))
    print(f"job {job_id} queued at position {store.queue_position(job_id)}")
    return 0


def cmd_jobs(args) -> int:
    if not 1 <= args.limit <= 10_000:
        raise SpecError("--limit", f"must be between 1 and 10000, got {args.limit}")
    store = _open_store(args)
    counts = store.counts()
    print("  ".join(f"{k} {v}" for k, v in counts.items()))
    for j in store.jobs(status=args.status, limit=args.limit):
        detail = {"running": f"step {j.step}/{j.total} on {j.worker_id}",
                  "queued": f"position {store.queue_position(j.id)}",
                  "failed": j.error or ""}.get(j.status, "")
        print(f"{j.id:>6}  {j.status:<9}  {j.preset:<24}  {j.prompt[:50]!r}  {detail}")
    return 0


def cmd_cancel(args) -> int:
    outcome = _open_store(args).cancel(_job_id(args))
    if outcome is None:
        raise T2IError(f"no job {args.job}")
    print(f"job {args.job}: {outcome}")
    return 0


def cmd_retry(args) -> int:
    job_id = _job_id(args)
    try:
        new = _open_store(args).retry(job_id)
    except ValueError as e:
        raise T2IError(str(e)) from None
    print(f"job {args.job} retried as job {new}")
    return 0


def cmd_export(args) -> int:
    job_id = _job_id(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} exists and is not a directory")
    store = _open_store(args)
    result = store.result(job_id)
    if result is None:
        job = store.get(job_id)
        raise T2IError(f"job {job_id} has no result ({job.status if job else 'no such job'})")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError("--out", f"cannot create {out}: {e.strerror}") from None
    stem = f"{slug(result.parameters['prompt'])}-{result.seed}"
    _write_atomic(out / f"{stem}.png", result.png)
    _write_atomic(out / f"{stem}.gif", result.gif)
    print(f"wrote {out / stem}.png and .gif")
    return 0


def _require_positive(args, *names: str) -> None:
    """Counts a command takes (steps, captions) must be at least 1 when given: 0 would otherwise
    train nothing or divide by zero, after minutes of work."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SpecError(f"--{name.replace('_', '-')}", f"must be at least 1, got {value}")


WORLDS = ("shapes", "shapes-ldm", "digits", "flowers")


def cmd_train_demo(args) -> int:
    _require_positive(args, "clip_steps", "vqgan_steps", "sketch_steps", "unet_steps", "classifier_steps",
                      "gan_steps", "srcnn_steps")
    worlds = WORLDS if args.world == "all" else (args.world,)
    if args.mnist and "digits" not in worlds:
        raise SpecError("--mnist", "trains the digits world: add --world digits")
    for world in worlds:
        {"shapes": _train_shapes, "shapes-ldm": _train_shapes_ldm, "digits": _train_digits,
         "flowers": _train_flowers}[world](args)
    return 0


def _train_shapes(args) -> None:
    """The shapes world's CLIP, sketch net and VQGAN (the `shapes` preset's models)."""
    from .engine.sketch import save_sketch
    from .families import build_pipeline
    from .paths import builtin_dir
    from .presets import get_preset
    from .train import clip as clip_training
    from .train import sketch as sketch_training
    from .train import vqgan as vqgan_training

    out = builtin_dir() / "shapes"
    out.mkdir(parents=True, exist_ok=True)
    clip, clip_losses = clip_training.train(steps=args.clip_steps or clip_training.STEPS, seed=args.seed,
                                            progress=not args.quiet)  # None: the trainer's default
    attrs = clip_training.attribute_accuracy(clip)
    print(f"shapes CLIP: loss {clip_losses[0]:.3f} -> {clip_losses[-1]:.3f}, held-out retrieval "
          f"{clip_training.retrieval_accuracy(clip):.0%}, attributes "
          + ", ".join(f"{k} {v:.0%}" for k, v in attrs.items()))
    sketch, sketch_losses = sketch_training.train(clip, clip_training.tokenizer(),
                                                  steps=args.sketch_steps or sketch_training.STEPS, seed=args.seed,
                                                  progress=not args.quiet)
    sketch_acc = sketch_training.heldout_accuracy(sketch, clip)
    print(f"shapes sketch net: loss {sketch_losses[0]:.3f} -> {sketch_losses[-1]:.3f}, its own held-out images "
          "judged by the checker: " + ", ".join(f"{k} {v:.0%}" for k, v in sketch_acc.items()))
    vq, vq_losses = vqgan_training.train(steps=args.vqgan_steps or vqgan_training.STEPS, seed=args.seed,
                                         progress=not args.quiet)  # None: the trainer's default
    print(f"shapes VQGAN: reconstruction L1 {vq_losses[0]:.3f} -> {vqgan_training.reconstruction_l1(vq):.3f}")
    # Written last, each through a temporary name: an interrupted run leaves the old files intact.
    tmp_clip, tmp_ckpt, tmp_sketch = (out / ".shapes-clip.pt.tmp", out / ".shapes-vqgan.ckpt.tmp",
                                      out / ".shapes-sketch.pt.tmp")
    try:
        clip_training.save(clip, tmp_clip)
        save_sketch(sketch, tmp_sketch)
        vqgan_training.save(vq, out / "shapes-vqgan.yaml", tmp_ckpt)
    except BaseException:
        # checkpoints/shapes/ is tracked: a stray temporary file would dirty the checkout.
        for tmp in (tmp_clip, tmp_ckpt, tmp_sketch):
            tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp_clip, out / "shapes-clip.pt")
    os.replace(tmp_sketch, out / "shapes-sketch.pt")
    os.replace(tmp_ckpt, out / "shapes-vqgan.ckpt")
    build_pipeline(get_preset("shapes"))  # proves the files load through the real loaders
    print(f"wrote {out}/shapes-clip.pt, shapes-sketch.pt, shapes-vqgan.yaml, shapes-vqgan.ckpt (loaded back: ok)")




def _train_shapes_ldm(args) -> None:
    """Latent diffusion over the committed shapes VQGAN, conditioned on the shapes CLIP's token states."""
    from .families import build_pipeline
    from .paths import builtin_dir
    from .presets import get_preset
    from .train.shapes_ldm import train_shapes_ldm

    figures = train_shapes_ldm(builtin_dir(), seed=args.seed, steps=args.unet_steps, progress=not args.quiet)
    build_pipeline(get_preset("shapes-ldm"))  # proves the files load through the real loaders
    print(f"shapes LDM: loss {figures['loss_first']:.3f} -> {figures['loss_last']:.3f}, latent scale "
          f"{figures['scale']}, {figures['seconds'] / 60:.1f} min; wrote {builtin_dir() / 'shapes-ldm'} (loaded back: ok)")


def _train_digits(args) -> None:
    """The digits world: char-level CLIP, the bench's classifier, the pixel DDPM (or on real MNIST)."""
    from .families import build_pipeline
    from .paths import builtin_dir
    from .presets import get_preset
    from .train.digits import train_digits

    data = None
    if args.mnist:
        from .data.idx import load_mnist, mnist_sampler

        data = mnist_sampler(*load_mnist(args.mnist, "train"))
    out = builtin_dir() / "digits"
    f = train_digits(out, seed=args.seed, clip_steps=args.clip_steps, unet_steps=args.unet_steps,
                     classifier_steps=args.classifier_steps, progress=not args.quiet, data=data)
    build_pipeline(get_preset("digits"))  # proves the files load through the real loaders
    print(f"digits CLIP: loss {f['clip_loss_first']:.3f} -> {f['clip_loss_last']:.3f}, zero-shot digit "
          f"{f['clip_zero_shot']:.0%}; classifier: held-out {f['classifier_held_out']:.2%}; DDPM: loss "
          f"{f['unet_loss_first']:.3f} -> {f['unet_loss_last']:.3f}; {f['seconds'] / 60:.1f} min")
    print(f"wrote {out}/digits-clip.pt, digits-classifier.pt, unet/, scheduler/ (loaded back: ok)")


def _train_flowers(args) -> None:
    """The flowers world: caption encoder, GAN-INT-CLS, SRCNN x2/x3/x4, FlowersBench's classifier."""
    from .families import build_pipeline
    from .paths import builtin_dir
    from .presets import get_preset
    from .train.flowers import STEPS_PER_EPOCH, train_flowers
    from .upscale import build as build_upscaler

    if args.gan_steps and args.gan_steps % STEPS_PER_EPOCH:
        raise SpecError("--gan-steps", f"a multiple of {STEPS_PER_EPOCH} (whole epochs), got {args.gan_steps}")
    out = builtin_dir() / "flowers"
    f = train_flowers(out, seed=args.seed, text_steps=args.clip_steps, gan_steps=args.gan_steps,
                      srcnn_steps=args.srcnn_steps, classifier_steps=args.classifier_steps, progress=not args.quiet)
    build_pipeline(get_preset("flowers-gan"))  # proves the files load through the real loaders
    for scale in (2, 3, 4):
        build_upscaler(f"flowers-srcnn-x{scale}")
    c = f["classifier"]
    print(f"flowers caption encoder: loss {f['text_loss_first']:.3f} -> {f['text_loss_last']:.3f}, held-out "
          f"caption->image {f['text_retrieval']:.0%}; GAN: last D {f['gan_d_last']:.3f}, G {f['gan_g_last']:.3f}; "
          f"classifier: colour {c['colour']:.0%}, centre {c['centre']:.0%}, petals {c['petals']:.0%}; "
          f"{f['seconds'] / 60:.1f} min")
    print(f"wrote {out}/flowers-text.pt, generator.pt, srcnn_x2/x3/x4.pth, flowers-classifier.pt (loaded back: ok)")


def cmd_shapesbench(args) -> int:
    _require_positive(args, "n", "batch")
    from .shapesbench import report, shapesbench

    result = shapesbench(args.preset, n=args.n, device=resolve_device(args.device), seed=args.seed,
                         iterations=args.iterations, progress=not args.quiet, batch=args.batch)
    for line in report(result):
        print(line)
    return 0


def cmd_digitsbench(args) -> int:
    _require_positive(args, "n")
    from .digitsbench import digitsbench, report

    result = digitsbench(args.preset, n=args.n, device=resolve_device(args.device), seed=args.seed, steps=args.steps,
                         guidance=args.guidance, sampler=args.sampler, progress=not args.quiet)
    for line in report(result):
        print(line)
    return 0


def cmd_flowersbench(args) -> int:
    _require_positive(args, "n", "batch")
    from .flowersbench import flowersbench, report

    result = flowersbench(args.preset, n=args.n, device=resolve_device(args.device), seed=args.seed, batch=args.batch,
                          noise_scale=args.noise_scale, progress=not args.quiet)
    for line in report(result):
        print(line)
    return 0


def cmd_presets(args) -> int:
    from .presets import all_presets
    from .weights import download_command, missing_files

    for name, p in all_presets().items():
        missing = missing_files(p)
        state = "random weights (untrained)" if p.untrained else \
            ("weights present" if not missing else f"weights missing ({len(missing)} files): {download_command(name)}")
        print(f"{name}\n    {p.description}\n    models: {p.models_label}\n    {state}")
    return 0


def cmd_download(args) -> int:
    from .install import download

    for name in args.names:
        for line in download(name, progress=not args.quiet):
            print(line)
    return 0


def cmd_bench(args) -> int:
    from .bench import bench

    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise T2IError(f"--batch {args.batch}: use numbers separated by commas, e.g. 1,2,4") from None
    device = resolve_device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    for line in bench(args.preset, device=device, steps=args.steps, size=args.size, cutn=args.cutn,
                      precision=precision, batches=batches, reference=args.reference, plot=args.plot):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .presets import DEFAULT_PRESET
    from .store import default_url

    parser = argparse.ArgumentParser(prog="python -m t2i", description="CLIP-guided text-to-image")
    sub = parser.add_subparsers(dest="command", required=True)

    def spec_options(sp):
        sp.add_argument("prompt", help="text[:weight[:stop]] parts separated by '|', e.g. 'a red fox|blurry:-0.5'")
        sp.add_argument("--preset", help="default: the first ready preset (see `presets`)")
        sp.add_argument("--size", nargs=2, metavar=("W", "H"), help="default from the preset (300 300)")
        sp.add_argument("--iterations", help="guided presets: optimisation steps")
        sp.add_argument("--cutn", help="guided presets: cutouts per step")
        sp.add_argument("--lr", help="guided presets: Adam learning rate")
        sp.add_argument("--sampler", help="diffusion presets: ddpm, ddim, dpm++ or plms (a preset may allow fewer)")
        sp.add_argument("--steps", help="diffusion presets: sampling steps; gan presets: frames of the noise walk")
        sp.add_argument("--guidance", help="diffusion presets: classifier-free guidance scale (0: unconditional)")
        sp.add_argument("--eta", help="diffusion presets, ddim: noise per step (0: deterministic)")
        sp.add_argument("--num-samples", dest="num_samples", help="diffusion and gan presets: 1..64 images, as a grid")
        sp.add_argument("--noise-scale", dest="noise_scale",
                        help="gan presets: 0..2, the spread of the noise walk (0: one image per prompt)")
        sp.add_argument("--seed", help="0..2**63-1; random when omitted (the used seed is reported)")
        sp.add_argument("--init-image", help="PNG/JPEG/WebP to start from")
        sp.add_argument("--image-prompt", action="append", help="image to steer towards (repeatable)")
        sp.add_argument("--save-every", help="a GIF frame every K steps")
        sp.add_argument("--upscale", action="append", metavar="NAME",
                        help="upscaler(s) run on the finished image, in order (repeatable or a comma list; "
                             "`none`: not even the preset's); default: the preset's post-steps")

    def db_option(sp):
        sp.add_argument("--db", default=default_url(), help="store URL (default: $T2I_DB, else sqlite:///t2i.db)")
        sp.add_argument("--create", action="store_true",
                        help="make a new SQLite database when none is at --db (otherwise refused)")

    g = sub.add_parser("generate", help="make one image from a prompt, here and now")
    spec_options(g)
    g.add_argument("--out", default="outputs", help="directory for the PNG and GIF")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    q = sub.add_parser("submit", help="queue a job for the executors")
    spec_options(q)
    db_option(q)
    q.add_argument("--priority", type=int, default=0, help="higher runs first")
    q.add_argument("--submitter", default=None, help="who submitted it (for per-user views)")
    q.set_defaults(func=cmd_submit)

    j = sub.add_parser("jobs", help="queue counts and recent jobs")
    db_option(j)
    j.add_argument("--status", choices=["queued", "running", "done", "failed", "cancelled"])
    j.add_argument("--limit", type=int, default=20)
    j.set_defaults(func=cmd_jobs)

    for name, func, text in (("cancel", cmd_cancel, "cancel a queued or running job"),
                             ("retry", cmd_retry, "queue a failed or cancelled job again"),
                             ("export", cmd_export, "write a finished job's PNG and GIF to a directory")):
        c = sub.add_parser(name, help=text)
        c.add_argument("job", type=int)
        db_option(c)
        if name == "export":
            c.add_argument("--out", default="outputs")
        c.set_defaults(func=func)

    p = sub.add_parser("presets", help="list presets and whether their weights are present")
    p.set_defaults(func=cmd_presets)

    d = sub.add_parser("download", help="fetch weights into checkpoints/ and prove they load")
    d.add_argument("names", nargs="+", metavar="NAME", help="a preset or a weights entry (configs/weights.yaml)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_download)

    t = sub.add_parser("train-demo", help="train the built-in offline worlds' models (CPU; shapes about 8 minutes, "
                                          "shapes-ldm about 9, digits about 7, flowers about 12)")
    t.add_argument("--world", choices=[*WORLDS, "all"], default="all",
                   help="shapes: CLIP, sketch net, VQGAN; shapes-ldm: latent diffusion on those; digits: "
                        "char-level CLIP, classifier, pixel DDPM; flowers: caption encoder, GAN-INT-CLS, SRCNN, "
                        "classifier (default: all, in that order)")
    t.add_argument("--clip-steps", type=int, help="default: the trainer's (shapes or digits CLIP)")
    t.add_argument("--vqgan-steps", type=int, help="default: t2i.train.vqgan.STEPS")
    t.add_argument("--sketch-steps", type=int, help="default: t2i.train.sketch.STEPS")
    t.add_argument("--unet-steps", type=int, help="diffusion UNets (shapes-ldm, digits); default: the trainer's")
    t.add_argument("--classifier-steps", type=int, help="the digits or flowers classifier; default: the trainer's")
    t.add_argument("--gan-steps", type=int, help="flowers: GAN-INT-CLS steps (a multiple of 50); default: the trainer's")
    t.add_argument("--srcnn-steps", type=int, help="flowers: SRCNN steps per factor; default: the trainer's")
    t.add_argument("--mnist", help="digits: train on real MNIST IDX files in this folder "
                                   "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz])")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train_demo)

    sb = sub.add_parser("shapesbench", help="quality benchmark on held-out shapes captions")
    sb.add_argument("--preset", default="shapes")
    sb.add_argument("--n", type=int, default=100)
    sb.add_argument("--iterations", type=int, help="default: the preset's")
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--batch", type=int, default=16, help="jobs optimised together (default 16)")
    sb.add_argument("--device")
    sb.add_argument("--quiet", action="store_true")
    sb.set_defaults(func=cmd_shapesbench)

    db = sub.add_parser("digitsbench", help="quality benchmark of the digits preset: the asked digit, and diversity")
    db.add_argument("--preset", default="digits")
    db.add_argument("--n", type=int, default=20, help="samples per digit (default 20)")
    db.add_argument("--steps", help="default: the preset's")
    db.add_argument("--guidance", help="default: the preset's")
    db.add_argument("--sampler", help="default: the preset's")
    db.add_argument("--seed", type=int, default=0)
    db.add_argument("--device")
    db.add_argument("--quiet", action="store_true")
    db.set_defaults(func=cmd_digitsbench)

    fb = sub.add_parser("flowersbench", help="quality benchmark of a gan preset on held-out flowers captions "
                                             "(petal colour, centre colour, petal count; IS-like, diversity)")
    fb.add_argument("--preset", default="flowers-gan")
    fb.add_argument("--n", type=int, default=200, help="held-out captions, one sample each (default 200)")
    fb.add_argument("--seed", type=int, default=0)
    fb.add_argument("--batch", type=int, default=16, help="jobs run together (default 16)")
    fb.add_argument("--noise-scale", dest="noise_scale", help="default: the preset's")
    fb.add_argument("--device")
    fb.add_argument("--quiet", action="store_true")
    fb.set_defaults(func=cmd_flowersbench)

    b = sub.add_parser("bench", help="steps/s and peak memory with random weights of a preset's architecture")
    b.add_argument("--preset", default=DEFAULT_PRESET)
    b.add_argument("--device")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    b.add_argument("--cutn", type=int)
    b.add_argument("--batch", default="1", help="jobs optimised together; several: 1,2,4,8")
    b.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32")
    b.add_argument("--plot", help="write a PNG of job-steps/s against batch size here")
    b.add_argument("--reference", action="store_true",
                   help="also run the common per-cutout loop with kornia (pip install -r requirements-bench.txt)")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, T2IError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(e, SpecError) else EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
