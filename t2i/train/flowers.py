"""`train-demo --world flowers`: the flowers world's models, in order, into checkpoints/flowers/.

    flowers-text.pt          the caption encoder (a CharCLIP trained contrastively on the world's
                             captions; 256-dim embeddings where the seed's char-CNN-RNN had 1024)
    generator.pt             GAN-INT-CLS's generator (fp16), trained on that encoder's embeddings
    srcnn_x2/x3/x4.pth       SRCNN 9-5-5 on high-resolution renders (the port's layout, fp32)
    flowers-classifier.pt    FlowersBench's classifier (petal colour, centre colour, petal count);
                             it never sees the generator
    gan/                     the GAN's training state (checkpoint with D and the optimisers, sample
                             grids and the loss plot per epoch): not committed, lets a run resume

Each part is seeded and runs on one thread, so one machine makes the same files every time.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from ..data import flowers
from ..engine.charclip import load_char_clip
from . import flowers_classifier, flowers_text, srcnn
from .gan import GanConfig
from .gan_data import captioned
from .gan import train as train_gan

# The GAN's recipe (BENCHMARKS.md, "The flowers GAN, one change at a time"): the seed's DCGAN generator
# and matching-aware discriminator with text interpolation, plus what later text-to-image GANs added:
# hinge loss and a spectrally normalised projection discriminator (D scores the text as an inner
# product with the image's features), text-conditioned affines in every layer of G (DF-GAN), the
# mode-seeking term (MSGAN) so the noise matters, TTUR learning rates with Adam (0, 0.9) as SAGAN and
# DF-GAN, and sampling from the weights' moving average. No L1 and no feature matching: both pull G
# towards the average flower of a caption. Issue 26 added TAC-GAN's auxiliary attribute classifier in D
# (its count head colour-blind: in the train split a colour pair comes with only some counts) and the
# text embedding ZCA-whitened in G and D (the encoder keeps counts in directions 1/47 of the colours'
# variance): FlowersBench colour 78.5 -> 86.5%, centre 52 -> 90.5%, count 51 -> 64.5% (BENCHMARKS.md);
# then a class "made by G" in those heads, learnt by D on G's images (aux_fake: without it a head read
# whatever G drew as some class): colour 93%, centre 92%, count 61.5%.
# ngf/ndf 16 is a quarter of the port's width, what lets GAN_STEPS fit the world's ~60-minute budget
# on two cores.
GAN = dict(ngf=16, ndf=16, batch_size=64, type="hinge", d_arch="projection", l2_coef=0.0, affine=True,
           ms_coef=1.0, ema=0.999, lr=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.9,
           aux_coef=1.0, aux_blind=True, whiten=1e-3, aux_fake=True)
GAN_STEPS = 4000
STEPS_PER_EPOCH = 50


def train_flowers(out: Path, seed: int = 0, text_steps: int | None = None, gan_steps: int | None = None,
                  srcnn_steps: int | None = None, classifier_steps: int | None = None,
                  progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    figures = {}
    text, losses = flowers_text.train(steps=text_steps or flowers_text.STEPS, seed=seed,
                                      out_path=out / "flowers-text.pt", progress=progress)
    figures.update(text_loss_first=losses[0], text_loss_last=losses[-1],
                   text_retrieval=flowers_text.retrieval_accuracy(text)["caption_to_image"])

    # The GAN learns from the encoder as the preset will load it (fp16 on disk, fp32 in use), not from
    # the unrounded one in memory: the embeddings it is served are the ones it was trained on.
    text = load_char_clip(out / "flowers-text.pt")

    @torch.no_grad()
    def encode(captions):
        return text.encode_text(list(captions)).float()

    steps = gan_steps or GAN_STEPS
    if steps % STEPS_PER_EPOCH:  # (the CLI says so before anything trains)
        raise ValueError(f"GAN steps: a multiple of {STEPS_PER_EPOCH} (whole epochs), got {steps}")
    per_epoch = STEPS_PER_EPOCH
    work = out / "gan"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: its files must not resume an older one
    # The match matrix (which captions describe which images) and the encoder serve the semantic term;
    # the hard negatives draw from each scene's own seed, so serving them moves no other draw.
    source = captioned(lambda s, n: flowers.sample(n, s), encode, flowers_text.gan_extras, flowers_text.CLASSES,
                      flowers_text.BLIND, flowers_text.hard_negatives)
    trained = train_gan(source, work, epochs=steps // per_epoch, steps_per_epoch=per_epoch,
                        config=GanConfig(cls=True, int=True, seed=seed, **GAN), progress=progress, encoder=text)
    shutil.copyfile(work / "generator.pt", out / "generator.pt.part")
    (out / "generator.pt.part").replace(out / "generator.pt")
    figures.update(gan_d_last=trained.history[-1]["d_total"], gan_g_last=trained.history[-1]["g_total"])

    for scale in srcnn.FACTORS:
        state = srcnn.train(scale, steps=srcnn_steps or srcnn.STEPS, seed=seed, progress=progress)
        srcnn.save_srcnn(state, out / f"srcnn_x{scale}.pth")
    classifier, _ = flowers_classifier.train_classifier(steps=classifier_steps or flowers_classifier.STEPS, seed=seed,
                                                        progress=progress)
    flowers_classifier.save_classifier(classifier, out / "flowers-classifier.pt")
    figures.update(classifier=flowers_classifier.held_out_accuracy(classifier), seconds=time.time() - started)
    return figures
