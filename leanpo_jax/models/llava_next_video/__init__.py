"""LLaVA-NeXT-Video (CLIP ViT-L/14-336 + 2x2 pooling + projector + Vicuna-7B): the family package."""
