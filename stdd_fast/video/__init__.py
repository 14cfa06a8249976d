"""Video input: frame sampling, decoding, transforms."""
