#!/usr/bin/env python3
"""Which GGUF block-scale encoder (`convert --quantizer`) costs the trained tiny fixtures least,
measured with diffusers and many seeds rather than two renders.

For each fixture (ε and v-pred), type and quantizer, `rouwei-ckpt convert` writes a whole-model GGUF;
gguf-py dequantizes it and diffusers' own single-file converters load the result (the same path as
train_tiny.py's evaluation), so nothing of ours runs after the bytes are written. Three figures
against the unquantized fixture:
  weights   relative RMSE over every block-quantized tensor (‖x̂ − x‖ / ‖x‖, all tensors pooled)
  denoiser  relative error of one CFG denoiser evaluation (‖D̂ − D‖ / ‖D‖) over 64 fixed
            (prompt, noise, sigma) draws spread over the schedule — smooth, no chaos of a whole render
  renders   the 18 evaluation prompts × SEEDS seeds, 20 Euler steps, CFG 5: mean and median PSNR
            against the unquantized render, and how many images train_tiny's judge still passes
            (unquantized model: the first line of each block)

    .venv/bin/python Scripts/peers/quantizer_render_error.py [--seeds 4] [--types q4_0,q5_1] \
        [--rouwei .build/release/rouwei-ckpt]
(The venv of Scripts/fixtures/make_venv. Manuals/convert.md has the output of
`--seeds 3 --types q4_0,q4_K,q5_1`: about 35 minutes on two cores.)
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file as load_np, save_file as save_np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import common as C  # noqa: E402
import schedules as S  # noqa: E402
import train_tiny as TT  # noqa: E402

QUANTIZERS = ["reference", "unit-importance", "search"]
FIXTURES = {"eps": ("epsilon", False), "vpred": ("v", True)}


def dequantized_file(gguf_path, source, out_path):
  """The GGUF's tensors dequantized by gguf-py into a float32 safetensors with the source's names and
  shapes; returns the pooled relative weight RMSE of its block-quantized tensors."""
  reader = GGUFReader(gguf_path)
  tensors, err2, ref2 = {}, 0.0, 0.0
  for t in reader.tensors:
    x = source[t.name]
    if t.tensor_type.name.startswith("I"):  # integer buffers (position_ids) are stored as they are
      tensors[t.name] = np.asarray(t.data).reshape(x.shape)
      continue
    values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(x.shape)
    tensors[t.name] = values
    if t.tensor_type.name not in ("F32", "F16", "BF16"):
      d = values.astype(np.float64) - x.astype(np.float64)
      err2 += float((d * d).sum())
      ref2 += float((x.astype(np.float64) ** 2).sum())
  missing = set(source) - set(tensors)
  for name in missing:  # markers and buffers GGUF does not hold as tensors
    tensors[name] = source[name].astype(np.float32) if source[name].dtype.kind == "f" else source[name]
  save_np(tensors, out_path)
  return math.sqrt(err2 / ref2) if ref2 else 0.0


@torch.no_grad()
def denoiser_draws(models, prediction, zsnr, count=64):
  """D(x, σ) with CFG 5 for `count` fixed draws; returns a [count, 4, 8, 8] tensor."""
  text_l, text_g, unet, _ = models
  ids_l, ids_g = TT.prompt_ids()
  og = text_g(ids_g, output_hidden_states=True)
  ctx = torch.cat([text_l(ids_l, output_hidden_states=True).hidden_states[-2], og.hidden_states[-2]], -1)
  pooled = og.text_embeds
  ms = S.ModelSampling(zsnr)
  sigmas = S.normal_scheduler(ms, 20)[:-1]
  gen = torch.Generator().manual_seed(7)
  time_ids = torch.tensor([TT.SIZE_IDS])
  out = []
  for i in range(count):
    p = int(torch.randint(0, len(TT.PROMPTS) - 1, (1,), generator=gen))
    sigma = sigmas[i % len(sigmas)]
    x = torch.randn(1, 4, 8, 8, generator=gen) * float(torch.sqrt(sigma * sigma + 1))
    t = ms.timestep(sigma).float()[None]
    xin = S.calculate_input(sigma, x)
    oc = unet(xin, t, encoder_hidden_states=ctx[p:p + 1], added_cond_kwargs={"text_embeds": pooled[p:p + 1], "time_ids": time_ids}).sample
    ou = unet(xin, t, encoder_hidden_states=ctx[-1:], added_cond_kwargs={"text_embeds": pooled[-1:], "time_ids": time_ids}).sample
    dc = S.calculate_denoised(prediction, sigma, oc, x)
    du = S.calculate_denoised(prediction, sigma, ou, x)
    out.append(du + (dc - du) * 5.0)
  return torch.cat(out)


def renders(models, prediction, zsnr, seeds):
  images, passed = [], 0
  for i, (c, s, b) in enumerate(TT.EVAL):
    for k in range(seeds):
      img = TT.sample(models, TT.caption(c, s, b), prediction, zsnr, seed=1000 + i + 100 * k)
      images.append(img)
      passed += TT.judge(img, c, s, b)["ok"]
  return images, passed


def psnr(a, b):
  mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
  return 99.0 if mse == 0 else 10 * math.log10(1.0 / mse)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", type=int, default=4)
  ap.add_argument("--types", default="q4_0,q5_1,q4_1,q5_0,q4_K")
  ap.add_argument("--fixtures", default="eps,vpred")
  ap.add_argument("--rouwei", default=str(C.ROOT / ".build/release/rouwei-ckpt"))
  args = ap.parse_args()
  torch.set_num_threads(2)
  for name in args.fixtures.split(","):
    prediction, zsnr = FIXTURES[name]
    path = C.FIXTURES / "trained" / f"tiny-shapes-{name}.safetensors"
    source = load_np(str(path))
    base = C.load_single_file(path, TT.CONFIG)
    d0 = denoiser_draws(base, prediction, zsnr)
    r0, p0 = renders(base, prediction, zsnr, args.seeds)
    n = len(r0)
    print(f"\n{name}: unquantized renders pass the judge {p0}/{n}")
    print(f"{'type':6} {'quantizer':16} {'weights rel RMSE':>16} {'denoiser rel err':>16} "
          f"{'PSNR mean':>9} {'median':>7} {'judge':>7}")
    for qtype in args.types.split(","):
      for quantizer in QUANTIZERS:
        with tempfile.TemporaryDirectory() as tmp:
          gguf = os.path.join(tmp, "q.gguf")
          subprocess.run([args.rouwei, "convert", str(path), "-o", gguf, "--dtype", qtype,
                          "--quantizer", quantizer], check=True, stdout=subprocess.DEVNULL)
          deq = os.path.join(tmp, "deq.safetensors")
          w = dequantized_file(gguf, source, deq)
          models = C.load_single_file(deq, TT.CONFIG)
        d = denoiser_draws(models, prediction, zsnr)
        derr = float(torch.linalg.vector_norm(d - d0) / torch.linalg.vector_norm(d0))
        r, p = renders(models, prediction, zsnr, args.seeds)
        ps = [psnr(a, b) for a, b in zip(r, r0)]
        print(f"{qtype:6} {quantizer:16} {w:16.5f} {derr:16.5f} {np.mean(ps):9.2f} {np.median(ps):7.2f} "
              f"{p:3d}/{n}", flush=True)


if __name__ == "__main__":
  main()
