"""The bodies the API takes. Types and shapes only: every limit on a value (prompt length, sizes,
steps, the family's options) is the spec's and the family's (t2i/spec.py, t2i/families/*/options.py),
checked by the service layer as for the pages, so there is one place per limit.

Images travel as base64 in the JSON body (the pages' uploads, the same byte limit once decoded).
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import SpecError
from ..spec import MAX_IMAGE_BYTES, MAX_IMAGE_PROMPTS

Scalar = Union[int, float, str]   # a family's option, raw: the family's parse checks it
# Upper bounds on the JSON itself, so that a hostile body is refused by the parser and not by a
# later loop: the spec's own limits are tighter and say which.
MAX_TEXT = 20_000
MAX_B64 = (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4


class Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=MAX_TEXT, description="text[:weight[:stop]] parts separated by '|'")
    width: int | None = None
    height: int | None = None
    seed: int | None = Field(None, description="0..2**63-1; random when omitted (the used seed is reported)")
    save_every: int | None = Field(None, description="a GIF frame every K steps")
    upscale: list[str] | None = Field(None, max_length=8,
                                      description="upscalers run in order on the finished image; [] or ['none']: "
                                                  "not even the preset's; omitted: the preset's post-steps")
    init_image: str | None = Field(None, max_length=MAX_B64, description="base64 PNG/JPEG/WebP to start from")
    image_prompts: list[str] = Field([], max_length=MAX_IMAGE_PROMPTS,
                                     description="base64 images to steer towards")
    options: dict[str, Scalar] = Field({}, max_length=32, description="the preset family's options "
                                       "(GET /api/v1/presets/{name} lists them): iterations, steps, sampler, ...")

    def fields(self) -> dict:
        """The keyword fields submit_job / submit_group take."""
        for name in self.options:
            if name in self.model_fields:
                raise SpecError(name, "is a common field: give it beside prompt, not inside options")
        upscale = None if self.upscale is None else (",".join(self.upscale) or "none")
        return dict(width=self.width, height=self.height, seed=self.seed, save_every=self.save_every,
                    upscale=upscale, init_image=_image(self.init_image, "init_image"),
                    image_prompts=[_image(p, "image_prompts") for p in self.image_prompts], **self.options)


def _image(text: str | None, field: str) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError(field, "is not base64") from None


class SubmitBody(Common):
    preset: str | None = Field(None, max_length=200, description="default: the first ready preset")


class GroupBody(Common):
    presets: list[str] = Field(min_length=1, max_length=8, description="2 to 4 distinct presets")


class VoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    left: int = Field(ge=1, le=2**63 - 1)
    right: int = Field(ge=1, le=2**63 - 1)
    choice: Literal["left", "right", "tie", "both_bad"]
