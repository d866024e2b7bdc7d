"""Relabel dim 0 of a model's first input and output as `N`, so it accepts any batch size.

Used for YOLOX, whose reshapes take their shapes from the graph, so nothing else needs to change.
Usage: python3 dynamic-batch.py IN.onnx OUT.onnx   (needs the `onnx` package)
"""
import sys

import onnx

model = onnx.load(sys.argv[1])
for value in (model.graph.input[0], model.graph.output[0]):
    value.type.tensor_type.shape.dim[0].dim_param = "N"
onnx.checker.check_model(model)
onnx.save(model, sys.argv[2])
