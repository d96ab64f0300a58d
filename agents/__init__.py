"""visionllm2.agents."""
