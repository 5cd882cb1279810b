"""The plain Python server `npm run bench` measures densenet-serve against.

It is written the way a Python user would serve this TorchScript model, as the competition, not
a straw man: Flask run by gunicorn (`gunicorn -w 1 --threads 4 server:app`), Pillow and
torchvision transforms (Resize 256, CenterCrop 224, ToTensor, Normalize with the model card's
mean and std), `torch.jit.load` of the same file densenet-serve serves (MODEL_PATH, its card is
the .json beside it), one intra-op thread in each request thread so that the four threads run
four forwards side by side, and `torch.inference_mode()`. POST /predict takes JSON
{"image": "<base64>"} or a multipart `file` and answers the top-5 in densenet-serve's response
shape; GET /readyz answers 200 once the model is loaded (it loads at import, before gunicorn
lets the worker accept connections).
"""
import base64
import binascii
import io
import json
import os
import threading
import time

import torch
from flask import Flask, jsonify, request
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

MODEL_PATH = os.environ.get("MODEL_PATH", "models/densenet121.pt")
with open(os.path.splitext(MODEL_PATH)[0] + ".json") as f:
    card = json.load(f)

torch.set_num_threads(1)
model = torch.jit.load(MODEL_PATH, map_location="cpu").eval()
preprocess = transforms.Compose([
    transforms.Resize(card["resize"]),
    transforms.CenterCrop(card["crop"]),
    transforms.ToTensor(),
    transforms.Normalize(card["mean"], card["std"]),
])
per_thread = threading.local()
app = Flask(__name__)


def error(status, code, message):
    return jsonify(error=code.lower(), code=code, message=message), status


@app.get("/readyz")
def readyz():
    return jsonify(status="ready")


@app.post("/predict")
def predict():
    started = time.perf_counter()
    try:
        if "file" in request.files:
            data = request.files["file"].read()
        else:
            data = base64.b64decode((request.get_json(silent=True) or {}).get("image", ""), validate=True)
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except (binascii.Error, UnidentifiedImageError, ValueError) as e:
        return error(400, "INVALID_IMAGE", f"cannot read the image: {e}")
    if not getattr(per_thread, "one_thread", False):
        torch.set_num_threads(1)  # OpenMP's thread count is per thread; set once (it clears oneDNN's cache)
        per_thread.one_thread = True
    with torch.inference_mode():
        probs = torch.softmax(model(preprocess(image).unsqueeze(0))[0], dim=0)
        top = torch.topk(probs, 5)
    predictions = [
        {"class_id": i, "class_name": card["labels"][i], "confidence": round(p, 4)}
        for p, i in zip(top.values.tolist(), top.indices.tolist())
    ]
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    return jsonify(predictions=predictions, latency_ms=latency_ms, model_variant=card["variant"], batch_size=1)
