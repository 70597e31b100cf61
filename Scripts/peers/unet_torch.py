"""PyTorch CPU peer for `Scripts/bench unet`: the SDXL UNet (diffusers UNet2DConditionModel, SDXL
base config, random init) forward at batch 2, fp32, timed after one warm-up call.

  python unet_torch.py --sizes 64,128 --threads 2
"""
import argparse
import time

import torch
from diffusers import UNet2DConditionModel

parser = argparse.ArgumentParser()
parser.add_argument("--sizes", default="64,128")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeats", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

unet = UNet2DConditionModel(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816).eval()
params = sum(p.numel() for p in unet.parameters())
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, UNet {params:,} parameters")
context = torch.randn(2, 77, 2048)
added = {"text_embeds": torch.randn(2, 1280), "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)}
t = torch.tensor([500, 500])
with torch.inference_mode():
  for size in [int(s) for s in args.sizes.split(",")]:
    x = torch.randn(2, 4, size, size)
    start = time.perf_counter()
    unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added)
    first = time.perf_counter() - start
    best = first
    for _ in range(args.repeats):
      start = time.perf_counter()
      unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added)
      best = min(best, time.perf_counter() - start)
    print(f"torch unet {size}x{size} latent, batch 2: {best:.2f} s (first {first:.2f} s)")
