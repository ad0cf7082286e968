"""Weights on disk: configs/weights.yaml's entries and which a preset needs (weights), fetching one file
(download), installing a preset's files and proving they load (install), open_clip's cache (clip_cache), how
weights trained here are written (fp16) and the seed untrained presets are built under (untrained)."""
