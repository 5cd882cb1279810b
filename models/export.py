#!/usr/bin/env python3
"""Export torchvision's DenseNet-121 as a traced, frozen TorchScript file.

Driven by scripts/export-model.ts (which decides the weights source, checks idempotency and
writes the model card). This script only builds, loads weights, traces, freezes, saves and
verifies; it prints one JSON object on stdout with what the card needs. Errors go to stderr as
one "ERROR: ..." line and exit code 2 so the caller can show them as they are.

Usage:
  export.py --out PATH --weights {random,imagenet,file} [--seed N] [--weights-file F]
  export.py --out PATH.onnx --onnx-from MODEL.pt
      The same weights as ONNX (opset 13, dynamic batch), for the onnxruntime comparison in
      `npm run bench:model`; prints {"onnx": PATH, "opset": 13}.
"""
import argparse
import json
import os
import pickle
import re
import socket
import sys


def fail(msg: str) -> None:
    # One line: the caller shows the last "ERROR: " line as the message.
    print("ERROR: " + " ".join(msg.split()), file=sys.stderr)
    sys.exit(2)


# torchvision's old checkpoints name layers 'norm.1' etc.; '.' is no longer allowed in module
# names, so torchvision's own _load_state_dict remaps them. Do the same for local files (and
# also num_batches_tracked, which checkpoints saved by newer torch with old names carry).
OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def remap_state_dict(sd):
    out = {}
    for key, value in sd.items():
        if key.startswith("module."):  # saved from DataParallel / DDP
            key = key[len("module."):]
        m = OLD_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


# What torch's weights-only unpickler says when a checkpoint holds objects other than tensors,
# dicts, lists and numbers (a pickled nn.Module, or anything whose unpickling would run code).
PICKLED_OBJECT = re.compile(r"(?:Trying to instantiate unsupported class|Unsupported class|Can only build [^,]*, but got) ?(\S*)")


def load_weights_file(torch, model, path: str) -> None:
    if not os.path.isfile(path):
        fail(f"weights file not found: {path}")
    try:
        # weights_only: tensors and plain containers only. A full pickle would run whatever code
        # the file names while loading (torch.load's default in 1.13).
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        found = PICKLED_OBJECT.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if found:
            fail(f"refusing weights file {path}: it holds a pickled Python object ({found.group(1) or 'not a tensor'}), "
                 "and loading it would run code from the file. Only plain state_dicts are accepted: save one with "
                 "torch.save(model.state_dict(), path)")
        fail(f"cannot read weights file {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
             " (expected a PyTorch checkpoint saved with torch.save(model.state_dict(), ...))")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        fail(f"weights file {path} does not hold a state_dict (a dict of tensor names to tensors)")
    try:
        model.load_state_dict(remap_state_dict(obj))
    except RuntimeError as e:
        fail(f"weights file {path} does not fit densenet121: {str(e).strip()[:800]}")


def export_onnx(torch, src: str, out: str) -> None:
    """TorchScript file -> ONNX opset 13 with a dynamic batch dimension."""
    if not os.path.isfile(src):
        fail(f"model file not found: {src}")
    model = torch.jit.load(src, map_location="cpu").eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1234))
    tmp = out + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, (x,), tmp, opset_version=13, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    os.replace(tmp, out)
    # The caller compares onnxruntime's logits with the addon's on the same input.
    print(json.dumps({"onnx": out, "opset": 13}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--onnx-from")
    ap.add_argument("--weights", choices=["random", "imagenet", "file"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights-file")
    ap.add_argument("--download-timeout", type=float, default=60.0)
    args = ap.parse_args()

    import torch
    if args.onnx_from:
        export_onnx(torch, args.onnx_from, args.out)
        return
    if not args.weights:
        fail("--weights is required (random, imagenet or file)")
    import torchvision
    from torchvision.models import DenseNet121_Weights, densenet121

    meta_weights = DenseNet121_Weights.IMAGENET1K_V1
    torch.manual_seed(args.seed)
    if args.weights == "imagenet":
        # urllib has no timeout by default: an unreachable host would hang the export.
        socket.setdefaulttimeout(args.download_timeout)
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(meta_weights.url))
        if not os.path.isfile(cached):
            try:
                os.makedirs(os.path.dirname(cached), exist_ok=True)
                # The file name carries the first hex digits of its sha256 (torch hub's convention).
                prefix = re.search(r"-([a-f0-9]+)\.", os.path.basename(cached))
                torch.hub.download_url_to_file(meta_weights.url, cached, hash_prefix=prefix.group(1) if prefix else None, progress=False)
            except Exception as e:
                fail(f"could not download the ImageNet weights ({meta_weights.url}): {type(e).__name__}: {e}. "
                     "Without internet use --weights random (seeded, untrained) or --weights-file path.pth "
                     f"(or put the file into {os.path.dirname(cached)}/).")
        # Loaded like --weights-file (weights only), not through torchvision's loader, which unpickles
        # anything: a file in the cache is no more trusted than one given on the command line.
        model = densenet121(weights=None)
        load_weights_file(torch, model, cached)
    else:
        model = densenet121(weights=None)
        if args.weights == "file":
            if not args.weights_file:
                fail("--weights file needs --weights-file PATH")
            load_weights_file(torch, model, args.weights_file)
    model.eval()

    example = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1234))
    check2 = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(4321))
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        frozen = torch.jit.freeze(traced.eval())
        tmp = args.out + ".tmp"
        torch.jit.save(frozen, tmp)
        # Reload and prove the saved file works, including N > 1 (batch dimension not baked in).
        loaded = torch.jit.load(tmp, map_location="cpu")
        loaded.eval()
        ref1, ref2 = model(example), model(check2)
        out1, out2 = loaded(example), loaded(check2)
        if tuple(out2.shape) != (2, 1000):
            os.remove(tmp)
            fail(f"reloaded model gave shape {tuple(out2.shape)} for a batch of 2, expected (2, 1000)")
        diff = max((out1 - ref1).abs().max().item(), (out2 - ref2).abs().max().item())
        if diff > 1e-3:
            os.remove(tmp)
            fail(f"traced+frozen model differs from eager by {diff:g}")
    os.replace(tmp, args.out)

    t = meta_weights.transforms()  # torchvision's own preprocessing for these weights
    print(json.dumps({
        "resize": int(t.resize_size[0]),
        "crop": int(t.crop_size[0]),
        "mean": [float(x) for x in t.mean],
        "std": [float(x) for x in t.std],
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "labels": list(meta_weights.meta["categories"]),
        "max_abs_diff_vs_eager": diff,
        "batch2_shape": list(out2.shape),
    }))


if __name__ == "__main__":
    main()
