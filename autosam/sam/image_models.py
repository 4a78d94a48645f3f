"""The two SAM families behind one image-mode interface: segment-anything's ``Sam`` (SAM, MobileSAM, MedSAM) and
SAM 2.1's ``SAM2Base`` (Hiera image encoders) used on one frame, without its memory.

Each class subclasses the family's own model class and adds only what ``SamSegmenter`` calls, so parameters
and state-dict keys stay the official ones and official checkpoints load unchanged:

* ``embed(x)`` -> the image features the mask decoder reads, a tuple: the stride-16 embedding first, then (SAM 2)
  the stride-4 and stride-8 features its decoder adds while upscaling. The embedding cache stores this tuple.
* ``decode_features(features, sparse, dense)`` -> (B, tokens, S/4, S/4) mask logits, one decoder call per batch.
* ``embed_prompts(points, boxes)`` -> sparse and dense prompt embeddings, as the family's own predictor makes them.
* ``input_size``, ``prompt_encoder``, ``mask_decoder``; ``ENCODER_SIDE``: the parameter names that belong to the
  image side (they train only in encoder + decoder set-ups); ``UNUSED``: the parameters the network never uses
  (always frozen).
"""

from __future__ import annotations

import torch
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam2_base import SAM2Base
from segment_anything.modeling import Sam
from torch import nn

Features = tuple[torch.Tensor, ...]


class SamImage(Sam):
    """segment-anything's ``Sam`` (and MobileSAM's, which shares its layout)."""

    ENCODER_SIDE = ("image_encoder.",)
    UNUSED = ("prompt_encoder.", "mask_decoder.iou_prediction_head.", "image_encoder.head.",
              "image_encoder.norm_head.")  # the last two: TinyViT's ImageNet classifier

    @property
    def input_size(self) -> int:
        return self.image_encoder.img_size

    def embed(self, x: torch.Tensor) -> Features:
        return (self.image_encoder(x),)

    def embed_prompts(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None):
        return self.prompt_encoder(points=points, boxes=boxes, masks=None)

    def decode_features(self, features: Features, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        # The prompt tokens (batch 1 when promptless) broadcast against the image batch in the decoder's matmuls.
        return self.mask_decoder.predict_masks(image_embeddings=features[0], image_pe=self.prompt_encoder.get_dense_pe(),
                                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)[0]


def image_mode(sam: nn.Module) -> nn.Module:
    """``sam`` with the methods above: a stock SAM (segment-anything's or MobileSAM's registry builds one) gets
    ``SamImage``'s, in place; its parameters and keys stay as they are."""
    if not hasattr(sam, "embed"):
        if not all(hasattr(sam, part) for part in ("image_encoder", "prompt_encoder", "mask_decoder")):
            raise TypeError(f"{type(sam).__name__} is not a SAM model")
        sam.__class__ = SamImage
    return sam


class Sam2Image(SAM2Base):
    """SAM 2.1 on single images: Hiera + FPN neck -> (no-memory embedding) -> SAM 2's prompt encoder and mask
    decoder, as ``SAM2ImagePredictor`` runs it. The memory attention, memory encoder and object-pointer heads are
    built (official checkpoints hold them, export keeps them) but never run.

    ``num_classes``: mask tokens of the decoder (the official model has 4: ``num_multimask_outputs=3``).
    """

    ENCODER_SIDE = ("image_encoder.", "sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.", "no_mem_embed")
    # (the object-score token is used: it takes part in every decoder call; only its head is not)
    UNUSED = ("sam_prompt_encoder.", "sam_mask_decoder.iou_prediction_head.", "sam_mask_decoder.pred_obj_score_head.",
              "memory_attention.", "memory_encoder.", "mask_downsample.",
              "obj_ptr_proj.", "obj_ptr_tpos_proj.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr",
              "no_obj_embed_spatial")

    def __init__(self, *args, num_classes: int = 4, **kwargs) -> None:
        self._num_classes = num_classes
        super().__init__(*args, **kwargs)

    def _build_sam_heads(self) -> None:
        super()._build_sam_heads()
        if self._num_classes != self.sam_mask_decoder.num_mask_tokens:
            # SAM2Base's own decoder arguments, with one mask token per class
            self.sam_mask_decoder = MaskDecoder(
                num_multimask_outputs=self._num_classes - 1, transformer=self.sam_mask_decoder.transformer,
                transformer_dim=self.sam_prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=256,
                use_high_res_features=self.use_high_res_features_in_sam,
                iou_prediction_use_sigmoid=self.iou_prediction_use_sigmoid, pred_obj_scores=self.pred_obj_scores,
                pred_obj_scores_mlp=self.pred_obj_scores_mlp,
                use_multimask_token_for_obj_ptr=self.use_multimask_token_for_obj_ptr,
                **(self.sam_mask_decoder_extra_args or {}))

    @property
    def input_size(self) -> int:
        return self.image_size

    @property
    def prompt_encoder(self) -> nn.Module:
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        return self.sam_mask_decoder

    def embed(self, x: torch.Tensor) -> Features:
        """``forward_image`` (Hiera, FPN neck, the decoder's projections of the two finest levels) and, as in image
        mode, the no-memory embedding added to the coarsest level."""
        fpn = self.forward_image(x)["backbone_fpn"][-self.num_feature_levels:]
        embedding = fpn[-1] + self.no_mem_embed.view(1, -1, 1, 1) if self.directly_add_no_mem_embed else fpn[-1]
        return (embedding, *fpn[:-1])

    def embed_prompts(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None):
        """As ``SAM2ImagePredictor._predict``: a box enters as its two corners, points labelled 2 and 3, ahead of
        the clicks, with no box input (so the prompt encoder always adds its padding point)."""
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(corners.shape[0], 1)
            points = (corners, labels) if points is None else (torch.cat([corners, points[0]], 1),
                                                               torch.cat([labels, points[1]], 1))
        return self.sam_prompt_encoder(points=points, boxes=None, masks=None)

    def decode_features(self, features: Features, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embedding, *high_res = features
        batch = embedding.shape[0]
        return self.sam_mask_decoder.predict_masks(
            image_embeddings=embedding, image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse.expand(batch, -1, -1), dense_prompt_embeddings=dense.expand(batch, -1, -1, -1),
            repeat_image=False, high_res_features=high_res)[0]
