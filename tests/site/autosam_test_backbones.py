"""Test-size backbones: small configurations of segment-anything's and MobileSAM's own classes (random weights
only), registered beside the real ones when this module is imported, so that every path that builds SAM by
backbone name runs in seconds."""

from autosam.sam.registry import BACKBONES, Backbone, DecoderConfig, HieraConfig, TinyViTConfig, ViTConfig

DECODER = DecoderConfig(embed_dim=32, mlp_dim=64, num_heads=2, iou_head_hidden_dim=32)
# SAM 2.1 Hiera-T's configuration file made small by Hydra overrides (the official builder takes the same list):
# a 5-block Hiera of width 8 (one global block), a 32-wide neck and decoder, a one-layer memory attention.
TEST_HIERA_OVERRIDES = (
    "++model.image_encoder.trunk.embed_dim=8", "++model.image_encoder.trunk.stages=[1,2,1,1]",
    "++model.image_encoder.trunk.global_att_blocks=[2]", "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    "++model.image_encoder.neck.d_model=32", "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
    "++model.memory_attention.d_model=32", "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.d_model=32", "++model.memory_attention.layer.dim_feedforward=32",
    "++model.memory_attention.layer.self_attention.embedding_dim=32",
    "++model.memory_attention.layer.cross_attention.embedding_dim=32",
    "++model.memory_attention.layer.cross_attention.kv_in_dim=16", "++model.memory_encoder.out_dim=16",
    "++model.memory_encoder.fuser.layer.dim=32", "++model.memory_encoder.position_encoding.num_pos_feats=16",
)
TEST_BACKBONES = (
    Backbone("test_vit", ViTConfig(32, 2, 2, (1,), window_size=4), "2-block ViT with SAM's classes (tests only)",
             None, decoder=DECODER, min_image_size=64),
    Backbone("test_tiny_vit", TinyViTConfig((8, 16, 16, 320), (1, 1, 1, 1), (1, 1, 1, 4), (7, 7, 14, 7)),
             "1-block-per-stage TinyViT (tests only)", None, decoder=DECODER, min_image_size=64),
    Backbone("test_hiera", HieraConfig("configs/sam2.1/sam2.1_hiera_t.yaml", 8, 5, TEST_HIERA_OVERRIDES),
             "5-block Hiera with SAM 2.1's classes (tests only)", None, min_image_size=64),
)

BACKBONES.update({b.name: b for b in TEST_BACKBONES})
