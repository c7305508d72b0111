__version__ = "0.1.0"

from . import models  # registers the compact transformers (vit_6_4_32, cct_7_3x1_32, ...) in timm
