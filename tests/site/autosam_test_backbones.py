"""Test-size backbones: small configurations of segment-anything's and MobileSAM's own classes (random weights
only), registered beside the real ones when this module is imported, so that every path that builds SAM by
backbone name runs in seconds."""

from autosam.sam.registry import BACKBONES, Backbone, DecoderConfig, TinyViTConfig, ViTConfig

DECODER = DecoderConfig(embed_dim=32, mlp_dim=64, num_heads=2, iou_head_hidden_dim=32)
TEST_BACKBONES = (
    Backbone("test_vit", ViTConfig(32, 2, 2, (1,), window_size=4), "2-block ViT with SAM's classes (tests only)",
             None, decoder=DECODER, min_image_size=64),
    Backbone("test_tiny_vit", TinyViTConfig((8, 16, 16, 320), (1, 1, 1, 1), (1, 1, 1, 4), (7, 7, 14, 7)),
             "1-block-per-stage TinyViT (tests only)", None, decoder=DECODER, min_image_size=64),
)

BACKBONES.update({b.name: b for b in TEST_BACKBONES})
