"""overlay: a libp2p-compatible peer-to-peer network."""

__version__ = "0.1.0"
AGENT_VERSION = f"overlay/{__version__}"

__all__ = ["__version__", "AGENT_VERSION"]
