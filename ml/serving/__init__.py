"""What the service runs: photo decoding, face detection and alignment, the age model on ONNX Runtime.
Imports neither torch nor `ml.training`."""
