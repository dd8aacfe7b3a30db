"""Networks: the image-transformation network and the frozen VGG loss network."""

from nst_fast.models.transformer import TransformerNet
from nst_fast.models.vgg import VGGFeatures

__all__ = ["TransformerNet", "VGGFeatures"]
