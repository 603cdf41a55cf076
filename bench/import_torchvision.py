"""PyTorch via ONNX (issue 18): torchvision's resnet18, mobilenet_v3_small and squeezenet1_1 with
random weights (torchvision's initialization, BatchNorm's statistics and affine drawn at random), exported by torch.onnx.export, imported by `cnncompile import --weights`, and
compared with PyTorch's own outputs on real images (MNIST digits, resized to 224x224, grey
repeated to RGB, ImageNet-normalized): max |diff| of the logits must be <= 1e-4.

  pip install 'cnncompile[bench]'   # torch 2.13 (CPU) and torchvision 0.28
  python bench/import_torchvision.py [NAME ...]

torchvision's compiled operators (nms, roi_align) do not load against this torch build; the
model definitions need none of them, so the module that registers their meta kernels is
replaced by an empty one before torchvision is imported. Results are printed and written to
bench/results/import_torchvision.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from import_zoo import save_results, timed_import  # noqa: E402

NETWORKS = ("resnet18", "mobilenet_v3_small", "squeezenet1_1")
MEAN, STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")


def real_images(count: int = 16) -> np.ndarray:
    """(count, 224, 224, 3) ImageNet-normalized MNIST digits, channels last."""
    from cnncompile.data.datasets import load_dataset

    digits = load_dataset("mnist", data_dir=Path(os.environ.get("CNNCOMPILE_DATA_DIR", ROOT.parent / "shared" / "data"))
                          ).x_test[:count].astype("float32") / 255
    big = digits.repeat(8, axis=1).repeat(8, axis=2)  # 28 * 8 = 224, nearest neighbour
    return ((np.repeat(big, 3, axis=3) - MEAN) / STD).astype("float32")


def main() -> None:
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import torch
    import torchvision

    warnings.simplefilter("ignore")
    images = real_images()
    results = {}
    for name in sys.argv[1:] or NETWORKS:
        torch.manual_seed(0)
        net = getattr(torchvision.models, name)().eval()
        with torch.no_grad():  # BatchNorm's fresh statistics (0 and 1) and affine (1, 0) would test little
            for module in net.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5), module.bias.normal_(0, 0.1)
                    module.running_mean.normal_(0, 0.1), module.running_var.uniform_(0.5, 1.5)
        with torch.no_grad():
            expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            # The TorchScript exporter (dynamo=False): the new one needs onnxscript. Without
            # constant folding it keeps BatchNormalization (else folded into the convolutions),
            # so the spec has PyTorch's layers and parameter count.
            torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), folder / f"{name}.onnx", dynamo=False,
                              do_constant_folding=False,
                              opset_version=17, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
            result, seconds, compiled, model = timed_import(folder / f"{name}.onnx")
            got = model.predict(images, verbose=0)
            text = result.text
        # Parameters plus BatchNorm's running statistics (Keras counts both; not the step counter).
        torch_params = sum(p.numel() for p in net.parameters()) + sum(
            b.numel() for n, b in net.named_buffers() if not n.endswith("num_batches_tracked"))
        results[name] = {
            "max_abs_diff_vs_pytorch": float(np.max(np.abs(got - expected))),
            "max_abs_output": float(np.max(np.abs(expected))),  # the scale the difference is measured on
            "argmax_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
            "pytorch_params": torch_params, "spec_params": compiled.info.total_params,
            "layers": result.layers, "lines": text.count("\n"), "blocks": result.blocks,
            "import_seconds": round(seconds, 1),
        }
        print(name, json.dumps(results[name]), flush=True)
    save_results("import_torchvision", results)


if __name__ == "__main__":
    main()
