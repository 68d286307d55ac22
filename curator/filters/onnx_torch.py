"""An ONNX graph run by torch on the clip's GPU: the small operator set of PaddleOCR's DBNet text
detector (the `rapidocr-onnxruntime` wheel's det model), so text detection runs where the decoded
frames already are, batched over a clip's OCR frames, on the worker's CUDA stream.

ONNX Runtime stays the CPU path (curator/filters/ocr.py); its CUDA provider needs onnxruntime-gpu,
which is not installed beside the project's torch. onnx2torch would do this conversion generally
but requires torchvision, which the project does not install (it pins a torch of its own). A
graph holding any operator outside OPS is refused when loaded, naming it, so a changed model fails
before any clip rather than computing something else.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _ops() -> dict[str, Callable]:
    import torch
    import torch.nn.functional as F

    def conv(node, x, w, b=None):
        a = node["attrs"]
        pads = a.get("pads", [0, 0, 0, 0])
        assert pads[:2] == pads[2:], "asymmetric padding"
        return F.conv2d(x, w, b, stride=a.get("strides", 1), padding=pads[:2], dilation=a.get("dilations", 1),
                        groups=a.get("group", 1))

    def conv_transpose(node, x, w, b=None):
        a = node["attrs"]
        pads = a.get("pads", [0, 0, 0, 0])
        return F.conv_transpose2d(x, w, b, stride=a.get("strides", 1), padding=pads[:2],
                                  dilation=a.get("dilations", 1), groups=a.get("group", 1))

    def batch_norm(node, x, scale, bias, mean, var):
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=node["attrs"].get("epsilon", 1e-5))

    def hard_sigmoid(node, x):
        a = node["attrs"]
        return torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)

    def resize(node, x, _roi=None, scales=None, sizes=None):
        a = node["attrs"]
        assert a.get("mode", b"nearest") == b"nearest" and a.get("coordinate_transformation_mode") == b"asymmetric"
        size = [int(s) for s in sizes[2:]] if sizes is not None and sizes.numel() else None
        factor = None if size else [float(s) for s in scales[2:]]
        return F.interpolate(x, size=size, scale_factor=factor, mode="nearest")

    return {
        "Add": lambda node, a, b: a + b,
        "Mul": lambda node, a, b: a * b,
        "Div": lambda node, a, b: a / b,
        "Clip": lambda node, x, lo=None, hi=None: torch.clamp(x, lo, hi),
        "Relu": lambda node, x: torch.relu(x),
        "Sigmoid": lambda node, x: torch.sigmoid(x),
        "HardSigmoid": hard_sigmoid,
        "GlobalAveragePool": lambda node, x: x.mean(dim=(2, 3), keepdim=True),
        "Concat": lambda node, *xs: torch.cat(xs, dim=node["attrs"]["axis"]),
        "Conv": conv,
        "ConvTranspose": conv_transpose,
        "BatchNormalization": batch_norm,
        "Resize": resize,
    }


class TorchGraph:
    """A single-input, single-output ONNX graph of OPS' operators as torch calls on `device`."""

    def __init__(self, path: str, device: str):
        import onnx
        import torch
        from onnx import numpy_helper

        model = onnx.load(path)
        graph = model.graph
        self.ops = _ops()
        self.device = torch.device(device)
        self.constants: dict[str, torch.Tensor] = {
            t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(self.device) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                value = numpy_helper.to_array(node.attribute[0].t)
                self.constants[node.output[0]] = torch.from_numpy(np.array(value)).to(self.device)
                continue
            if node.op_type not in self.ops:
                raise ValueError(f"{path}: operator {node.op_type} is not one this runner knows ({sorted(self.ops)})")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            self.nodes.append({"op": node.op_type, "inputs": list(node.input), "output": node.output[0],
                               "attrs": attrs})
        self.input, self.output = graph.input[0].name, graph.output[0].name
        # Each node drops the values it reads last, so a call holds the live activations only, not
        # every intermediate of the graph (~240 MiB a 512 x 288 frame).
        last_reader = {name: i for i, node in enumerate(self.nodes) for name in node["inputs"] if name}
        for i, node in enumerate(self.nodes):
            node["last_read"] = [name for name in dict.fromkeys(node["inputs"])
                                 if name and last_reader[name] == i and name not in self.constants
                                 and name != self.output]

    def __call__(self, x):
        import torch

        values = dict(self.constants)
        values[self.input] = x
        with torch.inference_mode():
            for node in self.nodes:
                args = [values[name] if name else None for name in node["inputs"]]
                values[node["output"]] = self.ops[node["op"]](node, *args)
                for name in node["last_read"]:
                    del values[name]
        return values[self.output]
