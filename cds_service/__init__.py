"""CDS Hooks 2.0 service for muscle cramps that may be associated with sciatica."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cramp-sciatica-cds")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
