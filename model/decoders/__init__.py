"""visionllm2.model.decoders."""
