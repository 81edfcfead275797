"""What a robot runs: policy bundles and the ONNX Runtime policy runtime (numpy + onnxruntime, no torch)."""

# ONNX Runtime execution providers tried by default, in order (CPU is the fallback).
DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
