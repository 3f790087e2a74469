"""Networks: localization net, spatial transformer, backbones and margin heads."""

from stn_face.nn.backbones import IResNet, PaperResNet
from stn_face.nn.dlib_resnet import DlibResNet
from stn_face.nn.embedding import EmbeddingNet, flip_sum
from stn_face.nn.heads import CombinedMarginHead
from stn_face.nn.localization import LocalizationNet
from stn_face.nn.transformer import SpatialTransformer

__all__ = ["CombinedMarginHead", "DlibResNet", "EmbeddingNet", "IResNet", "LocalizationNet", "PaperResNet", "SpatialTransformer", "flip_sum"]
