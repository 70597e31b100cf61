#!/usr/bin/env python3
"""Per-tensor error of our GGUF against ggml's own quantizers on the same values.

For every block-quantized tensor of OURS.gguf, the source values (SOURCE.safetensors) are
quantized by ggml itself, built from a ggml checkout as in Scripts/fixtures/make_kquant_goldens.py,
in the same type, two ways:
  reference        quantize_row_<type>_ref (gguf-py's bytes; llama-quantize without an imatrix)
  unit-importance  quantize_<type>(…, importance of ones) (what stable-diffusion.cpp's converter
                   calls: src/model_loader.cpp convert_tensor)
and dequantized by gguf-py; ours is dequantized by gguf-py too. With --sdcpp SDCPP.gguf (the same
source converted by a built stable-diffusion.cpp: `sd-cli -M convert -m SOURCE -o SDCPP.gguf --type T`),
each tensor that file holds in the same type is a third peer, "sd.cpp", read from its own bytes.
Prints, per type, how many tensors have ours ≤ each peer (RMSE) and the mean and worst ratio
ours/peer; exit 1 if any tensor is worse.

    /work/.venv/bin/python Scripts/peers/compare_ggml_quantizers.py --ggml DIR SOURCE.safetensors OURS.gguf
    … --ggml DIR --sdcpp SDCPP.gguf SOURCE.safetensors OURS.gguf
    /work/.venv/bin/python Scripts/peers/compare_ggml_quantizers.py --make-random OUT.safetensors
--make-random writes real SDXL shapes and names (a cross-attention block at each width, ResNet
1×1/linear layers, the embeddings) with random trained-like weights (Laplace, per-row scales), fp16.
"""
import argparse
import ctypes
import os
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import make_kquant_goldens as goldens  # noqa: E402

SIZES = {T.Q4_0: 18, T.Q4_1: 20, T.Q5_0: 22, T.Q5_1: 24, T.Q8_0: 34, T.Q2_K: 84, T.Q3_K: 110, T.Q4_K: 144, T.Q5_K: 176, T.Q6_K: 210}


def make_random(path):
    rng = np.random.default_rng(1)
    p = "model.diffusion_model."
    shapes = {p + "label_emb.0.0.weight": (1280, 2816), p + "time_embed.0.weight": (1280, 320)}
    for block, width in (("input_blocks.4.1", 640), ("input_blocks.7.1", 1280)):
        t = f"{p}{block}.transformer_blocks.0."
        shapes.update({
            f"{p}{block}.proj_in.weight": (width, width), f"{p}{block}.proj_out.weight": (width, width),
            t + "attn1.to_q.weight": (width, width), t + "attn1.to_k.weight": (width, width),
            t + "attn1.to_v.weight": (width, width), t + "attn1.to_out.0.weight": (width, width),
            t + "attn2.to_q.weight": (width, width), t + "attn2.to_k.weight": (width, 2048),
            t + "attn2.to_v.weight": (width, 2048), t + "attn2.to_out.0.weight": (width, width),
            t + "ff.net.0.proj.weight": (width * 8, width), t + "ff.net.2.weight": (width, width * 4),
        })
    shapes[p + "input_blocks.1.0.emb_layers.1.weight"] = (320, 1280)
    shapes[p + "input_blocks.4.0.skip_connection.weight"] = (640, 320, 1, 1)
    tensors = {}
    for name, shape in shapes.items():
        rows = shape[0]
        scale = (0.02 * np.exp(rng.normal(0, 0.3, (rows,) + (1,) * (len(shape) - 1)))).astype(np.float32)
        tensors[name] = (rng.laplace(0, 1, shape).astype(np.float32) * scale).astype(np.float16)
    save_file(tensors, path)
    print(f"wrote {path}: {len(tensors)} tensors, {sum(v.size for v in tensors.values()) / 1e6:.1f} M values")


def ggml_quantize(lib, qtype, x, unit):
    name = qtype.name.lower().replace("_k", "_K")
    size = SIZES[qtype]
    rows, n = x.shape
    block = 256 if qtype.name.endswith("_K") else 32
    if unit and qtype != T.Q8_0:
        return goldens.quantize_unit(lib, name, size, block, x)
    out = np.zeros(rows * n // block * size, dtype=np.uint8)
    fn = getattr(lib, f"quantize_row_{name}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    flat = np.ascontiguousarray(x, dtype=np.float32)
    fn(flat.ctypes.data, out.ctypes.data, flat.size)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ggml")
    parser.add_argument("--make-random")
    parser.add_argument("--sdcpp", help="the same source converted by stable-diffusion.cpp")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.make_random:
        return make_random(args.make_random)
    source = load_file(args.files[0])
    reader = GGUFReader(args.files[1])
    sdcpp = {t.name: t for t in GGUFReader(args.sdcpp).tensors} if args.sdcpp else {}
    peers = ["reference", "unit-importance"] + (["sd.cpp"] if args.sdcpp else [])
    stats = {}
    worse = 0
    with tempfile.TemporaryDirectory() as tmp:
        lib = goldens.build(args.ggml, ["-O2", "-ffp-contract=off"], os.path.join(tmp, "ggml.so"))
        for t in reader.tensors:
            if t.tensor_type not in SIZES:
                continue
            x = source[t.name].astype(np.float32)
            x = x.reshape(-1, x.shape[-1])
            ref = x.astype(np.float64)
            ours = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(ref.shape)
            rmse = {"ours": float(np.sqrt(np.mean((ours - ref) ** 2)))}
            for peer, unit in (("reference", False), ("unit-importance", True)):
                q = ggml_quantize(lib, t.tensor_type, x, unit)
                got = dequantize(q.reshape(x.shape[0], -1), t.tensor_type).astype(np.float64).reshape(ref.shape)
                rmse[peer] = float(np.sqrt(np.mean((got - ref) ** 2)))
            theirs = sdcpp.get(t.name)
            if theirs is not None and theirs.tensor_type == t.tensor_type:
                got = dequantize(theirs.data, theirs.tensor_type).astype(np.float64).reshape(ref.shape)
                rmse["sd.cpp"] = float(np.sqrt(np.mean((got - ref) ** 2)))
            elif theirs is not None:
                print(f"  sd.cpp wrote {t.name} as {theirs.tensor_type.name}, ours {t.tensor_type.name}: not compared")
            s = stats.setdefault(t.tensor_type.name, {"n": 0, **{peer: [] for peer in peers}})
            s["n"] += 1
            for peer in peers:
                if peer not in rmse:
                    continue
                ratio = rmse["ours"] / rmse[peer] if rmse[peer] > 0 else 1.0
                s[peer].append(ratio)
                if rmse["ours"] > rmse[peer]:
                    worse += 1
                    print(f"  worse than {peer}: {t.name} {rmse}")
    for name, s in sorted(stats.items()):
        parts = []
        for peer in peers:
            r = np.array(s[peer])
            if not r.size:
                parts.append(f"vs {peer}: no tensor of this type")
                continue
            label = peer if peer == "sd.cpp" else "ggml " + peer
            parts.append(f"vs {label}: ours <= peer on {(r <= 1).sum()}/{r.size}, RMSE ratio mean {r.mean():.4f} worst {r.max():.4f}")
        print(f"{name}: {s['n']} tensors; " + "; ".join(parts))
    sys.exit(1 if worse else 0)


if __name__ == "__main__":
    main()
