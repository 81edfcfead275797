"""OGBench's evaluation protocol, for torch policies and for bundles run by ONNX Runtime."""
