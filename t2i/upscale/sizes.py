"""The upscalers' kinds, factors and tiles: a leaf the package and its networks both import."""

KINDS = ("esrgan", "srcnn")
FACTORS = (2, 3, 4)   # the factors the published SRCNN weights were trained for

# Networks run on tiles (t2i/upscale/tiles.py) so that memory stays bounded whatever the image's
# size: the side of the largest piece, in pixels of the image the network sees (ESRGAN: the input;
# SRCNN: its bicubic enlargement), and the peak activations per such pixel, measured on the CPU
# (peak RSS, fp32, inference): a 64-feature 23-block x4 RRDBNet (Real-ESRGAN x4plus) 13 KB at
# 256x256 and 16 KB at 128x128, so a 256 tile needs about 1 GB; SRCNN 0.7-0.8 KB, about 0.2 GB a
# 512 tile. t2i/service/memory.py counts them in a job's estimate.
TILE = {"esrgan": 256, "srcnn": 512}
TILE_BYTES_PER_PIXEL = {"esrgan": 16_000, "srcnn": 800}
