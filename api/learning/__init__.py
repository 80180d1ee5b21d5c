"""The age model's life: the registry of versions, the hot swap, retraining on consented submissions
and their export as training data."""
