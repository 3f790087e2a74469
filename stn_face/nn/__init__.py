"""Networks: localization net, spatial transformer, backbones and margin heads."""

from stn_face.nn.backbones import IResNet, PaperResNet
from stn_face.nn.heads import CombinedMarginHead
from stn_face.nn.localization import LocalizationNet
from stn_face.nn.transformer import SpatialTransformer

__all__ = ["CombinedMarginHead", "IResNet", "LocalizationNet", "PaperResNet", "SpatialTransformer"]
