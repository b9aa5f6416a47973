"""workerpool-operator: Kubernetes-native pools of long-lived workflow worker processes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("workerpool-operator")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
