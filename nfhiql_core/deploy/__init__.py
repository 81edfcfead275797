"""What a robot runs: policy bundles and the ONNX Runtime policy runtime (numpy + onnxruntime, no torch)."""
