"""A small ViT whose real (tiny) steps the planner's closed forms are checked against (tests/plan/)."""

SMALL = dict(img_size=64, patch_size=8, embed_dim=96, depth=3, num_heads=3, num_classes=10)
