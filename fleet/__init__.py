"""fleet: an SSH-based fleet manager for bare-metal and VM hosts, on the Azure Batch model."""

__version__ = "0.1.0"
