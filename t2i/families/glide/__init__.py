"""GLIDE (filtered), its own family: OpenAI's 64px text-conditional base model with classifier-free
guidance and (glide-256) the 64->256 text-conditional upsampler, as two stages of one job.

    sizes.py      torch-free: the stages' sizes, respacing, the upsampler's steps, memory per job
    options.py    GlideOptions: the diffusion options, with the stages' sizes and memory
    family.py     the registry entry
    model.py      the networks (state-dict compatible with the release)
    diffusion.py  the schedule, respacing and p_mean_variance
    load.py       strict loading of base.pt / upsample.pt
    tokenizer.py  the release's GPT-2 BPE
    pipeline.py   the job: base stage, then the upsampler; `build`

This package's own module is torch-free (the registry imports family.py through it).
"""
