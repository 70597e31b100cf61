#!/usr/bin/env python3
"""Loads our GGUF files the way ComfyUI-GGUF's `gguf_sd_loader` does, and checks every value.

ComfyUI-GGUF (city96, loader.py at 795e4515) needs ComfyUI and torch to import; this script
re-states its loading rules with gguf-py alone and fails where the loader would:
- `general.architecture` must be a STRING (else TypeError); missing (or "pig"/"cow") means
  "compatibility mode" with the architecture re-detected from names; otherwise it must be one of
  the image architectures it knows (else "Unexpected architecture type").
- when any tensor name starts with `model.diffusion_model.`, only those are kept, prefix stripped.
- shapes: `comfy.gguf.orig_shape.<name>` (ARRAY of INT32) or the ggml dims reversed; in
  compatibility mode SDXL `proj_in`/`proj_out` lose trailing 1-dims.
- its dequantizers cover BF16, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, Q6_K, Q5_K, Q4_K, Q3_K, Q2_K, IQ4_NL,
  IQ4_XS (F32/F16 are used as they are); any other type fails at dequantization.
Then every UNet tensor of SOURCE must be present with its shape, and the dequantized values (gguf-py's
dequantizers, which ComfyUI-GGUF's torch ones transcribe) are compared with SOURCE: the RMSE relative
to the tensor's RMS value is printed per type.

    /work/.venv/bin/python Scripts/peers/check_comfyui_gguf.py SOURCE.safetensors OURS.gguf [...]
Exit 0 when every file loads with every key and shape; 1 otherwise.
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFReader, GGUFValueType
from gguf.quants import dequantize
from safetensors.numpy import load_file

IMG_ARCH = {"flux", "sd1", "sdxl", "sd3", "aura", "hidream", "cosmos", "ltxv", "hyvid", "wan", "lumina2", "qwen_image"}
DEQUANT = {T.BF16, T.Q8_0, T.Q5_1, T.Q5_0, T.Q4_1, T.Q4_0, T.Q6_K, T.Q5_K, T.Q4_K, T.Q3_K, T.Q2_K, T.IQ4_NL, T.IQ4_XS}
PREFIX = "model.diffusion_model."


def load(path):
    reader = GGUFReader(path)
    names = [t.name for t in reader.tensors]
    has_prefix = any(n.startswith(PREFIX) for n in names)
    field = reader.get_field("general.architecture")
    if field is None:
        arch, compat = None, "sd.cpp"
    else:
        if len(field.types) != 1 or field.types[0] != GGUFValueType.STRING:
            raise TypeError(f"Bad type for GGUF general.architecture key: {field.types!r}")
        arch = str(field.parts[field.data[-1]], encoding="utf-8")
        compat = arch if arch in ("pig", "cow") else None
    if compat is None and arch not in IMG_ARCH:
        raise ValueError(f"Unexpected architecture type in GGUF file: {arch!r}")
    state = {}
    for t in reader.tensors:
        key = t.name
        if has_prefix:
            if not key.startswith(PREFIX):
                continue
            key = key[len(PREFIX):]
        orig = reader.get_field(f"comfy.gguf.orig_shape.{t.name}")
        if orig is not None:
            if len(orig.types) != 2 or orig.types[0] != GGUFValueType.ARRAY or orig.types[1] != GGUFValueType.INT32:
                raise TypeError(f"Bad original shape metadata for {t.name}")
            shape = tuple(int(orig.parts[i][0]) for i in orig.data)
        else:
            shape = tuple(int(v) for v in reversed(t.shape.tolist()))
            if compat == "sd.cpp" and key.endswith((".proj_in.weight", ".proj_out.weight")):
                while len(shape) > 2 and shape[-1] == 1:
                    shape = shape[:-1]
        if t.tensor_type in (T.F32, T.F16):
            values = np.asarray(t.data).astype(np.float32).reshape(shape)
        elif t.tensor_type in DEQUANT:
            values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        elif t.tensor_type in (T.I64, T.I32):
            values = np.asarray(t.data).reshape(shape)
        else:
            raise ValueError(f"{t.name}: ComfyUI-GGUF has no dequantizer for {t.tensor_type.name}")
        state[key] = (values, t.tensor_type.name)
    return state, arch, compat


def main():
    source = load_file(sys.argv[1])
    unet = {k[len(PREFIX):]: v for k, v in source.items() if k.startswith(PREFIX)}
    ok = True
    for path in sys.argv[2:]:
        try:
            state, arch, compat = load(path)
        except Exception as e:  # what the loader would raise
            print(f"{path}: FAILS to load: {e}")
            ok = False
            continue
        missing = [k for k in unet if k not in state]
        wrong = [k for k in unet if k in state and tuple(state[k][0].shape) != tuple(unet[k].shape)]
        errors = {}
        for k, v in unet.items():
            if k in state and k not in wrong and v.dtype.kind == "f":
                ref = v.astype(np.float64)
                got = state[k][0].astype(np.float64)
                rms = float(np.sqrt(np.mean(ref ** 2))) or 1.0
                errors.setdefault(state[k][1], []).append(float(np.sqrt(np.mean((got - ref) ** 2))) / rms)
        mode = f"compatibility mode {compat!r}" if compat else "native"
        summary = ", ".join(f"{t} {len(e)} (worst rel. RMSE {max(e):.4f})" for t, e in sorted(errors.items()))
        print(f"{path}: arch {arch!r} ({mode}), {len(state)} tensors, {len(unet) - len(missing) - len(wrong)}/{len(unet)} UNet keys "
              f"with their shapes; {summary}")
        if missing or wrong:
            print(f"  missing {missing[:5]} wrong shape {wrong[:5]}")
            ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
