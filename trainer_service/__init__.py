"""The trainer: data loading, BPR training in TensorFlow, evaluation, publishing, and its gRPC service."""
