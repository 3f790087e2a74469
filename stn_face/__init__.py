"""stn_face: end-to-end face recognition with learned alignment (spatial transformers + ArcFace)."""

__version__ = "0.1.0"

__all__ = ["FaceEmbedder", "__version__"]


def __getattr__(name: str):
    # Lazy: `import stn_face` stays light (no torch); `stn_face.FaceEmbedder` imports it on first use.
    if name == "FaceEmbedder":
        from stn_face.embedder import FaceEmbedder

        return FaceEmbedder
    raise AttributeError(f"module 'stn_face' has no attribute {name!r}")
