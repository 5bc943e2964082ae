"""LLaVA-OneVision / LLaVA-Video (SigLIP + mlp2x_gelu projector + pooling + Qwen2): `FAMILY`."""
