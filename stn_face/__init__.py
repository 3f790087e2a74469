"""stn_face: end-to-end face recognition with learned alignment (spatial transformers + ArcFace)."""

__version__ = "0.1.0"
