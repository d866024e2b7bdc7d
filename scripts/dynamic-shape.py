"""Relabel YOLOX's batch and image dimensions as named (dynamic) ones: N, H and W on the input,
N and the anchor count A on the output.

YOLOX's reshapes take their shapes from the tensors flowing through the graph, so nothing else
needs to change: one call can carry frames from several cameras (N), and a frame's letterbox
can be as small as its picture, rounded up to 32, instead of a square of mostly padding (H, W).
At 416 x 416 the outputs are identical to the original file's.
Usage: python3 dynamic-shape.py IN.onnx OUT.onnx   (needs the `onnx` package)
"""
import sys

import onnx

model = onnx.load(sys.argv[1])
for value, names in ((model.graph.input[0], {0: "N", 2: "H", 3: "W"}), (model.graph.output[0], {0: "N", 1: "A"})):
    for index, name in names.items():
        value.type.tensor_type.shape.dim[index].dim_param = name
onnx.checker.check_model(model)
onnx.save(model, sys.argv[2])
