"""Qwen2-VL / Qwen2.5-VL (native ViT with 2-D RoPE and windows, 2x2 merger, M-RoPE Qwen2): the family package."""
