"""Training side: the torch networks, UTKFace data and splits, training, evaluation, ensembles and the
ONNX export. Needs the `train` extra (torch); the service never imports it."""
