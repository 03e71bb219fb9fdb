"""Random-weight model files in the official formats, for tests and bench/metrics.py (no downloads).

Test helpers, not part of the metrics package (issue 25); bench scripts put tests/ on sys.path.

- `make_random_inception(path)`: torch-fidelity's FeatureExtractorInceptionV3 state dict
  with He-initialised convolutions (the default init collapses features to ~1e-8), saved
  under the name torch-fidelity expects;
- `make_tiny_clip(path)`: a small OpenAI-format CLIP state dict (ViT, quick-GELU, 77-token
  context) that `open_clip.load_openai_model` reads like the released ViT-B/16 file.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch

from metrics.extractors import INCEPTION_FILENAME
from torchvision_compat import ensure_torchvision


def make_random_inception(folder, seed: int = 0) -> Path:
    ensure_torchvision()  # before torch_fidelity
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
    ):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = Path(folder) / INCEPTION_FILENAME
    torch.save(model.state_dict(), path)
    return path


def make_tiny_clip(path, seed: int = 0, embed_dim: int = 32) -> Path:
    ensure_torchvision()  # before open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(layers=1, width=64, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path
