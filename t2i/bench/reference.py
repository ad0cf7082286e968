"""The reference loops for `bench --reference`: the way users write these loops, one job at a time.

Guided: the common VQGAN+CLIP loop. One job, fp32, no compile; cutouts made by a Python loop, one
crop and one resample per cutout, then kornia's augmentations on the stack (flip, affine,
perspective, colour jitter) and noise. kornia is needed only here: `pip install -r
requirements-bench.txt`.

Diffusion: a diffusers-pipeline-style loop (`for t in scheduler.timesteps: unet on [uncond, cond],
guidance, scheduler.step`) for one job.

Both run on the same models (same random weights) as our engine, so `bench` can report the ratio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.prompts import Target, guidance_loss
from ..engine.vqgan import clamp_with_grad, vector_quantize


class ReferenceCutouts(torch.nn.Module):
    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0, noise_fac: float = 0.1):
        super().__init__()
        try:
            import kornia.augmentation as K
        except ImportError as e:  # an optional benchmark dependency
            raise RuntimeError("bench --reference needs kornia: pip install -r requirements-bench.txt") from e
        self.cut_size, self.cutn, self.cut_pow, self.noise_fac = cut_size, cutn, cut_pow, noise_fac
        self.augs = torch.nn.Sequential(
            K.RandomHorizontalFlip(p=0.5),
            K.RandomAffine(degrees=15, translate=0.1, p=0.7, padding_mode="border"),
            K.RandomPerspective(0.7, p=0.7),
            K.ColorJitter(hue=0.1, saturation=0.1, p=0.7),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        side_y, side_x = image.shape[2:4]
        max_size, min_size = min(side_x, side_y), min(side_x, side_y, self.cut_size)
        cutouts = []
        for _ in range(self.cutn):  # the per-cutout loop our engine replaces with one grid_sample
            size = int(torch.rand([]) ** self.cut_pow * (max_size - min_size) + min_size)
            x = torch.randint(0, side_x - size + 1, ())
            y = torch.randint(0, side_y - size + 1, ())
            cutout = image[:, :, y:y + size, x:x + size]
            cutouts.append(F.adaptive_avg_pool2d(cutout, self.cut_size))
        batch = self.augs(torch.cat(cutouts))
        facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, self.noise_fac)
        return batch + facs * torch.randn_like(batch)


def reference_steps(models, width: int, height: int, cutn: int, steps: int, on_step) -> None:
    """`steps` optimisation steps of one VQGAN job the reference way (on_step() after each)."""
    generator = models.generator
    if generator.kind != "vqgan":
        raise ValueError("the reference loop is the VQGAN one; use a VQGAN preset")
    vq, perceptor = generator.model, models.perceptors[0]
    codebook = vq.codebook
    w, h = generator.fit_size(width, height)
    idx = torch.randint(codebook.shape[0], (h // generator.factor * (w // generator.factor),),
                        device=codebook.device)
    z = codebook[idx].view(1, h // generator.factor, w // generator.factor, -1).permute(0, 3, 1, 2)
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.1)
    cutouts = ReferenceCutouts(perceptor.input_size, cutn)
    target = Target(perceptor.encode_text(["a painting of a lighthouse in a storm"]))
    for _ in range(steps):
        z_q = vector_quantize(z.movedim(1, 3), codebook).movedim(3, 1)
        image = clamp_with_grad(vq.decode(z_q).add(1).div(2), 0, 1)
        loss = guidance_loss(perceptor.encode_image(cutouts(image)), [target])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(z.maximum(generator.z_min).minimum(generator.z_max))
        on_step()


def guided_reference_steps(models, spec, steps: int, on_step) -> None:
    """The guided family's reference loop for one job's spec (its size and cutouts)."""
    reference_steps(models, spec.width, spec.height, spec.options.cutn, steps, on_step)


def diffusion_reference_steps(pipeline, spec, steps: int, on_step) -> None:
    """`steps` denoising steps of one job the way a diffusers pipeline runs them (on_step() after each)."""
    from ..families.diffusion.pipeline import make_scheduler, step_kwargs

    unet, text = pipeline.unet, pipeline.text
    scheduler = make_scheduler(spec.options.sampler, pipeline.schedule)
    scheduler.set_timesteps(steps, device=pipeline.device)
    w, h = pipeline.used_size(spec)
    f = pipeline.codec.factor
    gen = torch.Generator(device=pipeline.device).manual_seed(0)
    x = torch.randn((spec.options.num_samples, unet.config.in_channels, h // f, w // f), generator=gen,
                    device=pipeline.device) * scheduler.init_noise_sigma
    with torch.no_grad():
        cond = text.encode([spec.prompt]).expand(spec.options.num_samples, -1, -1)
        uncond = text.null(spec.options.num_samples).to(pipeline.device)
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(torch.cat([x] * 2), t)
            eps_u, eps_c = unet(x_in, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
            x = scheduler.step(eps_u + spec.options.guidance * (eps_c - eps_u), t, x,
                               **step_kwargs(spec.options.sampler, gen, spec.options.eta)).prev_sample
            on_step()
