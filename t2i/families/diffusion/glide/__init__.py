"""OpenAI GLIDE (filtered): the text-conditional 64px base model and the 64->256 upsampler, in plain PyTorch.

model.py holds the networks (state-dict compatible with the release), diffusion.py the schedule,
respacing and p_mean_variance, load.py the strict loading of base.pt / upsample.pt. Tokenisation
(GPT-2 BPE, lower-cased, padded with 50256 to text_ctx) and the sampling loop are not here yet.
"""

from .diffusion import GlideDiffusion, betas, space_timesteps
from .load import check_state_dict, load, load_into
from .model import SuperResText2ImUNet, Text2ImUNet, glide_base, glide_upsample, release_options

__all__ = ["GlideDiffusion", "SuperResText2ImUNet", "Text2ImUNet", "betas", "check_state_dict", "glide_base",
           "glide_upsample", "load", "load_into", "release_options", "space_timesteps"]
