"""PyTorch CPU peer for `Scripts/bench vae`: the SDXL VAE decoder (diffusers AutoencoderKL, SDXL
config, random init) decoding one random latent to SIZE², fp32, timed after one warm-up call at 256².

  python vae_torch.py --size 1024 --threads 2
"""
import argparse
import resource
import time

import torch
from diffusers import AutoencoderKL

parser = argparse.ArgumentParser()
parser.add_argument("--size", type=int, default=1024)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

vae = AutoencoderKL(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4).eval()
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
with torch.inference_mode():
  vae.decode(torch.randn(1, 4, 32, 32))
  latent = torch.randn(1, 4, args.size // 8, args.size // 8)
  start = time.perf_counter()
  vae.decode(latent)
  seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"torch vae decode {args.size}x{args.size}: {seconds:.2f} s, peak RSS {peak} MB")
