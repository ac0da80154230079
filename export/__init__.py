"""alignlearn.export: ONNX export, TensorRT engine build and the embedded runtime."""
