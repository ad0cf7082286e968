"""Upscalers: networks that enlarge a finished image, run after generation as a post-step.

    srcnn   the 9-5-5 SRCNN of the yjn870/SRCNN-pytorch port (t2i/upscale/srcnn.py): one file
            per factor (x2, x3, x4), applied to the luma of a bicubic enlargement

This module is torch-free so that whoever only checks a requested factor (spec, pages, CLI) does not
import torch; the networks are in the submodules.
"""

FACTORS = (2, 3, 4)  # the factors the published SRCNN weights were trained for
